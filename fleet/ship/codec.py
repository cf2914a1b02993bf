"""What goes on the wire: tar members as they are, as gzip members made on every core, or
as zstd frames made by the controller's ``zstd`` program (``-T0``; no Python package).

Concatenated gzip members, like concatenated zstd frames, are one valid stream, so each
member (and each block of a large one) is compressed on its own and in parallel. Docker
20.10's ``docker load`` rejects zstd input (measured on the lab); Docker 23 and later load it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import os
import shutil
import subprocess
import threading
import zlib
from typing import Any, Literal

from fleet.errors import HostError, UsageError

# zstd's output is read in pieces of this size.
_READ = 1 << 20
# A member under this size gets a thorough level (every byte counts, the CPU cost is nil).
_SMALL_MEMBER = 16 << 20
# A large member is compressed in blocks of this size, each its own gzip member, in parallel.
GZIP_BLOCK = 4 << 20
# A block whose sample shrinks by less than this (random bytes, compressed files) is stored.
_STORE_RATIO = 0.97
_SAMPLE = 64 << 10


def zstd_program() -> str | None:
    """The controller's ``zstd`` program, if installed."""
    return shutil.which("zstd")


# What --compress takes; "auto" is resolved per host (see fleet.ship.plan.wire_compression).
WireCompression = Literal["gzip", "none", "zstd"]
Compression = Literal["auto", "gzip", "none", "zstd"]
WIRE_COMPRESSIONS: tuple[WireCompression, ...] = ("gzip", "none", "zstd")
COMPRESSIONS: tuple[Compression, ...] = ("auto", *WIRE_COMPRESSIONS)


def compression(text: str) -> Compression:
    """``text`` as a compression; UsageError (exit 5) naming the choices otherwise."""
    for known in COMPRESSIONS:
        if text == known:
            return known
    raise UsageError(f"--compress {text!r}: choose one of {', '.join(COMPRESSIONS)}")


class Encoder:
    """Turns raw tar bytes into what goes on the wire (gzip or zstd members, or as they are)."""

    def __init__(self, compress: WireCompression) -> None:
        if compress not in WIRE_COMPRESSIONS:
            raise ValueError(f"unknown compression {compress!r}")
        self.compress = compress
        self.gzip = compress == "gzip"
        self._zip: Any = None

    def start(self, size: int = 0, *, stored: bool = False) -> None:
        """Begin a member; ``stored``: its data is compressed already (a layer's blob),
        so it is framed as it is, at the cost of a copy."""
        # Small members (configs, thin layers) get a thorough level: every byte counts on
        # the wire and the CPU cost is nil; large layers get a fast one.
        small = size < _SMALL_MEMBER
        if self.gzip:
            self._zip = _ParallelGzip(0 if stored else 6 if small else 1)
        elif self.compress == "zstd":
            self._zip = _RawZstd() if stored else _ZstdFrame(9 if small else 3, threads=not small)

    def feed(self, data: bytes) -> bytes:
        if self._zip is None:
            return data
        out: bytes = self._zip.compress(data)
        return out

    def finish(self) -> bytes:
        if self._zip is None:
            return b""
        tail: bytes = self._zip.flush()
        self._zip = None
        return tail

    def abort(self) -> None:
        """Drop a member left unfinished (its consumer went away)."""
        if isinstance(self._zip, _ZstdFrame):
            self._zip.kill()
        self._zip = None


def _workers() -> concurrent.futures.ThreadPoolExecutor:
    """One pool for the whole process: as many compressing threads as the controller has cores."""
    global _POOL  # noqa: PLW0603 - created on first use, never replaced
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1, thread_name_prefix="gzip"
            )
        return _POOL


_POOL: concurrent.futures.ThreadPoolExecutor | None = None


_POOL_LOCK = threading.Lock()


def gzip_level(block: bytes, level: int) -> int:
    """``level``, or 0 (stored) when a sample of ``block`` says it will not shrink.

    Random bytes and already-compressed files gain nothing at any level and cost a core
    each about 50 MB/s; stored, they cost a copy and a CRC.
    """
    if len(block) > 4 * _SAMPLE:
        middle = len(block) // 2
        sample = block[middle : middle + _SAMPLE]
        if len(zlib.compress(sample, 1)) > _STORE_RATIO * len(sample):
            return 0
    return level


def _gzip_member(block: bytes, level: int) -> bytes:
    """``block`` as one gzip member (zlib releases the GIL: blocks compress on all cores)."""
    packer = zlib.compressobj(gzip_level(block, level), zlib.DEFLATED, 31)
    return packer.compress(block) + packer.flush()


class _ParallelGzip:
    """A gzip stream made on every core: blocks compressed at once, as concatenated members.

    Any gunzip (Go's, which ``docker load`` uses, too) reads concatenated members as one
    stream. At most two blocks per core are in flight, so memory stays bounded.
    """

    def __init__(self, level: int) -> None:
        self.level = level
        self._pending: list[bytes] = []
        self._held = 0
        self._flight: collections.deque[concurrent.futures.Future[bytes]] = collections.deque()
        self._limit = 2 * (os.cpu_count() or 1)

    def compress(self, data: bytes) -> bytes:
        self._pending.append(data)
        self._held += len(data)
        if self._held >= GZIP_BLOCK:
            self._submit()
        out = []
        while self._flight and (self._flight[0].done() or len(self._flight) > self._limit):
            out.append(self._flight.popleft().result())
        return b"".join(out)

    def _submit(self) -> None:
        block = b"".join(self._pending)
        self._pending, self._held = [], 0
        self._flight.append(_workers().submit(_gzip_member, block, self.level))

    def flush(self) -> bytes:
        if self._held or not self._flight:
            self._submit()
        out = b"".join(future.result() for future in self._flight)
        self._flight.clear()
        return out


class _ZstdFrame:
    """One zstd frame made by the ``zstd`` program, fed and drained piece by piece.

    A thread drains the program's output while the caller writes its input, so neither
    pipe can fill up and block the other.
    """

    def __init__(self, level: int, *, threads: bool = False) -> None:
        program = zstd_program()
        if program is None:
            raise HostError(
                "controller",
                "zstd is not installed",
                fix="apt-get install zstd, or --compress gzip",
            )
        self._process = subprocess.Popen(
            # -T0: one worker per core, for large members (zstd splits them into jobs).
            [program, "-q", "-c", f"-{level}", *(["-T0"] if threads else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._out: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._drain, name="zstd-out", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self._process.stdout is not None
        fd = self._process.stdout.fileno()
        while chunk := os.read(fd, _READ):
            with self._lock:
                self._out.append(chunk)

    def _take(self) -> bytes:
        with self._lock:
            out, self._out = b"".join(self._out), []
        return out

    def compress(self, data: bytes) -> bytes:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(data)
        except OSError as exc:
            raise HostError("controller", f"zstd stopped taking data: {self._error(exc)}") from exc
        return self._take()

    def flush(self) -> bytes:
        assert self._process.stdin is not None
        try:
            self._process.stdin.close()
        except OSError as exc:
            raise HostError("controller", f"zstd failed: {self._error(exc)}") from exc
        self._reader.join()
        if self._process.wait() != 0:
            raise HostError("controller", f"zstd failed: {self._error(None)}")
        self._close_pipes()
        return self._take()

    def _error(self, exc: BaseException | None) -> str:
        self._stop()
        assert self._process.stderr is not None
        text = self._process.stderr.read().decode(errors="replace").strip()
        self._close_pipes()
        return text or f"exit {self._process.returncode} ({exc})"

    def kill(self) -> None:
        """End the program (a member left unfinished) and release its pipes."""
        self._stop()
        self._close_pipes()

    def _stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._reader.join(timeout=5)  # the output pipe ends with the program

    def _close_pipes(self) -> None:
        for pipe in (self._process.stdin, self._process.stdout, self._process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class _RawZstd:
    """A zstd frame of raw (stored) blocks: data that is compressed already, framed for a
    zstd stream at the cost of a copy (RFC 8878: a frame header with a 128 KiB window,
    then blocks of at most 128 KiB, the last one flagged)."""

    _BLOCK = 128 << 10
    # Magic number; frame header descriptor 0 (no content size, no checksum, no
    # dictionary, not single-segment); window descriptor: 2^(10+7) = 128 KiB.
    _HEADER = b"\x28\xb5\x2f\xfd\x00\x38"

    def __init__(self) -> None:
        self._started = False

    def compress(self, data: bytes) -> bytes:
        out = [] if self._started else [self._HEADER]
        self._started = True
        view = memoryview(data)
        for start in range(0, len(view), self._BLOCK):
            block = view[start : start + self._BLOCK]
            out += [self._block_header(len(block), last=False), bytes(block)]
        return b"".join(out)

    def flush(self) -> bytes:
        head = b"" if self._started else self._HEADER
        self._started = False
        return head + self._block_header(0, last=True)

    @staticmethod
    def _block_header(size: int, *, last: bool) -> bytes:
        # Little-endian 24 bits: last-block flag, block type 0 (raw), then the size.
        return (int(last) | size << 3).to_bytes(3, "little")

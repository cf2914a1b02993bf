"""A session of a running OpenSSH control master, opened without starting ``ssh``.

OpenSSH's connection sharing speaks a small protocol on the control socket (PROTOCOL.mux
in OpenSSH's sources, "passenger" mode): a hello of version 4, a new-session request with
the command, the caller's stdin, stdout and stderr passed as file descriptors, then the
command's exit status. The master writes the command's output straight into the
descriptors it was given. An ``ssh`` process per command costs the controller a few
milliseconds of CPU (an exec, its configuration, its crypto library) that this does not;
at hundreds of hosts and several commands each, that is most of a warm run's cost.

Nothing here decides whom a socket reaches: the transport names the socket (in a directory
only its user can enter) and opened the master with its checked host keys. When no session
can be opened (no master, a master that refuses, another protocol) nothing ran:
:class:`Unavailable` says so and the caller starts ``ssh`` instead.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_HELLO = 0x00000001
_NEW_SESSION = 0x10000002
_EXIT = 0x80000004
_OPENED = 0x80000006
_VERSION = 4
_NO_ESCAPE = 0xFFFFFFFF
_MAX_PACKET = 256 * 1024  # the master's own limit for a message
_READ_SIZE = 256 * 1024
_PIPE_HOLDS = 4096  # what any system's pipe holds: a credential, a lock line


class Unavailable(Exception):
    """No session was opened, so nothing ran: the reason, for a debug line."""


@dataclass(frozen=True)
class Finished:
    """How a session ended. ``code`` is None when the master sent no exit status: the
    command died of a signal, or the connection ended first (``ssh`` exits 255 then)."""

    code: int | None
    stdout: bytes
    timed_out: bool = False
    overflowed: bool = False
    lost: str = ""  # the master went away while opening the session: why


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _string(value: bytes) -> bytes:
    return _u32(len(value)) + value


def _packet(*parts: bytes) -> bytes:
    body = b"".join(parts)
    return _u32(len(body)) + body


def _receive(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise Unavailable("the master closed the control socket")
        data += chunk
    return bytes(data)


def _read_packet(sock: socket.socket) -> bytes:
    (length,) = struct.unpack(">I", _receive(sock, 4))
    if not 4 <= length <= _MAX_PACKET:
        raise Unavailable(f"a message of {length} bytes from the master")
    return _receive(sock, length)


class _Lost(Exception):
    """The master went away after it was asked for the session: the command may have run."""


def _open(path: Path, command: str, fds: tuple[int, int, int], timeout: float) -> socket.socket:
    """The control connection with a session of ``command`` opened on it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    asked = False
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(_packet(_u32(_HELLO), _u32(_VERSION)))
        kind, version = struct.unpack(">II", _read_packet(sock)[:8])
        if kind != _HELLO or version != _VERSION:
            raise Unavailable(f"the master speaks version {version} of the protocol, not 4")
        asked = True
        sock.sendall(
            _packet(
                _u32(_NEW_SESSION),
                _u32(1),  # request id
                _string(b""),  # reserved
                _u32(0) * 4,  # no terminal, X11, agent or subsystem
                _u32(_NO_ESCAPE),
                _string(b""),  # terminal type
                _string(os.fsencode(command)),
            )
        )
        for fd in fds:  # one descriptor per message, as the master reads them
            socket.send_fds(sock, [b"\0"], [fd])
        reply = _read_packet(sock)
        kind, _ = struct.unpack(">II", reply[:8])
        if kind != _OPENED:
            said = reply[12 : 12 + struct.unpack(">I", reply[8:12])[0]] if len(reply) >= 12 else b""
            asked = False  # refused (denied, or failed to open a channel): nothing ran
            raise Unavailable(f"the master refused a session: {said.decode(errors='replace')}")
    except (OSError, struct.error, Unavailable) as exc:
        sock.close()
        if isinstance(exc, Unavailable) and not asked:
            raise
        if asked:
            # Only a refusal says that nothing ran; running it again could run it twice.
            raise _Lost(str(exc)) from exc
        raise Unavailable(f"the control socket {path}: {exc}") from exc
    return sock


def _exit_code(messages: bytearray) -> int | None:
    """The exit status among the master's messages so far (consumed from ``messages``)."""
    code = None
    while len(messages) >= 8:
        (length,) = struct.unpack(">I", messages[:4])
        if len(messages) < 4 + length:
            break
        body = bytes(messages[4 : 4 + length])
        del messages[: 4 + length]
        if len(body) >= 12 and struct.unpack(">I", body[:4])[0] == _EXIT:
            code = struct.unpack(">I", body[8:12])[0]
    return code


@contextlib.contextmanager
def _input(data: bytes | None) -> Iterator[int]:
    """A descriptor the master reads ``data`` from at its own pace, written in full before
    the session starts: nothing here waits on the command to read. Never a file on disk
    (it may be a registry's credential): a filled pipe, else a file in memory."""
    if data is None:
        with open(os.devnull, "rb") as null:
            yield null.fileno()
        return
    if len(data) <= _PIPE_HOLDS:
        read, write = os.pipe()
        try:
            try:
                os.write(write, data)  # an empty pipe takes this much without blocking
            finally:
                os.close(write)
            yield read
        finally:
            os.close(read)
        return
    with (
        os.fdopen(os.memfd_create("fleet-stdin"), "w+b")
        if hasattr(os, "memfd_create")
        else tempfile.TemporaryFile()
    ) as held:
        held.write(data)
        held.flush()
        held.seek(0)
        yield held.fileno()


def run(
    path: Path,
    command: str,
    *,
    stdin: bytes | None,
    stderr: int,
    timeout: float | None,
    connect_timeout: float,
    limit: int,
) -> Finished:
    """Run ``command`` as a session of the master at ``path``; its stderr goes to the file
    descriptor ``stderr``. Raises :class:`Unavailable` when no session was opened."""
    started = time.monotonic()
    with _input(stdin) as given:
        out_r, out_w = os.pipe()
        try:
            try:
                sock = _open(path, command, (given, out_w, stderr), connect_timeout)
            except _Lost as exc:
                return Finished(None, b"", lost=str(exc))
            finally:
                os.close(out_w)  # the master holds its own copy now; EOF when it lets go
            with sock:
                return _wait(sock, out_r, started, timeout, limit)
        finally:
            os.close(out_r)


def _wait(
    sock: socket.socket, out: int, started: float, timeout: float | None, limit: int
) -> Finished:
    """Read the command's output and the master's messages until both end."""
    sock.setblocking(False)
    chunks: list[bytes] = []
    size = 0
    messages = bytearray()
    code: int | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(out, selectors.EVENT_READ)
        selector.register(sock, selectors.EVENT_READ)
        # Until the master closes the socket: it writes the status first, and closing
        # early would end the session under the command.
        while selector.get_map():
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left <= 0:
                return Finished(code, b"".join(chunks), timed_out=True)
            for key, _ in selector.select(left):
                if key.fileobj == out:
                    data = os.read(out, _READ_SIZE)
                    size += len(data)
                    if size > limit:
                        return Finished(code, b"", overflowed=True)
                    chunks.append(data)
                else:
                    try:
                        data = sock.recv(_READ_SIZE)
                    except BlockingIOError:
                        continue
                    except ConnectionError:
                        data = b""
                    messages += data
                    code = _exit_code(messages) if code is None else code
                if not data:
                    selector.unregister(key.fileobj)
    return Finished(code, b"".join(chunks))

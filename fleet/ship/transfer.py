"""Ship an image to hosts, sending each host only the layers it lacks.

One tarball format serves both image stores (measured on the lab's engines):
an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/...``) that also
carries a legacy ``manifest.json`` pointing into ``blobs/``. Docker 20.10's classic store
reads ``manifest.json`` and skips every layer whose *chain* already exists without opening
its file; the containerd store (Docker 26+) reads ``index.json`` and accepts a missing
blob only when its content store really has it. So, per host:

- classic: layer *i* may be left out when the chain ID of layers ``0..i`` is among the
  chains of the host's images (``docker image inspect`` of all images);
- containerd: layer *i* may be left out only when the host's content store lists a blob
  whose digest is the layer's diff ID (``ctr content ls``); when that cannot be asked
  (no ``ctr``, no root), every layer is sent.

The controller's ``docker save`` is read once per wave of hosts as a stream, never stored:
each tar member is (optionally) gzip-compressed once as its own gzip member, and the same
compressed bytes are fanned out to every host of the wave that needs them (concatenated
gzip members are one valid gzip stream). Memory stays bounded by the per-host queues.
After loading, the host's image is verified (ID, layers, listed): ``docker load`` can
report success for an image that is not usable.

Compression on the wire: gzip (default), none, or zstd where the host's engine loads it
(Docker 23 and later; Docker 20.10's ``docker load`` rejects zstd input, measured on the
lab) and gzip for the others. zstd frames are made by the controller's ``zstd`` program,
one frame per member (concatenated frames are one valid zstd stream): no Python package.

``--via registry`` replaces the stream: the image is pushed once to a registry (an
existing one, or the controller's own, tunnelled to each host's loopback; see
:mod:`fleet.ship.registry`) and every host pulls it by the pushed manifest's digest, keeping
what it has; the pulled image is verified before it is tagged. Planning, disk checks,
verification and results are the same as for the SSH path.

``--max-rate``: token buckets (:mod:`fleet.ship.bandwidth`), one for the whole run and one
per host, on the bytes that leave the controller for the hosts (compressed, before SSH
framing); on the tunnelled registry path, on what the registry sends each host.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from fleet.errors import CommandError, HostError, RegistryError, UsageError, tail_lines
from fleet.hosts.inventory import Host
from fleet.images import build as images
from fleet.images.build import ImageSpec, Shippable, chain_ids
from fleet.images.labels import cuda_tuple, normalized_name
from fleet.images.savefilter import v1_candidates
from fleet.ops import facts
from fleet.programs import program
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, Runner
from fleet.ship import registry
from fleet.ship.bandwidth import Limits, Throttle
from fleet.ssh.base import CommandResult, Transport, gathered, parses_host_output
from fleet.ssh.base import fix_for as _fix_for

SaveStream = Callable[[], Iterable[bytes]]


class LayerSource(Protocol):
    """Layers and config of an image read without ``docker save`` (see images.LocalLayers)."""

    def config(self, image_id: str) -> bytes: ...

    def tar_size(self, chain_id: str) -> int: ...

    def tar(self, chain_id: str, diff_id: str) -> bytes: ...


_CHUNK = 1 << 20
_QUEUE_CHUNKS = 32
_REPLAY_CACHE_BYTES = 256 << 20
_SMALL_MEMBER = 16 << 20
# Up to this much of missing layers is read from the local store instead of docker save.
_LOCAL_LAYERS_BYTES = 256 << 20
_LOAD_TIMEOUT = 3600.0
_STALL_DEFAULT = 180.0

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


# -- what a host has --------------------------------------------------------------------
# One round trip; "$1" is the image reference, passed as an argument, never interpolated.
# The target image as the host has it; shared by the state script and the load. ``$store``
# says whether the containerd content store holds its manifest (whose config is the ID).
_TARGET_SCRIPT = program("image_target.sh")

# Every docker CLI call costs a Go process start on the host (tens of ms of CPU): on hosts
# that share cores, as a lab's or a busy GPU server's do, that is most of a thin push.
# So one 'docker info' says engine, store and root, and ctr runs on containerd stores only.
STATE_SCRIPT = program("image_state.sh")

# containerd's client on the engine's own containerd (the moby namespace holds its images).
_CTR = ("ctr", "--address", "/run/docker/containerd/containerd.sock", "-n", "moby")

# docker load, then the target as it now is: the verification costs no extra round trip.
LOAD_SCRIPT = program("image_load.sh")

# A pull by digest, then the pulled image as the host has it, so that it is verified before
# it gets its real name, in the same round trip. On the containerd store the pull skips a
# layer whose snapshot exists (one loaded over SSH, say) without its registry blob, and
# Docker then neither lists nor saves the image: ctr fetches the blobs the content store
# lacks, and only those, while the registry is reachable.
# "$3": the tunnelled registry's address on the host, or empty for a registry the host
# reaches with its own credentials. The tunnel's credential comes on stdin, never in argv
# (which other users of the host see) nor in the user's docker config: it lives in a
# private directory (docker's --config, ctr's --hosts-dir) that is removed on exit, and is
# worthless once the tunnel has closed.
PULL_SCRIPT = program("image_pull.sh")


@dataclass(frozen=True)
class HostImageState:
    """What a host's engine holds, as far as shipping one image is concerned."""

    engine_ok: bool
    engine_error: str = ""
    engine_version: str = ""
    store: str = "classic"
    target_id: str = ""
    target_layers: tuple[str, ...] = ()
    target_listed: bool = False
    target_config: str = ""
    chains: frozenset[str] = frozenset()
    content: frozenset[str] | None = None
    content_error: str = ""
    free_bytes: int | None = None
    # The driver's version and the CUDA it supports, from nvidia-smi ("" without a driver).
    driver: str = ""
    cuda: str = ""


def _sections(text: str) -> dict[str, list[str]]:
    return {
        k: [line.strip() for line in v] for k, v in facts.sections(text, keep_blank=False).items()
    }


@parses_host_output("the host's image state")
def parse_state(text: str) -> HostImageState:
    """A host's image state from the output of :data:`STATE_SCRIPT`."""
    parts = _sections(gathered(text, "the host's image state"))
    engine_lines = parts.get("engine", [])
    if (
        parts.get("engine_rc", ["1"])[:1] != ["0"]
        or not engine_lines[:1]
        or not engine_lines[0][:1].isdigit()
    ):
        return HostImageState(False, "\n".join(engine_lines) or "docker did not answer")
    store = "classic"
    for line in parts.get("store", []):
        if "io.containerd.snapshotter" in line:
            store = "containerd"
    chains: set[str] = set()
    for line in parts.get("layers", []):
        try:
            layers = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(layers, list):
            chains.update(chain_ids([str(x) for x in layers]))
    content: frozenset[str] | None = None
    content_error = ""
    content_lines = parts.get("content", [])
    if parts.get("content_rc", ["1"])[:1] == ["0"]:
        content = frozenset(x for x in content_lines if x.startswith("sha256:"))
    else:
        content_error = " ".join(content_lines[-2:]) or "ctr failed"
    free: int | None = None
    df_words = (parts.get("df") or [""])[-1].split()
    if len(df_words) >= 4 and df_words[3].isdigit():
        free = int(df_words[3])
    return replace(
        _target(parts),
        engine_version=engine_lines[0],
        store=store,
        chains=frozenset(chains),
        content=content,
        content_error=content_error,
        free_bytes=free,
        driver=_driver(parts.get("cuda", []))[0],
        cuda=_driver(parts.get("cuda", []))[1],
    )


def _driver(lines: list[str]) -> tuple[str, str]:
    """(driver, CUDA) from the state program's ``@@cuda`` line; ("", "") when unknown."""
    words = (lines[:1] or [""])[0].split()
    if len(words) == 2 and all(w.replace(".", "").isdigit() for w in words):
        return words[0], words[1]
    return "", ""


def _target(parts: Mapping[str, list[str]]) -> HostImageState:
    """The target image's part of a state: its ID, layers, listing and manifest's config."""
    target_id = ""
    target_layers: tuple[str, ...] = ()
    for line in parts.get("target", [])[:1]:
        ident, _, layers_json = line.partition(" ")
        try:
            target_layers = tuple(str(x) for x in json.loads(layers_json) or ())
            target_id = ident
        except json.JSONDecodeError:
            pass
    target_config = ""
    manifest_lines = parts.get("target_manifest", [])
    # One line when fleet wrote the manifest; indented over many when a registry did.
    for candidate in [*manifest_lines[:1], "".join(manifest_lines)]:
        try:
            manifest = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(manifest, dict) and isinstance(manifest.get("config"), dict):
            target_config = str(manifest["config"].get("digest", ""))
            break
    return HostImageState(
        engine_ok=True,
        target_id=target_id,
        target_layers=target_layers,
        target_listed=bool(parts.get("listed")),
        target_config=target_config,
    )


def read_state(transport: Transport, ref: str, timeout: float | None = None) -> HostImageState:
    """Ask a host what it holds (one round trip)."""
    ran = transport.run(
        ["sh", "-c", STATE_SCRIPT, "fleet-state", ref], timeout=timeout, check=False
    )
    return parse_state(ran.stdout)


# -- planning ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Which layers one host gets, and why."""

    host: str
    store: str
    up_to_date: bool
    send: frozenset[int]
    reason: str = ""


def is_current(spec: ImageSpec, state: HostImageState) -> bool:
    """Whether the host already has exactly this image under its name.

    The classic store's image ID is the config digest; the containerd store's is the
    digest of a manifest, whose config the host's content store tells.
    """
    if not state.target_listed or state.target_layers != spec.diff_ids:
        return False
    return spec.config_digest in (state.target_id, state.target_config)


def plan(host: str, spec: ImageSpec, state: HostImageState) -> Plan:
    """The layers ``host`` lacks (a pure function of what it reported)."""
    if is_current(spec, state):
        return Plan(host, state.store, True, frozenset())
    if state.store == "containerd":
        if state.content is None:
            return Plan(
                host,
                state.store,
                False,
                frozenset(range(len(spec.diff_ids))),
                f"content store not readable ({state.content_error}); sending every layer",
            )
        send = frozenset(i for i, d in enumerate(spec.diff_ids) if d not in state.content)
        return Plan(host, state.store, False, send)
    chains = spec.chain_ids
    send = frozenset(i for i, c in enumerate(chains) if c not in state.chains)
    return Plan(host, state.store, False, send)


def pull_plan(host: str, spec: ImageSpec, state: HostImageState) -> Plan:
    """The layers a pull from a registry unpacks: those whose chain the host lacks.

    On both stores (measured on the lab: Docker 26.1's containerd store skips the
    download of a layer whose snapshot exists, even when its content store holds the
    layer only uncompressed, as ``docker load`` left it). :func:`pull` then fetches such
    layers' registry blobs too, so on that store the bytes pulled (counted by the relay)
    can exceed these layers: the plan is a lower bound there.
    """
    if is_current(spec, state):
        return Plan(host, state.store, True, frozenset())
    send = frozenset(i for i, c in enumerate(spec.chain_ids) if c not in state.chains)
    return Plan(host, state.store, False, send)


def zstd_loads(engine_version: str) -> bool:
    """Whether an engine's ``docker load`` takes zstd input: Docker 23 and later.

    Measured on the lab: 20.10 fails ("archive/tar: invalid tar header"), 26.1 loads it
    (concatenated frames too). zstd reached ``docker load`` in moby#41759, first
    released in 23.0. An unknown version gets gzip.
    """
    major = engine_version.split(".", 1)[0]
    return major.isdigit() and int(major) >= 23


def wire_compression(requested: str, state: HostImageState) -> str:
    """What a host gets: zstd falls back to gzip for engines that cannot load it."""
    if requested == "zstd" and not zstd_loads(state.engine_version):
        return "gzip"
    return requested


def zstd_program() -> str | None:
    """The controller's ``zstd`` program, if installed."""
    return shutil.which("zstd")


# -- the stream -------------------------------------------------------------------------
class _IterReader(io.RawIOBase):
    """A file over an iterator of byte chunks (what docker-py's save stream gives)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        count = min(len(target), len(self._buffer))
        target[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count


@dataclass
class _Member:
    """One tar member of the output: its key, its tar header+data, compressed or not."""

    key: str
    layer: int | None
    chunks: list[bytes] = field(default_factory=list)


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


COMPRESSIONS = ("gzip", "none", "zstd")


class _Encoder:
    """Turns raw tar bytes into what goes on the wire (gzip or zstd members, or as they are)."""

    def __init__(self, compress: str) -> None:
        if compress not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compress!r}")
        self.compress = compress
        self.gzip = compress == "gzip"
        self._zip: Any = None

    def start(self, size: int = 0) -> None:
        # Small members (configs, thin layers) get a thorough level: every byte counts on
        # the wire and the CPU cost is nil; large layers get a fast one.
        small = size < _SMALL_MEMBER
        if self.gzip:
            self._zip = zlib.compressobj(6 if small else 1, zlib.DEFLATED, 31)
        elif self.compress == "zstd":
            self._zip = _ZstdFrame(9 if small else 3)

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


class _ZstdFrame:
    """One zstd frame made by the ``zstd`` program, fed and drained piece by piece.

    A thread drains the program's output while the caller writes its input, so neither
    pipe can fill up and block the other.
    """

    def __init__(self, level: int) -> None:
        program = zstd_program()
        if program is None:
            raise HostError(
                "controller",
                "zstd is not installed",
                fix="apt-get install zstd, or --compress gzip",
            )
        self._process = subprocess.Popen(
            [program, "-q", "-c", f"-{level}"],
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
        while chunk := os.read(fd, _CHUNK):
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


def _manifest_bytes(spec: ImageSpec, config: bytes, sizes: Sequence[int]) -> bytes:
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": spec.config_digest, "size": len(config)},
        "layers": [
            {"mediaType": OCI_LAYER_TAR, "digest": d, "size": s}
            for d, s in zip(spec.diff_ids, sizes, strict=True)
        ],
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


class ImageStream:
    """Reads ``docker save`` once and yields the dual-format tarball's members, encoded."""

    def __init__(self, spec: ImageSpec, save: SaveStream, compress: str = "gzip") -> None:
        self.spec = spec
        self._save = save
        self.compress = compress
        self.layer_sizes: list[int] = [0] * len(spec.diff_ids)
        self.manifest_digest = ""

    def local_members(
        self, source: LayerSource, wanted: set[int]
    ) -> list[tuple[_Member, Iterator[bytes]]]:
        """The members, with the wanted layers read from ``source``; OSError if it cannot.

        Everything is read and checked before the first byte is sent, so a failure here
        falls back to ``docker save`` cleanly.
        """
        spec = self.spec
        chains = spec.chain_ids
        sizes = [source.tar_size(chain) for chain in chains]
        if sum(sizes[i] for i in wanted) > _LOCAL_LAYERS_BYTES:
            raise OSError("too much to read from the local store")
        blobs = {i: source.tar(chains[i], spec.diff_ids[i]) for i in sorted(wanted)}
        config = source.config(spec.config_digest)
        self.layer_sizes = sizes
        encoder = _Encoder(self.compress)
        members: list[tuple[_Member, Iterator[bytes]]] = []
        for index, blob in blobs.items():
            name = f"blobs/sha256/{spec.diff_ids[index][7:]}"
            members.append(
                (
                    _Member(f"layer {index}", index),
                    self._encode(encoder, name, len(blob), iter((blob,))),
                )
            )
        members += self._closing_members(encoder, config)
        return members

    def members(self) -> Iterator[tuple[_Member, Iterator[bytes]]]:
        """Yield each output member with an iterator of its encoded chunks, in order."""
        spec = self.spec
        chains = spec.chain_ids
        index_of_v1: dict[str, int] = {}
        config = b""
        encoder = _Encoder(self.compress)
        with tarfile.open(
            fileobj=io.BufferedReader(_IterReader(self._save()), _CHUNK), mode="r|"
        ) as tar:
            for info in tar:
                if not info.isfile():
                    continue
                name = info.name
                directory, _, base = name.rpartition("/")
                source = tar.extractfile(info)
                if source is None:
                    continue
                if not directory and base == spec.config_digest.removeprefix("sha256:") + ".json":
                    config = source.read()
                    continue
                if base == "json" and directory:
                    document = json.loads(source.read())
                    for i, chain in enumerate(chains):
                        if directory in v1_candidates(document, chain):
                            index_of_v1[directory] = i
                            break
                    continue
                if base != "layer.tar":
                    continue
                layer = index_of_v1.get(directory)
                data: Iterator[bytes] = _read(source)
                if layer is None:
                    # An engine whose v1 IDs we cannot recompute: learn the layer from its
                    # digest instead, at the cost of spooling this one layer.
                    layer, data = _identify_by_digest(spec, source)
                self.layer_sizes[layer] = info.size
                member = _Member(f"layer {layer}", layer)
                yield (
                    member,
                    self._encode(
                        encoder, f"blobs/sha256/{spec.diff_ids[layer][7:]}", info.size, data
                    ),
                )
        if not config:
            raise HostError("controller", f"'docker save {spec.ref}' did not contain its config")
        yield from self._closing_members(encoder, config)

    def _closing_members(
        self, encoder: _Encoder, config: bytes
    ) -> list[tuple[_Member, Iterator[bytes]]]:
        """Config, manifests, index and the end of the archive (layer sizes known by now)."""
        spec = self.spec
        if hashlib.sha256(config).hexdigest() != spec.config_digest.removeprefix("sha256:"):
            raise HostError("controller", f"the config of {spec.ref} does not match its image ID")
        manifest = _manifest_bytes(spec, config, self.layer_sizes)
        self.manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": self.manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": normalized_name(spec.ref),
                        "org.opencontainers.image.ref.name": spec.ref.rpartition(":")[2],
                    },
                }
            ],
        }
        legacy = [
            {
                "Config": f"blobs/sha256/{spec.config_digest[7:]}",
                "RepoTags": [spec.ref],
                "Layers": [f"blobs/sha256/{d[7:]}" for d in spec.diff_ids],
            }
        ]
        small = {
            f"blobs/sha256/{spec.config_digest[7:]}": config,
            f"blobs/sha256/{self.manifest_digest[7:]}": manifest,
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            "index.json": json.dumps(index, separators=(",", ":")).encode(),
            "manifest.json": json.dumps(legacy, separators=(",", ":")).encode(),
        }
        members = [
            (_Member(name, None), self._encode(encoder, name, len(content), iter((content,))))
            for name, content in small.items()
        ]
        members.append(
            (_Member("end", None), self._encode_raw(encoder, b"\0" * (2 * tarfile.BLOCKSIZE)))
        )
        return members

    def _encode(
        self, encoder: _Encoder, name: str, size: int, data: Iterator[bytes]
    ) -> Iterator[bytes]:
        encoder.start(size)
        finished = False
        try:
            out = encoder.feed(_tar_header(name, size))
            if out:
                yield out
            for chunk in data:
                # Bounded pieces: a whole layer in one piece would be sliced quadratically
                # by paramiko's sendall, and would sit whole in every host's queue.
                view = memoryview(chunk)
                for start in range(0, len(view), _CHUNK):
                    out = encoder.feed(bytes(view[start : start + _CHUNK]))
                    if out:
                        yield out
            out = encoder.feed(_padding(size)) + encoder.finish()
            finished = True
        finally:
            if not finished:
                encoder.abort()
        if out:
            yield out

    def _encode_raw(self, encoder: _Encoder, data: bytes) -> Iterator[bytes]:
        encoder.start()
        yield encoder.feed(data) + encoder.finish()


def _identify_by_digest(spec: ImageSpec, source: Any) -> tuple[int, Iterator[bytes]]:
    spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)  # noqa: SIM115 - handed on
    digest = hashlib.sha256()
    for chunk in _read(source):
        digest.update(chunk)
        spool.write(chunk)
    diff_id = f"sha256:{digest.hexdigest()}"
    if diff_id not in spec.diff_ids:
        spool.close()
        raise HostError(
            "controller",
            f"'docker save {spec.ref}' holds a layer {diff_id[:19]} that is not in the image",
        )
    spool.seek(0)

    def replay() -> Iterator[bytes]:
        with spool:
            yield from _read(spool)

    return spec.diff_ids.index(diff_id), replay()


def _read(source: Any) -> Iterator[bytes]:
    while True:
        chunk = source.read(_CHUNK)
        if not chunk:
            return
        yield chunk


# -- fan-out ----------------------------------------------------------------------------
class _Sink:
    """One host's bounded queue of encoded chunks; the producer never waits on a dead one."""

    def __init__(self, host: str, send: frozenset[int], throttle: Throttle | None = None) -> None:
        self.host = host
        self.send = send
        self.throttle = throttle
        self.queue: queue.Queue[bytes | None] = queue.Queue(_QUEUE_CHUNKS)
        self.dead = threading.Event()
        self.bytes = 0
        self.on_progress: Callable[[int], None] | None = None
        self._reported = 0

    def wants(self, member: _Member) -> bool:
        return member.layer is None or member.layer in self.send

    def put(self, chunk: bytes | None) -> None:
        while not self.dead.is_set():
            try:
                self.queue.put(chunk, timeout=0.2)
            except queue.Full:
                continue
            return

    def chunks(self) -> Iterator[bytes]:
        while True:
            chunk = self.queue.get()
            if chunk is None:
                return
            if self.throttle is not None:
                self.throttle.take(len(chunk))
            self.bytes += len(chunk)
            if self.on_progress is not None and self.bytes - self._reported >= _CHUNK:
                self._reported = self.bytes
                self.on_progress(self.bytes)
            yield chunk

    def close(self) -> None:
        self.dead.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return


class Broadcast:
    """Feeds one pass over ``docker save`` to several hosts' sinks, each its own layers.

    Encoded members are kept for replay to later waves while they fit in a bounded cache;
    past that, a later wave reads ``docker save`` again.
    """

    def __init__(
        self, spec: ImageSpec, save: SaveStream, compress: str, local: LayerSource | None = None
    ) -> None:
        self.spec = spec
        self.save = save
        self.compress = compress
        self.local = local
        self.source = ""
        self._replay: list[_Member] | None = None
        self.error: BaseException | None = None
        self.layer_sizes: list[int] = []

    def run(self, sinks: Sequence[_Sink], *, replay: bool = True) -> None:
        """Produce into ``sinks`` until the end (call in a thread).

        ``replay``: later waves will follow, so keep what was encoded for them. Without
        it, members that no sink wants are skipped unencoded.
        """
        try:
            if self._replay is not None:
                for member in self._replay:
                    for chunk in member.chunks:
                        for sink in sinks:
                            if sink.wants(member):
                                sink.put(chunk)
                return
            stream = ImageStream(self.spec, self.save, self.compress)
            cache: list[_Member] | None = [] if replay else None
            cached = 0
            members: Iterable[tuple[_Member, Iterator[bytes]]] | None = None
            if self.local is not None:
                wanted: set[int] = set().union(*(sink.send for sink in sinks))
                try:
                    members = stream.local_members(self.local, wanted)
                    self.source = "local store"
                except (OSError, ValueError, KeyError):
                    members = None  # docker save reads it all instead
            if members is None:
                members = stream.members()
                self.source = "docker save"
            for member, chunks in members:
                if cache is None and not any(sink.wants(member) for sink in sinks):
                    continue  # tarfile skips the unread data
                for chunk in chunks:
                    for sink in sinks:
                        if sink.wants(member):
                            sink.put(chunk)
                    if cache is not None:
                        member.chunks.append(chunk)
                        cached += len(chunk)
                        if cached > _REPLAY_CACHE_BYTES:
                            cache = None
                if cache is not None:
                    cache.append(member)
            self._replay = cache
            self.layer_sizes = stream.layer_sizes
        except BaseException as exc:
            self.error = exc
        finally:
            for sink in sinks:
                sink.put(None)


def thin_tarball(image: Shippable, send: Iterable[int], compress: str = "none") -> Iterator[bytes]:
    """The tarball ``docker load`` takes, with only the layers ``send``, as a stream.

    For one receiver that is not a host of the fleet (the controller pulling an image back
    from a build host); a thread reads the image while the caller consumes the stream.
    """
    broadcast = Broadcast(image.spec, image.save, compress, image.local)
    sink = _Sink("controller", frozenset(send))
    producer = threading.Thread(
        target=broadcast.run, args=([sink],), kwargs={"replay": False}, daemon=True
    )
    producer.start()
    try:
        yield from sink.chunks()
    finally:
        sink.close()
        producer.join(timeout=60)
    if broadcast.error is not None:
        raise HostError(
            "controller", f"reading {image.spec.ref} failed: {broadcast.error}"
        ) from broadcast.error


# -- one host ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Shipment:
    """What a host's transfer did, for the result's details."""

    store: str
    layers_total: int
    layers_sent: int
    bytes_sent: int
    image_id: str


def verify(
    transport: Transport, spec: ImageSpec, timeout: float | None = None, loaded: str | None = None
) -> str:
    """Check the host's image after a load; its ID, or HostError with the evidence.

    ``loaded``: what :func:`load` printed, which already says how the target is now;
    without it the host is asked.
    """
    if loaded is not None:
        state = _target(_sections(loaded))
    else:
        state = read_state(transport, spec.ref, timeout)
    if is_current(spec, state):
        return state.target_id
    raise HostError(
        transport.host,
        f"image {spec.ref} did not verify after loading: {_evidence(spec, state)}",
        fix="rerun: the missing layers are sent again",
    )


def _evidence(spec: ImageSpec, state: HostImageState) -> str:
    """How the host's image differs from ``spec``."""
    return (
        f"expected config {spec.config_digest[:19]} with {len(spec.diff_ids)} layers; "
        f"host has ID {state.target_id[:19] or 'none'} with {len(state.target_layers)} layers"
        f"{'' if state.target_listed else ', not listed by docker image ls'}"
    )


def load(
    ctx: HostContext,
    sink: _Sink,
    plan: Plan,
    ref: str,
    timeout: float = _LOAD_TIMEOUT,
    stall: float | None = None,
) -> str:
    """Stream a sink into ``docker load`` on the host; a host that stops taking data fails.

    Returns what the host then says of ``ref`` (for :func:`verify`), in the same round trip.
    """
    try:
        ran = ctx.transport.stream(
            ["sh", "-c", LOAD_SCRIPT, "fleet-load", ref, plan.store],
            sink.chunks(),
            timeout=timeout,
            stall_timeout=stall,
        )
    except CommandError as exc:
        said = tail_lines(exc.stderr or exc.stdout)
        full = "no space left on device" in (exc.stderr + exc.stdout).lower()
        raise HostError(
            ctx.name,
            f"docker load of {ref} failed (exit {exc.returncode})"
            f"{': the disk at the Docker root is full' if full else ''}:\n{said}",
            fix="free space on the host (fleet prune, docker system prune) or grow its disk, "
            "then rerun"
            if full
            else exc.fix or "rerun: nothing was tagged, the missing layers are sent again",
        ) from exc
    finally:
        sink.close()
    return ran.stdout


def disk_needed(spec_sizes: Sequence[int], send: Iterable[int], store: str) -> int:
    """Bytes a load needs at the Docker root: the missing layers twice, on either store.

    The classic store's ``docker load`` spools the whole tarball under ``<root>/tmp``
    before it unpacks it (incompressible layers cost their size twice); the containerd
    store keeps the compressed blob beside the unpacked snapshot.
    """
    return 2 * sum(spec_sizes[i] for i in send if i < len(spec_sizes))


def result_for(ctx: HostContext, shipment: Shipment) -> HostResult:
    outcome = Outcome.CHANGED if shipment.layers_sent or shipment.bytes_sent else Outcome.OK
    reason = (
        f"sent {shipment.layers_sent}/{shipment.layers_total} layers, {shipment.bytes_sent} bytes"
        if outcome is Outcome.CHANGED
        else "image already present"
    )
    return ctx.result(
        outcome,
        reason,
        details={
            "store": shipment.store,
            "layers_total": shipment.layers_total,
            "layers_present": shipment.layers_total - shipment.layers_sent,
            "layers_sent": shipment.layers_sent,
            "bytes_sent": shipment.bytes_sent,
            "image_id": shipment.image_id,
        },
    )


# -- the whole push ---------------------------------------------------------------------
VIAS = ("ssh", "registry")


@dataclass(frozen=True)
class PushOptions:
    """How to push: path, compression, bandwidth, dry run, and the limits of one host.

    ``via``: ``ssh`` streams each host its missing layers; ``registry`` publishes once and
    every host pulls (``registry``: an existing registry's address, or None for the
    controller's own, tunnelled). ``max_rate``/``max_rate_per_host``: bytes per second
    over all hosts / for each host (see the module docstring for what they cap).
    """

    compress: str = "gzip"
    check: bool = False
    min_free_bytes: int = 0
    load_timeout: float = _LOAD_TIMEOUT
    state_timeout: float | None = None
    via: str = "ssh"
    registry: str | None = None
    max_rate: float | None = None
    max_rate_per_host: float | None = None


def check_options(options: PushOptions) -> None:
    """Refuse options that cannot work together, before any host is touched."""
    if options.via not in VIAS:
        raise UsageError(f"--via {options.via!r}: choose one of {', '.join(VIAS)}")
    if options.compress not in COMPRESSIONS:
        raise UsageError(
            f"--compress {options.compress!r}: choose one of {', '.join(COMPRESSIONS)}"
        )
    if options.registry is not None and options.via != "registry":
        raise UsageError("--registry URL goes with --via registry", fix="add --via registry")
    if options.registry is not None:
        registry.parse_address(options.registry)
    limited = options.max_rate is not None or options.max_rate_per_host is not None
    if limited and options.via == "registry" and options.registry is not None:
        raise UsageError(
            "--max-rate cannot limit hosts that pull from a registry themselves",
            fix="limit the registry's bandwidth there, or use --via ssh, or --via registry "
            "without --registry (the controller's tunnelled registry)",
        )
    for name, rate in (
        ("--max-rate", options.max_rate),
        ("--max-rate-per-host", options.max_rate_per_host),
    ):
        if rate is not None and rate <= 0:
            raise UsageError(f"{name} must be more than 0 bytes per second")
    if options.via == "ssh" and options.compress == "zstd" and zstd_program() is None:
        raise UsageError(
            "--compress zstd needs the zstd program on the controller",
            fix="apt-get install zstd, or use --compress gzip",
        )


def push(
    runner: Runner,
    hosts: Sequence[Host],
    image: Shippable,
    options: PushOptions = PushOptions(),
    publisher: registry.Publisher | None = None,
) -> FleetResult:
    """Ship ``image`` to every host that lacks it; one result per host, in host order.

    First every host says what it has (one round trip each). Over SSH: in waves of at
    most ``runner.forks`` hosts, one pass over ``docker save`` (per compression) feeds
    every host of the wave its missing layers. Via a registry: the image is published
    once, then every host pulls it. Either way each host's image is verified.
    ``publisher``: how the registry path publishes (default: the controller's engine).
    """
    check_options(options)
    spec = image.spec
    started = time.monotonic()
    plans: dict[str, tuple[Plan, str]] = {}
    lock = threading.Lock()

    def inspect(ctx: HostContext) -> HostResult:
        result, decided, compress = _inspect(ctx, image, options)
        if decided is not None:
            with lock:
                plans[ctx.name] = (decided, compress)
        return result

    inspected = runner.run("push: inspect", hosts, inspect)
    results = {r.host: r for r in inspected.results}
    command = "push --check" if options.check else "push"
    if options.check:
        return FleetResult.of(command, inspected.results, time.monotonic() - started)
    todo = [h for h in hosts if h.name in plans]
    limits = Limits(options.max_rate, options.max_rate_per_host)
    decided = {name: plan for name, (plan, _) in plans.items()}
    if not todo:
        shipped: list[HostResult] = []
    elif options.via == "registry":
        shipped = _pull_all(runner, todo, spec, decided, options, limits, publisher)
    else:
        compress_of = {name: compress for name, (_, compress) in plans.items()}
        shipped = _send_all(runner, todo, image, decided, compress_of, options, limits)
    for row in shipped:
        results[row.host] = _merge_seconds(results[row.host], row)
    return FleetResult.of(command, (results[h.name] for h in hosts), time.monotonic() - started)


def check_cuda(host: str, spec: ImageSpec, state: HostImageState) -> None:
    """Refuse a host whose driver supports an older CUDA than the image needs.

    Before a byte is shipped: such an image would not start its CUDA work there. A host
    without a driver (no nvidia-smi) is provision's concern, not this check's.
    """
    if not spec.cuda or not state.cuda:
        return
    if cuda_tuple(state.cuda) >= cuda_tuple(spec.cuda):
        return
    raise HostError(
        host,
        f"{spec.ref} needs CUDA {spec.cuda}, but the host's driver {state.driver} supports "
        f"CUDA {state.cuda} at most; nothing was shipped",
        fix=f"upgrade the host's NVIDIA driver to one that supports CUDA {spec.cuda} (see "
        "NVIDIA's CUDA compatibility table), or deploy a version built on an older CUDA base",
    )


def _inspect(
    ctx: HostContext, image: Shippable, options: PushOptions
) -> tuple[HostResult, Plan | None, str]:
    """What one host has and needs: (its result, the plan when it lacks layers, compression)."""
    spec, sizes = image.spec, image.sizes
    pulling = options.via == "registry"
    verb = "pull" if pulling else "send"
    state = read_state(ctx.transport, spec.ref, options.state_timeout)
    if not state.engine_ok:
        raise HostError(
            ctx.name,
            f"Docker engine not usable: {state.engine_error}",
            fix=engine_fix(state.engine_error),
        )
    check_cuda(ctx.name, spec, state)
    decided = pull_plan(ctx.name, spec, state) if pulling else plan(ctx.name, spec, state)
    needed = disk_needed(sizes, decided.send, decided.store)
    details: dict[str, Any] = {
        "store": decided.store,
        "layers_total": len(spec.diff_ids),
        "layers_present": len(spec.diff_ids) - len(decided.send),
        f"layers_to_{verb}": len(decided.send),
        f"bytes_to_{verb}": sum(sizes[i] for i in decided.send if i < len(sizes)),
    }
    compress = wire_compression(options.compress, state)
    if not pulling:
        details["compress"] = compress
    if decided.up_to_date:
        details["image_id"] = state.target_id
        return ctx.result(Outcome.OK, "image already present", details=details), None, compress
    if state.free_bytes is not None and state.free_bytes - needed < options.min_free_bytes:
        reserve = f" plus a reserve of {options.min_free_bytes}" if options.min_free_bytes else ""
        raise HostError(
            ctx.name,
            f"not enough disk at the Docker root: needs {needed} bytes"
            f"{reserve}, has {state.free_bytes} free",
            fix="free space on the host (fleet prune, docker system prune) or grow its disk",
        )
    note = decided.reason or f"would {verb} {len(decided.send)}/{len(spec.diff_ids)} layers"
    if pulling:
        note += f" from {options.registry or 'the controller (tunnelled)'}"
    if compress != options.compress:
        note += f" ({options.compress} not loadable by Docker {state.engine_version}: {compress})"
    outcome = Outcome.CHANGED if options.check else Outcome.OK
    return ctx.result(outcome, note, details=details), decided, compress


def _send_all(
    runner: Runner,
    todo: Sequence[Host],
    image: Shippable,
    plans: Mapping[str, Plan],
    compress_of: Mapping[str, str],
    options: PushOptions,
    limits: Limits,
) -> list[HostResult]:
    """The SSH path: waves of hosts, one producer per compression in use."""
    spec = image.spec
    broadcasts = {
        c: Broadcast(spec, image.save, c, image.local) for c in sorted(set(compress_of.values()))
    }
    shipped: list[HostResult] = []
    for first in range(0, len(todo), runner.forks):
        wave = todo[first : first + runner.forks]
        sinks = {h.name: _Sink(h.name, plans[h.name].send, limits.for_host()) for h in wave}
        more = first + runner.forks < len(todo)
        producers = []
        for compress, broadcast in broadcasts.items():
            group = [sinks[h.name] for h in wave if compress_of[h.name] == compress]
            if group:
                producer = threading.Thread(
                    target=broadcast.run, args=(group,), kwargs={"replay": more}, daemon=True
                )
                producer.start()
                producers.append(producer)

        def ship(ctx: HostContext, sinks: dict[str, _Sink] = sinks) -> HostResult:
            sink = sinks[ctx.name]
            broadcast = broadcasts[compress_of[ctx.name]]
            sink.on_progress = lambda sent: ctx.progress("sending", sent, 0)
            decided = plans[ctx.name]
            try:
                loaded = load(ctx, sink, decided, spec.ref, options.load_timeout, _STALL_DEFAULT)
            except HostError:
                if broadcast.error is not None:
                    raise HostError(
                        ctx.name, f"reading the image on the controller failed: {broadcast.error}"
                    ) from broadcast.error
                raise
            if broadcast.error is not None:
                raise HostError(
                    ctx.name, f"reading the image on the controller failed: {broadcast.error}"
                )
            image_id = verify(ctx.transport, spec, options.state_timeout, loaded)
            shipment = Shipment(
                decided.store, len(spec.diff_ids), len(decided.send), sink.bytes, image_id
            )
            result = result_for(ctx, shipment)
            sizes_known = broadcast.layer_sizes
            missing = sum(sizes_known[i] for i in decided.send) if sizes_known else None
            extra = {
                "missing_bytes": missing,
                "source": broadcast.source,
                "compress": compress_of[ctx.name],
            }
            return replace(result, details={**result.details, **extra})

        shipped += runner.run("push", wave, ship).results
        for producer in producers:
            producer.join(timeout=60)
    return shipped


def _pull_all(
    runner: Runner,
    todo: Sequence[Host],
    spec: ImageSpec,
    plans: Mapping[str, Plan],
    options: PushOptions,
    limits: Limits,
    publisher: registry.Publisher | None,
) -> list[HostResult]:
    """The registry path: publish once, then every host pulls (``forks`` at a time)."""
    if publisher is None:
        publisher = registry.EnginePublisher(images.connect(), options.registry)
    try:
        with publisher.serve() as location:
            published = location.name_for(spec.ref)
            digest = registry.checked_digest(publisher.publish(spec.ref, published), published)

            def task(ctx: HostContext) -> HostResult:
                decided = plans[ctx.name]
                return pull(ctx, spec, location, digest, decided, options, limits.for_host())

            return list(runner.run("push", todo, task).results)
    except RegistryError as exc:
        return [
            HostResult(h.name, Outcome.FAILED, f"not pulled: {exc.message}", exc.fix) for h in todo
        ]


def pull(
    ctx: HostContext,
    spec: ImageSpec,
    location: registry.Location,
    digest: str,
    decided: Plan,
    options: PushOptions,
    throttle: Throttle | None = None,
) -> HostResult:
    """One host pulls the published manifest by its digest, verifies it, then names it.

    What a tag in the registry names is never trusted: the host pulls ``NAME@digest``,
    the image that arrived is checked against ``spec`` (config, layers, listed) and only
    then tagged ``spec.ref``; a mismatch fails the host with the evidence and tags
    nothing. With the controller's registry, the host reaches it through its own end of
    a tunnel (``127.0.0.1:PORT`` on the host, a :class:`registry.Relay` on the controller,
    which asks for its own credential), closed as soon as the pull is done. The pull's
    name is removed whatever happens.
    """
    transport = ctx.transport
    relay, host_port = _open_tunnel(ctx, location, spec, throttle)
    name = location.name_for(spec.ref, host_port, digest)
    failed = True
    try:
        ctx.progress("pulling")
        try:
            ran = transport.run(
                [
                    "sh",
                    "-c",
                    PULL_SCRIPT,
                    "fleet-pull",
                    name,
                    decided.store,
                    f"127.0.0.1:{host_port}" if host_port is not None else "",
                ],
                stdin=f"{relay.credential.basic}\n".encode() if relay is not None else None,
                timeout=options.load_timeout,
                check=False,
            )
        finally:
            if host_port is not None:
                assert isinstance(transport, registry.Forwarding)
                transport.cancel_forward(host_port)
            if relay is not None:
                relay.close()
        _check_pulled(ctx, spec, name, ran)
        transport.run(["docker", "tag", name, spec.ref], timeout=options.state_timeout)
        failed = False
    finally:
        leftover = _remove_tag(transport, name, options.state_timeout)
    if leftover is not None and not failed:
        raise HostError(
            ctx.name,
            f"pulled, but the temporary name {name} could not be removed: {leftover}",
            fix=f"run 'docker rmi {name}' on the host",
        )
    image_id = verify(transport, spec, options.state_timeout)
    layers = len(decided.send)
    details: dict[str, Any] = {
        "via": "registry",
        "registry": location.description,
        "store": decided.store,
        "layers_total": len(spec.diff_ids),
        "layers_present": len(spec.diff_ids) - layers,
        "layers_pulled": layers,
        "bytes_pulled": relay.bytes_out if relay is not None else None,
        "image_id": image_id,
    }
    return ctx.result(
        Outcome.CHANGED,
        f"pulled {layers}/{len(spec.diff_ids)} layers from {location.description}",
        details=details,
    )


def _open_tunnel(
    ctx: HostContext,
    location: registry.Location,
    spec: ImageSpec,
    throttle: Throttle | None,
) -> tuple[registry.Relay | None, int | None]:
    """The host's end of a tunnel to the controller's registry: (relay, host port)."""
    if location.tunnel is None:
        return None, None
    transport = ctx.transport
    if not isinstance(transport, registry.Forwarding):
        raise HostError(
            ctx.name,
            "this connection cannot forward a port to the controller's registry",
            fix="use --via ssh, or --registry URL for a registry the host reaches",
        )
    relay = registry.Relay(location.tunnel, location.repository(spec.ref), throttle)
    try:
        return relay, transport.forward_remote(0, ("127.0.0.1", relay.port))
    except BaseException:
        relay.close()
        raise


def _check_pulled(ctx: HostContext, spec: ImageSpec, name: str, ran: CommandResult) -> None:
    """The pull succeeded and brought ``spec`` itself; otherwise the host fails, untagged."""
    if not ran.ok:
        said = tail_lines(ran.stderr or ran.stdout)
        raise HostError(
            ctx.name,
            f"docker pull {name} failed (exit {ran.exit_code}):\n{said}",
            fix=_fix_for(ran.stderr)
            or "check that the host reaches the registry and may pull from it, then rerun",
        )
    parts = _sections(ran.stdout)
    pulled = _target(parts)
    if is_current(spec, pulled):
        return
    reason = f"pulled {name}, but it is not {spec.ref}: {_evidence(spec, pulled)}"
    fix = "rerun; if it fails again, the registry holds another image under that digest"
    if parts.get("fetch_rc", ["0"])[:1] != ["0"]:
        said = "\n".join(parts.get("fetch", [])[-5:])
        reason += f"; fetching the missing blobs with ctr failed:\n{said}"
        fix = "use --via ssh for this host (a registry ctr cannot reach or log in to)"
    raise HostError(ctx.name, f"{reason}\nnothing was tagged", fix=fix)


def _remove_tag(transport: Transport, name: str, timeout: float | None) -> str | None:
    """Untag ``name`` on the host; None when it is gone (or was never there), else why not."""
    try:
        ran = transport.run(["docker", "rmi", name], timeout=timeout, check=False)
    except HostError as exc:
        return exc.reason
    if ran.ok or "no such image" in (ran.stderr + ran.stdout).lower():
        return None
    return (ran.stderr or ran.stdout).strip() or f"exit {ran.exit_code}"


def _merge_seconds(inspected: HostResult, shipped: HostResult) -> HostResult:
    return replace(shipped, seconds=inspected.seconds + shipped.seconds)


def engine_fix(error: str) -> str:
    """The fix for an engine that does not answer, recognised from what docker said."""
    text = error.lower()
    if "permission denied" in text:
        return "add the SSH user to the host's 'docker' group, or set ansible_become: true"
    if "command not found" in text or ("not found" in text and "docker" in text):
        return "install Docker on the host (fleet provision checks this)"
    return "start the host's Docker engine (e.g. 'systemctl start docker') and check 'docker info' there"

"""The tarball a host's ``docker load`` takes, made once and fanned out to many hosts.

One format serves both image stores (measured on the lab's engines): an OCI image layout
(``oci-layout``, ``index.json``, ``blobs/sha256/...``) that also carries a legacy
``manifest.json`` pointing into ``blobs/``. Docker 20.10's classic store reads
``manifest.json``; the containerd store (Docker 26+) reads ``index.json``.

The image is read once per wave of hosts as a stream, never stored: the wanted layers
straight from the controller's classic store (:mod:`fleet.images.store`), or, failing
that, the whole of ``docker save``. Each tar member is (optionally) compressed once
(:mod:`fleet.ship.codec`), and the same compressed bytes are fanned out to every host of
the wave that needs them. Memory stays bounded: per-host queues of a few MiB, a bounded
replay cache, two blocks per core in compression.
"""

from __future__ import annotations

import hashlib
import io
import json
import queue
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol

from fleet.errors import HostError
from fleet.images.labels import normalized_name
from fleet.images.savefilter import v1_candidates
from fleet.images.spec import ImageSpec, Shippable
from fleet.images.store import ChunkReader, Descriptor
from fleet.ship.bandwidth import Throttle
from fleet.ship.codec import Encoder, WireCompression

SaveStream = Callable[[], Iterable[bytes]]


@dataclass(frozen=True)
class Variant:
    """What one host's manifests say, beyond what every host's say.

    ``named``: the layers its manifests name by a compressed blob (one it already holds, or
    one it gets as the controller stores it), sorted; the others are named by their tar.
    ``oci``: whether its ``docker load`` reads the OCI index (containerd store); a classic
    store reads only ``manifest.json``, so it needs no OCI manifest, whose layer sizes
    could cost a read of a compressed layer it is not even sent.
    """

    named: tuple[tuple[int, Descriptor], ...] = ()
    oci: bool = True

    def key(self) -> str:
        return repr(self)


class LayerSource(Protocol):
    """Layers and config of an image read without ``docker save`` (see images.store)."""

    source: str  # what the layers are read from, as a push reports it
    why: str  # why, when that is not the controller's store itself

    def config(self, image_id: str) -> bytes: ...

    def tar_size(self, chain_id: str) -> int: ...

    def check(self, chain_id: str) -> int: ...

    def tar(self, chain_id: str, diff_id: str) -> Iterator[bytes]: ...

    def stored(self, chain_id: str) -> Descriptor | None: ...

    def blob(self, chain_id: str) -> Iterator[bytes]: ...


_CHUNK = 1 << 20
# Each host's queue: at most this many chunks of at most _CHUNK bytes (the controller's
# memory grows with hosts x this, so it stays small; loopback and LANs keep it full).
_QUEUE_CHUNKS = 8
# Encoded members kept for a later wave of hosts; past this, the wave reads its source again.
_REPLAY_CACHE_BYTES = 64 << 20

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


@dataclass
class _Member:
    """One tar member of the output: its key, its tar header+data, compressed or not."""

    key: str
    layer: int | None
    # The hosts' manifest variant it belongs to (None: every host's; see Sink.variant).
    variant: Variant | None = None
    # A layer as the controller's compressed blob (else as its tar).
    stored: bool = False
    # Encoded chunks, each with the count of tar bytes it stands for (for progress).
    chunks: list[tuple[bytes, int]] = field(default_factory=list)


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _manifest_bytes(
    spec: ImageSpec, config: bytes, sizes: Sequence[int], variant: Variant
) -> bytes:
    named = dict(variant.named)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": spec.config_digest, "size": len(config)},
        "layers": [
            named[i].to_json()
            if i in named
            else {"mediaType": OCI_LAYER_TAR, "digest": d, "size": sizes[i]}
            for i, d in enumerate(spec.diff_ids)
        ],
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _legacy_manifest(spec: ImageSpec, variant: Variant) -> bytes:
    """``manifest.json``, which classic stores read: each layer's file in the archive."""
    named = dict(variant.named)
    legacy = [
        {
            "Config": f"blobs/sha256/{spec.config_digest[7:]}",
            "RepoTags": [spec.ref],
            "Layers": [
                f"blobs/sha256/{(named[i].digest if i in named else d)[7:]}"
                for i, d in enumerate(spec.diff_ids)
            ],
        }
    ]
    return json.dumps(legacy, separators=(",", ":")).encode()


class ImageStream:
    """Reads ``docker save`` once and yields the dual-format tarball's members, encoded."""

    def __init__(
        self,
        spec: ImageSpec,
        save: SaveStream,
        compress: WireCompression = "gzip",
        variants: Iterable[Variant] = (Variant(),),
    ) -> None:
        self.spec = spec
        self._save = save
        self.compress = compress
        self.variants = sorted(set(variants), key=Variant.key)
        self.config = b""
        # Each layer's tar size, 0 until known (a layer sent as its blob may never be).
        self.layer_sizes: list[int] = [0] * len(spec.diff_ids)
        self._size_of: Callable[[int], int] | None = None
        # Tar bytes encoded so far: what a host's progress counts (its wire bytes lag behind).
        self.raw_fed = 0

    def local_members(
        self, source: LayerSource, wanted: AbstractSet[int], blobs: AbstractSet[int] = frozenset()
    ) -> list[tuple[_Member, Iterator[bytes]]]:
        """The members, with the ``wanted`` layers' tars and the ``blobs`` layers' stored
        blobs streamed from ``source``; OSError if it cannot.

        What commonly fails (a missing or unreadable file, a config that differs) is found
        before the first byte is sent, so it falls back to ``docker save`` cleanly. A layer
        whose bytes differ from its diff ID (a blob from its digest) fails the stream at its
        end, before the config and manifests: no host can load it.
        """
        spec = self.spec
        chains = spec.chain_ids
        self.layer_sizes = [source.check(c) if i in wanted else 0 for i, c in enumerate(chains)]
        stored = {i: source.stored(chains[i]) for i in blobs}
        for index, descriptor in stored.items():
            if descriptor is None:
                raise OSError(f"the stored blob of layer {index} is gone or unreadable")
        self._size_of = lambda index: source.tar_size(chains[index])
        config = source.config(spec.config_digest)
        encoder = Encoder(self.compress)
        members: list[tuple[_Member, Iterator[bytes]]] = []
        for index in sorted(wanted | blobs):
            if index in wanted:
                diff_id = spec.diff_ids[index]
                data = self._encode(
                    encoder,
                    f"blobs/sha256/{diff_id[7:]}",
                    self.layer_sizes[index],
                    source.tar(chains[index], diff_id),
                )
                members.append((_Member(f"layer {index}", index), data))
            blob = stored.get(index)
            if blob is not None:
                data = self._encode(
                    encoder,
                    f"blobs/sha256/{blob.digest[7:]}",
                    blob.size,
                    source.blob(chains[index]),
                    stored=True,
                )
                members.append((_Member(f"blob {index}", index, stored=True), data))
        members += self._closing_members(encoder, config)
        return members

    def _size(self, index: int) -> int:
        """Layer ``index``'s tar size, learnt from the store when it was not streamed."""
        if not self.layer_sizes[index] and self._size_of is not None:
            self.layer_sizes[index] = self._size_of(index)
        return self.layer_sizes[index]

    def members(self) -> Iterator[tuple[_Member, Iterator[bytes]]]:
        """Yield each output member with an iterator of its encoded chunks, in order."""
        spec = self.spec
        chains = spec.chain_ids
        index_of_v1: dict[str, int] = {}
        config = b""
        encoder = Encoder(self.compress)
        with tarfile.open(
            fileobj=io.BufferedReader(ChunkReader(self._save()), _CHUNK), mode="r|"
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
                    layer, data = identify_by_digest(spec, source)
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
        self, encoder: Encoder, config: bytes
    ) -> list[tuple[_Member, Iterator[bytes]]]:
        """Config, manifests, index and the end of the archive (layer sizes known by now)."""
        spec = self.spec
        if hashlib.sha256(config).hexdigest() != spec.config_digest.removeprefix("sha256:"):
            raise HostError("controller", f"the config of {spec.ref} does not match its image ID")
        self.config = config
        small = {
            f"blobs/sha256/{spec.config_digest[7:]}": config,
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        }
        members = [
            (_Member(name, None), self._encode(encoder, name, len(content), iter((content,))))
            for name, content in small.items()
        ]
        members += self.variant_members(encoder, self.variants)
        members.append(
            (_Member("end", None), self._encode_raw(encoder, b"\0" * (2 * tarfile.BLOCKSIZE)))
        )
        return members

    def variant_members(
        self, encoder: Encoder, variants: Iterable[Variant]
    ) -> list[tuple[_Member, Iterator[bytes]]]:
        """Each variant's manifests, for the variants' hosts only: ``manifest.json`` (the
        classic store's load reads it), and the OCI manifest and index.json (the containerd
        store's reads them) for the variants that need them."""
        spec = self.spec
        members = []
        for variant in variants:
            files = [("manifest.json", _legacy_manifest(spec, variant))]
            if variant.oci:
                files += self._oci_files(variant)
            for name, content in files:
                members.append(
                    (
                        _Member(f"{name} {variant.key()}", None, variant),
                        self._encode(encoder, name, len(content), iter((content,))),
                    )
                )
        return members

    def _oci_files(self, variant: Variant) -> list[tuple[str, bytes]]:
        spec = self.spec
        named = dict(variant.named)
        sizes = [0 if i in named else self._size(i) for i in range(len(spec.diff_ids))]
        manifest = _manifest_bytes(spec, self.config, sizes, variant)
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": normalized_name(spec.ref),
                        "org.opencontainers.image.ref.name": spec.ref.rpartition(":")[2],
                    },
                }
            ],
        }
        return [
            (f"blobs/sha256/{digest[7:]}", manifest),
            ("index.json", json.dumps(index, separators=(",", ":")).encode()),
        ]

    def _encode(
        self,
        encoder: Encoder,
        name: str,
        size: int,
        data: Iterator[bytes],
        *,
        stored: bool = False,
    ) -> Iterator[bytes]:
        encoder.start(size, stored=stored)
        finished = False
        try:
            header = _tar_header(name, size)
            self.raw_fed += len(header)
            out = encoder.feed(header)
            if out:
                yield out
            for chunk in data:
                # Bounded pieces: a whole layer in one piece would be sliced quadratically
                # by paramiko's sendall, and would sit whole in every host's queue.
                view = memoryview(chunk)
                for start in range(0, len(view), _CHUNK):
                    piece = bytes(view[start : start + _CHUNK])
                    self.raw_fed += len(piece)
                    out = encoder.feed(piece)
                    if out:
                        yield out
            self.raw_fed += len(_padding(size))
            out = encoder.feed(_padding(size)) + encoder.finish()
            finished = True
        finally:
            if not finished:
                encoder.abort()
        if out:
            yield out

    def _encode_raw(self, encoder: Encoder, data: bytes) -> Iterator[bytes]:
        encoder.start()
        self.raw_fed += len(data)
        yield encoder.feed(data) + encoder.finish()


def identify_by_digest(spec: ImageSpec, source: Any) -> tuple[int, Iterator[bytes]]:
    """A docker save member read once, spooled, and known by its digest: (the layer's
    index in ``spec``, the member's bytes again); HostError for a layer not in ``spec``."""
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


class Sink:
    """One host's bounded queue of encoded chunks; the producer never waits on a dead one."""

    def __init__(
        self,
        host: str,
        send: frozenset[int],
        throttle: Throttle | None = None,
        reuse: Mapping[int, Descriptor] | None = None,
        stored: Mapping[int, Descriptor] | None = None,
        *,
        oci: bool = True,
    ) -> None:
        """``reuse``: layers it holds compressed (not sent); ``stored``: layers of ``send``
        it gets as the controller's stored blob; ``oci``: its load reads the OCI index."""
        self.host = host
        self.send = send
        self.throttle = throttle
        self._reuse = dict(reuse or {})
        self._oci = oci
        self.stored: frozenset[int] = frozenset()
        self.variant = Variant()
        self.use_stored(stored or {})
        self.queue: queue.Queue[tuple[bytes, int] | None] = queue.Queue(_QUEUE_CHUNKS)
        self.dead = threading.Event()
        self.bytes = 0
        # Tar bytes delivered: the measure of progress, against the plan's layer sizes.
        self.raw = 0
        self.on_progress: Callable[[int], None] | None = None
        # Called once the last byte has been taken: the host now finishes its load.
        self.on_end: Callable[[], None] | None = None
        self._reported = 0

    def use_stored(self, stored: Mapping[int, Descriptor]) -> None:
        """Which layers it gets as stored blobs (none, when the store cannot give them)."""
        self.stored = frozenset(stored)
        named = {**self._reuse, **stored}
        self.variant = Variant(tuple(sorted(named.items(), key=lambda item: item[0])), self._oci)

    def wants(self, member: _Member) -> bool:
        if member.variant is not None:
            return member.variant == self.variant
        if member.layer is None:
            return True
        return member.layer in self.send and member.stored == (member.layer in self.stored)

    def put(self, chunk: bytes | None, raw: int = 0) -> None:
        """Queue an encoded chunk standing for ``raw`` tar bytes; None ends the stream."""
        item = None if chunk is None else (chunk, raw)
        while not self.dead.is_set():
            try:
                self.queue.put(item, timeout=0.2)
            except queue.Full:
                continue
            return

    def chunks(self) -> Iterator[bytes]:
        while True:
            item = self.queue.get()
            if item is None:
                if self.on_end is not None:
                    self.on_end()
                return
            chunk, raw = item
            if self.throttle is not None:
                self.throttle.take(len(chunk))
            self.bytes += len(chunk)
            self.raw += raw
            if self.on_progress is not None and self.raw - self._reported >= 4 * _CHUNK:
                self._reported = self.raw
                self.on_progress(self.raw)
            yield chunk

    def close(self) -> None:
        self.dead.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return


class Broadcast:
    """Feeds one pass over the image (its store, or ``docker save``) to several hosts'
    sinks, each its own layers.

    Encoded members are kept for replay to later waves while they fit in a bounded cache;
    past that, a later wave reads the image again.
    """

    def __init__(
        self,
        spec: ImageSpec,
        save: SaveStream,
        compress: WireCompression,
        local: LayerSource | None = None,
        hosts: Iterable[Sink] = (),
    ) -> None:
        """``hosts``: every host this broadcast will feed, over all waves (their sinks or
        like ones), so that what the first wave reads serves the later ones too."""
        self.spec = spec
        self.save = save
        self.compress = compress
        self.local = local
        hosts = list(hosts)
        self._tars: set[int] = set().union(*(h.send - h.stored for h in hosts))
        self._blobs: set[int] = set().union(*(h.stored for h in hosts))
        # False once the stored blobs could not be read: every wave then gets tars.
        self.blobs_ok = True
        self.source = ""
        # Why the layers were read with docker save (the slow way), when they were.
        self.source_why = ""
        self._replay: list[_Member] | None = None
        self._stream: ImageStream | None = None
        self.error: BaseException | None = None
        self.layer_sizes: list[int] = []

    def run(self, sinks: Sequence[Sink], *, replay: bool = True) -> None:
        """Produce into ``sinks`` until the end (call in a thread).

        ``replay``: later waves will follow, so keep what was encoded for them. Without
        it, members that no sink wants are skipped unencoded.
        """
        try:
            if self._replay is not None:
                self._replay_to(sinks)
                return
            stream = ImageStream(
                self.spec, self.save, self.compress, {sink.variant for sink in sinks}
            )
            self._stream = stream
            cache: list[_Member] | None = [] if replay else None
            cached = 0
            members: Iterable[tuple[_Member, Iterator[bytes]]] | None = self._local(stream, sinks)
            if members is None:
                self.blobs_ok = False
                stream.variants = self._variants(sinks)
                members = stream.members()  # reads every layer of the image
                self.source = "docker save"
            seen = 0
            for member, chunks in members:
                if cache is None and not any(sink.wants(member) for sink in sinks):
                    continue  # tarfile skips the unread data
                for encoded in chunks:
                    raw, seen = stream.raw_fed - seen, stream.raw_fed
                    for chunk, share in _pieces(encoded, raw):
                        _fan(sinks, member, chunk, share)
                        if cache is not None:
                            member.chunks.append((chunk, share))
                            cached += len(chunk)
                            if cached > _REPLAY_CACHE_BYTES:
                                cache = None
                                member.chunks.clear()
                if cache is not None:
                    cache.append(member)
            self._replay = cache
            self.layer_sizes = stream.layer_sizes
        except BaseException as exc:
            self.error = exc
        finally:
            for sink in sinks:
                sink.put(None)

    def _local(
        self, stream: ImageStream, sinks: Sequence[Sink]
    ) -> list[tuple[_Member, Iterator[bytes]]] | None:
        """The members read from the controller's own store, or None (``source_why`` says
        why) when it cannot give them."""
        if self.local is None:
            self.source_why = (
                "the controller's engine is not a classic overlay2 store this user can read"
            )
            return None
        tars = self._tars.union(*(sink.send - sink.stored for sink in sinks))
        blobs = self._blobs.union(*(sink.stored for sink in sinks))
        try:
            members = stream.local_members(self.local, tars, blobs)
        except (OSError, ValueError, KeyError) as exc:
            self.source_why = f"the controller's store could not give the layers: {exc}"
            return None
        self.source, self.source_why = self.local.source, self.local.why
        return members

    def _variants(self, sinks: Sequence[Sink]) -> list[Variant]:
        """The manifest variants of ``sinks``, in order; without stored blobs when they
        could not be read (docker save gives tars only: every layer goes as its tar)."""
        if not self.blobs_ok:
            for sink in sinks:
                sink.use_stored({})
        return sorted({sink.variant for sink in sinks}, key=Variant.key)

    def _replay_to(self, sinks: Sequence[Sink]) -> None:
        """A later wave: the cached members, with the manifests of this wave's variants."""
        assert self._replay is not None and self._stream is not None
        variants = self._variants(sinks)
        for member in self._replay:
            if member.variant is not None:
                continue
            if member.key == "end":
                encoder = Encoder(self.compress)
                for fresh, chunks in self._stream.variant_members(encoder, variants):
                    for chunk in chunks:
                        _fan(sinks, fresh, chunk)
            for chunk, raw in member.chunks:
                _fan(sinks, member, chunk, raw)


def _fan(sinks: Sequence[Sink], member: _Member, chunk: bytes, raw: int = 0) -> None:
    """One chunk of ``member`` to every sink that wants it."""
    for sink in sinks:
        if sink.wants(member):
            sink.put(chunk, raw)


def _pieces(chunk: bytes, raw: int) -> Iterator[tuple[bytes, int]]:
    """``chunk`` in pieces of at most ``_CHUNK`` (a compressed block is 4 MiB), so that the
    hosts' queues are bounded in bytes; the last piece carries the tar bytes it stands for.
    """
    if len(chunk) <= _CHUNK:
        yield chunk, raw
        return
    view = memoryview(chunk)
    for start in range(0, len(view), _CHUNK):
        yield view[start : start + _CHUNK].tobytes(), raw if start + _CHUNK >= len(view) else 0


def thin_tarball(
    image: Shippable, send: Iterable[int], compress: WireCompression = "none"
) -> Iterator[bytes]:
    """The tarball ``docker load`` takes, with only the layers ``send``, as a stream.

    For one receiver that is not a host of the fleet (the controller pulling an image back
    from a build host); a thread reads the image while the caller consumes the stream.
    """
    broadcast = Broadcast(image.spec, image.save, compress, image.local)
    sink = Sink("controller", frozenset(send))
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

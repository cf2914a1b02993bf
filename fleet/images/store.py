"""The controller engine's image store, read directly: layers without ``docker save``.

``docker save`` reads every layer of an image, even when the hosts lack only the thin top
one; for a multi-GB GPU image that is most of a thin push's time. Both stores are read
instead, as a stream: a layer is never held in memory, whatever its size, and its digest is
computed on the way and checked against the layer's diff ID at its end.

The classic (overlay2) store (:class:`LocalLayers`) keeps each layer as a directory plus
its tar-split record (the tar's headers and padding, in order, with the size of each file's
data between them), from which Docker itself reassembles the exact tar on ``docker save``;
fleet does the same. The containerd store (:class:`ContentStore`, Docker 29's default)
keeps each layer as a blob, usually gzip'd, named in the image's manifest: a host whose
engine loads that compression gets the blob as it is (:meth:`ContentStore.blob`, checked
against the blob's digest), the others the tar it unpacks to.

Before a byte is sent, ``check`` makes sure every file (or blob) a layer needs is there and
readable, so that what commonly goes wrong (a layer removed meanwhile, no permission) falls
back to ``docker save`` cleanly. A layer whose bytes turn out different from its diff ID
fails the stream at its end, before the archive's config and manifests, so no host can
load it.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import weakref
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fleet.hostoutput import store_of
from fleet.images.labels import ImageVersion


@dataclass(frozen=True)
class Descriptor:
    """A layer blob as a manifest names it: media type, digest (of the blob), size."""

    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


# Pieces handed on: big enough to keep per-chunk costs low, small enough to fan out.
_PIECE = 1 << 20


class ChunkReader(io.RawIOBase):
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


class LocalLayers:
    """Layers and configs read from the controller engine's classic overlay2 store."""

    # What a push says it read the layers from; and why, when it is not the store itself.
    source = "local store"
    why = ""

    def __init__(self, root: Path, driver: str) -> None:
        self.root = root
        self.driver = driver
        self._layerdb = root / "image" / driver / "layerdb" / "sha256"

    @classmethod
    def at(cls, info: Mapping[str, Any]) -> LocalLayers | None:
        """The store of the engine whose ``docker info`` this is, when it is a classic
        overlay2 store this process can read."""
        driver = str(info.get("Driver", ""))
        root = Path(str(info.get("DockerRootDir", "")))
        store = cls(root, driver)
        if driver != "overlay2" or not os.access(store._layerdb, os.R_OK | os.X_OK):
            return None
        return store

    def config(self, image_id: str) -> bytes:
        """The image's config, exactly (its digest is the image ID)."""
        hex_id = image_id.removeprefix("sha256:")
        data = (
            self.root / "image" / self.driver / "imagedb" / "content" / "sha256" / hex_id
        ).read_bytes()
        if hashlib.sha256(data).hexdigest() != hex_id:
            raise OSError(f"config of {image_id} does not match its digest")
        return data

    def _entries(self, chain_id: str) -> Iterator[dict[str, Any]]:
        path = self._layerdb / chain_id.removeprefix("sha256:") / "tar-split.json.gz"
        with gzip.open(path, "rt", encoding="utf-8") as records:
            for line in records:
                if line.strip():
                    yield json.loads(line)

    def _files(self, chain_id: str) -> Iterator[tuple[bytes | None, Path | None, int]]:
        """The record's pieces: (raw tar bytes, None, 0) or (None, file, size), in order."""
        layer = self._layerdb / chain_id.removeprefix("sha256:")
        diff = (
            self.root / self.driver / (layer / "cache-id").read_text().strip() / "diff"
        ).resolve()
        for entry in self._entries(chain_id):
            if entry.get("type") == 2:
                yield base64.b64decode(entry.get("payload") or ""), None, 0
                continue
            size = int(entry.get("size") or 0)
            if size <= 0:
                continue
            raw = entry.get("name_raw")
            name = (
                base64.b64decode(raw).decode("utf-8", "surrogateescape")
                if raw
                else str(entry.get("name", ""))
            )
            path = (diff / name.lstrip("/")).resolve()
            if not path.is_relative_to(diff):
                raise OSError(f"layer entry {name!r} leaves the layer's directory")
            yield None, path, size

    def tar_size(self, chain_id: str) -> int:
        """The size of the layer's tar, from its tar-split record alone."""
        return sum(len(raw) if raw is not None else size for raw, _, size in self._files(chain_id))

    def check(self, chain_id: str) -> int:
        """The layer's tar size, once every file of it is there, readable, with at least its
        size (OSError otherwise): one pass over its record, not one to size and one to check."""
        total = 0
        for raw, path, size in self._files(chain_id):
            if path is None:
                total += len(raw or b"")
                continue
            if path.stat().st_size < size or not os.access(path, os.R_OK):
                raise OSError(f"layer file {path} is shorter than its tar entry or unreadable")
            total += size
        return total

    def stored(self, chain_id: str) -> Descriptor | None:
        """None: this store keeps no layer compressed (see :meth:`ContentStore.stored`)."""
        return None

    def blob(self, chain_id: str) -> Iterator[bytes]:
        raise OSError(f"layer {chain_id} has no stored blob in a classic store")

    def tar(self, chain_id: str, diff_id: str) -> Iterator[bytes]:
        """The layer's tar as a stream of pieces; OSError at its end if not ``diff_id``."""
        mismatch = f"reassembled layer does not match {diff_id}"
        return _verified(self._pieces(chain_id), diff_id, mismatch)

    def _pieces(self, chain_id: str) -> Iterator[bytes]:
        """The layer's tar in pieces of about :data:`_PIECE` bytes, from its record."""
        pending: list[bytes] = []
        held = 0
        for raw, path, size in self._files(chain_id):
            if raw is not None:
                pending.append(raw)
                held += len(raw)
                continue
            assert path is not None
            for data in _read_exactly(path, size):
                pending.append(data)
                held += len(data)
                if held >= _PIECE:
                    yield b"".join(pending)
                    pending, held = [], 0
        yield b"".join(pending)


def _verified(pieces: Iterator[bytes], diff_id: str, mismatch: str) -> Iterator[bytes]:
    """``pieces`` passed on, their digest checked against ``diff_id`` (a layer's, or a
    blob's): the last piece goes only once the whole is known to be right
    (OSError(``mismatch``) otherwise)."""
    digest = hashlib.sha256()
    held: bytes | None = None
    for piece in pieces:
        digest.update(piece)
        if held is not None:
            yield held
        held = piece
    if f"sha256:{digest.hexdigest()}" != diff_id:
        raise OSError(mismatch)
    if held is not None:
        yield held


def _read_exactly(path: Path, size: int) -> Iterator[bytes]:
    """``size`` bytes of ``path`` in pieces; OSError when the file is shorter."""
    left = size
    with path.open("rb") as handle:
        while left:
            data = handle.read(min(left, _PIECE))
            if not data:
                raise OSError(f"layer file {path} is shorter than its tar entry")
            left -= len(data)
            yield data


# -- the containerd image store ----------------------------------------------------------
_CONTENT = "io.containerd.content.v1.content"
_INDEXES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
_TAR = frozenset(
    {"application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar"}
)
_GZIP = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
)
_ZSTD = frozenset({"application/vnd.oci.image.layer.v1.tar+zstd"})
# Manifests, indexes and configs are small; a larger "document" is not one.
_MAX_DOCUMENT = 4 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{64}")


def named_by_config(versions: list[ImageVersion], info: Mapping[str, Any]) -> list[ImageVersion]:
    """``versions`` with their config digests, when the engine (its ``docker info``) names
    images by manifest: the containerd store, when this user can read it. Hosts' images
    are compared to the controller's builds by config digest (see fleet.ops.audit)."""
    try:
        store = ContentStore.at(info)
    except OSError:
        return versions  # compared by their labels instead
    if store is None:
        return versions
    return [_with_config_digest(store, version) for version in versions]


def _with_config_digest(store: ContentStore, version: ImageVersion) -> ImageVersion:
    try:
        return replace(version, config_digest=store.config_digest(version.image_id))
    except (OSError, ValueError):
        return version


def _sizes_cache() -> Path:
    """Where compressed layers' tar sizes are kept (blobs never change under a digest)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "fleet" / "layer-sizes.json"


class ContentStore:
    """Images read from the controller engine's containerd content store.

    On that store (Docker 29's default) an image's ID is its manifest's (or index's)
    digest, and each layer is a blob, usually gzip'd as ``docker build`` left it. The
    image's manifest names its config and its layers' blobs; a layer is streamed as the
    tar it unpacks to, checked against its diff ID at its end like the classic store's.
    A compressed blob's tar size is learnt once by reading it, then kept in a small cache
    (blobs never change under their digest).
    """

    source = "local store"
    why = ""

    def __init__(self, content: Path, sizes_file: Path | None = None) -> None:
        self.blobs = content / "blobs" / "sha256"
        self._layers: dict[str, tuple[str, str]] = {}  # chain ID -> (media type, blob)
        self._declared: dict[str, int] = {}  # blob -> its size, as the manifest says
        self._sizes_file = sizes_file
        self._sizes: dict[str, int] | None = None

    @classmethod
    def at(cls, info: Mapping[str, Any]) -> ContentStore | None:
        """The content store of the engine whose ``docker info`` this is; None for a classic
        store; OSError when the engine keeps its images in containerd's store and this
        process cannot read it."""
        if store_of(info.get("DriverStatus")) != "containerd":
            return None
        # An engine in a container or a VM: where this machine sees its root.
        root = Path(os.environ.get("FLEET_ENGINE_ROOT") or str(info.get("DockerRootDir", "")))
        candidates = (
            root / "containerd" / "daemon" / _CONTENT,
            Path("/var/lib/containerd") / _CONTENT,
        )
        for content in candidates:
            if os.access(content / "blobs" / "sha256", os.R_OK | os.X_OK):
                return cls(content, _sizes_cache())
        raise OSError(
            "the engine keeps its images in containerd's content store, which this user "
            f"cannot read (looked in {', '.join(str(c) for c in candidates)})"
        )

    @classmethod
    def saved(cls, save: Iterable[bytes], why: str) -> ContentStore:
        """A private copy of an image's blobs from its ``docker save`` (the OCI layout of
        an engine on the containerd store), for a user who cannot read the store itself.

        Every blob is checked against its name as it is written; what is not a blob is
        left out. The copy lives in a temporary directory, removed with this object.
        """
        directory = Path(tempfile.mkdtemp(prefix="fleet-save-"))
        store = cls(directory, _sizes_cache())
        weakref.finalize(store, shutil.rmtree, directory, True)
        store.source, store.why = "docker save copy", why
        store.blobs.mkdir(parents=True)
        with tarfile.open(fileobj=io.BufferedReader(ChunkReader(save), _PIECE), mode="r|") as tar:
            for info in tar:
                folder, _, name = info.name.rpartition("/")
                source = tar.extractfile(info) if info.isfile() else None
                if source is None or folder != "blobs/sha256" or not _HEX.fullmatch(name):
                    continue
                store._write(f"sha256:{name}", source)
        return store

    def _write(self, digest: str, source: Any) -> None:
        check = hashlib.sha256()
        partial = self.blobs / f"{digest[7:]}.partial"
        with partial.open("wb") as out:
            while data := source.read(_PIECE):
                check.update(data)
                out.write(data)
        if f"sha256:{check.hexdigest()}" != digest:
            partial.unlink()
            raise OSError(f"docker save gave a blob that is not its digest {digest}")
        partial.replace(self._blob(digest))

    def _blob(self, digest: str) -> Path:
        if not _DIGEST.fullmatch(digest):
            raise OSError(f"not a sha256 digest: {digest!r}")
        return self.blobs / digest.removeprefix("sha256:")

    def _read(self, digest: str, what: str = "blob") -> bytes:
        """A small blob's bytes, checked against its digest."""
        data = self._blob(digest).read_bytes()
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            raise OSError(f"{what} {digest} does not match its digest")
        return data

    def _document(self, digest: str) -> dict[str, Any]:
        if self._blob(digest).stat().st_size > _MAX_DOCUMENT:
            raise OSError(f"{digest} is too large for a manifest or config")
        document = json.loads(self._read(digest))
        if not isinstance(document, dict):
            raise OSError(f"blob {digest} is not a JSON object")
        return document

    def config_digest(self, image_id: str) -> str:
        """The config digest (the identity the classic store names images by) of the
        image whose ID is ``image_id``; OSError when its manifest is not readable here."""
        config = str((self._manifest(image_id).get("config") or {}).get("digest", ""))
        if not _DIGEST.fullmatch(config):
            raise OSError(f"the manifest of {image_id} names no config")
        return config

    def _manifest(self, image_id: str) -> dict[str, Any]:
        manifest = self._document(image_id)
        if manifest.get("mediaType") in _INDEXES or "manifests" in manifest:
            manifest = self._local_manifest(manifest)
        return manifest

    def resolve(self, image_id: str, chains: Sequence[str]) -> str:
        """The config digest of the image whose ID (manifest or index digest) is
        ``image_id``; its layers' blobs are remembered under their ``chains``."""
        manifest = self._manifest(image_id)
        layers = manifest.get("layers")
        config = (manifest.get("config") or {}).get("digest")
        if not isinstance(layers, list) or len(layers) != len(chains) or not config:
            raise OSError(f"the manifest of {image_id} does not list the image's layers")
        for chain, layer in zip(chains, layers, strict=True):
            digest = str(layer.get("digest"))
            self._layers[chain] = (str(layer.get("mediaType")), digest)
            size = layer.get("size")
            if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
                self._declared[digest] = size
        return str(config)

    def _local_manifest(self, index: dict[str, Any]) -> dict[str, Any]:
        """The index's manifest for Linux whose blobs this engine holds (a pulled
        multi-platform image keeps only its own platform's)."""
        for entry in index.get("manifests") or []:
            platform = entry.get("platform") or {}
            digest = str(entry.get("digest", ""))
            linux = platform.get("os", "linux") == "linux"
            if linux and _DIGEST.fullmatch(digest) and self._blob(digest).is_file():
                manifest = self._document(digest)
                config = str((manifest.get("config") or {}).get("digest", ""))
                if _DIGEST.fullmatch(config) and self._blob(config).is_file():
                    return manifest
        raise OSError("the image's index names no manifest whose blobs are here")

    def config(self, image_id: str) -> bytes:
        """The image's config, exactly (``image_id``: its config digest)."""
        return self._read(image_id, "config")

    def _layer(self, chain_id: str) -> tuple[str, str]:
        try:
            return self._layers[chain_id]
        except KeyError:
            raise OSError(f"layer {chain_id} of no resolved image") from None

    def tar_size(self, chain_id: str) -> int:
        media, digest = self._layer(chain_id)
        if media in _TAR:
            return self._blob(digest).stat().st_size
        sizes = self._load_sizes()
        if digest not in sizes:
            sizes[digest] = sum(len(piece) for piece in self._unpacked(media, digest))
            self._save_sizes()
        return sizes[digest]

    def check(self, chain_id: str) -> int:
        """The layer's tar size, once its blob is there and readable (OSError otherwise)."""
        media, digest = self._layer(chain_id)
        path = self._blob(digest)
        if not os.access(path, os.R_OK) or media not in _TAR | _GZIP | _ZSTD:
            raise OSError(f"layer blob {digest} ({media}) cannot be read here")
        return self.tar_size(chain_id)

    def stored(self, chain_id: str) -> Descriptor | None:
        """The layer's blob when it is compressed (gzip or zstd), as a manifest names it: a
        host whose engine loads that compression gets it as it is, with no recompression.
        None for a plain tar blob, one whose size is not what the manifest says, or one
        this user cannot read."""
        media, digest = self._layer(chain_id)
        if media not in _GZIP | _ZSTD:
            return None
        path = self._blob(digest)
        try:
            size = path.stat().st_size
        except OSError:
            return None
        if self._declared.get(digest, size) != size or not os.access(path, os.R_OK):
            return None
        return Descriptor(media, digest, size)

    def blob(self, chain_id: str) -> Iterator[bytes]:
        """The layer's blob as it is stored, in pieces; OSError at its end (before its last
        piece) when it is not its digest."""
        _, digest = self._layer(chain_id)
        return _verified(self._raw(digest), digest, f"blob {digest} does not match its digest")

    def _raw(self, digest: str) -> Iterator[bytes]:
        with self._blob(digest).open("rb") as handle:
            while data := handle.read(_PIECE):
                yield data

    def tar(self, chain_id: str, diff_id: str) -> Iterator[bytes]:
        """The layer's tar as a stream of pieces; OSError at its end if not ``diff_id``
        (the blob's own digest is checked too)."""
        media, digest = self._layer(chain_id)
        mismatch = f"layer blob {digest} does not unpack to {diff_id}"
        return _verified(self._unpacked(media, digest), diff_id, mismatch)

    def _unpacked(self, media: str, digest: str) -> Iterator[bytes]:
        """The blob's tar in pieces; OSError at its end when the blob is not ``digest``."""
        packed = hashlib.sha256()
        if media in _ZSTD:
            yield from self._zstd(digest, packed)
        else:
            inflate = zlib.decompressobj(wbits=31) if media in _GZIP else None
            for piece in self._raw(digest):
                packed.update(piece)
                if inflate is None:
                    yield piece
                    continue
                data = piece
                while data:
                    out = inflate.decompress(data)
                    # Concatenated gzip members are one stream (pigz and parallel gzip).
                    data = inflate.unused_data if inflate.eof else b""
                    if inflate.eof:
                        inflate = zlib.decompressobj(wbits=31)
                    if out:
                        yield out
        if f"sha256:{packed.hexdigest()}" != digest:
            raise OSError(f"blob {digest} does not match its digest")

    def _zstd(self, digest: str, packed: Any) -> Iterator[bytes]:
        path = self._blob(digest)
        # The zstd program reads the file itself: its digest is taken by a read of ours.
        for data in self._raw(digest):
            packed.update(data)
        with subprocess.Popen(["zstd", "-dcq", str(path)], stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            while data := proc.stdout.read(_PIECE):
                yield data
        if proc.returncode != 0:
            raise OSError(f"zstd could not unpack {digest} (exit {proc.returncode})")

    def _load_sizes(self) -> dict[str, int]:
        if self._sizes is None:
            self._sizes = {}
            try:
                loaded = json.loads(self._sizes_file.read_text()) if self._sizes_file else {}
            except (OSError, ValueError):
                loaded = {}
            if isinstance(loaded, dict):
                self._sizes = {
                    k: v for k, v in loaded.items() if _DIGEST.fullmatch(k) and isinstance(v, int)
                }
        return self._sizes

    def _save_sizes(self) -> None:
        if self._sizes_file is None or self._sizes is None:
            return
        with contextlib.suppress(OSError):  # a cache: losing it costs a read, nothing more
            self._sizes_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self._sizes_file.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(self._sizes, sort_keys=True))
            temporary.replace(self._sizes_file)

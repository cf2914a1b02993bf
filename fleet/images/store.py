"""The controller engine's classic store, read directly: layers without ``docker save``.

``docker save`` reads every layer of an image, even when the hosts lack only the thin top
one; for a multi-GB GPU image that is most of a thin push's time. The classic (overlay2)
store keeps each layer as a directory plus its tar-split record (the tar's headers and
padding, in order, with the size of each file's data between them), from which Docker
itself reassembles the exact tar on ``docker save``. fleet does the same, as a stream:
a layer is never held in memory, whatever its size, and its digest is computed on the
way and checked against the layer's diff ID at its end.

Before a byte is sent, :meth:`LocalLayers.check` makes sure every file a layer's record
names is there with at least its size (a ``stat`` each, no read), so that what commonly
goes wrong (a layer removed meanwhile, no permission) falls back to ``docker save``
cleanly. A layer whose bytes turn out different from its diff ID fails the stream at its
end, before the archive's config and manifests, so no host can load it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors

# Pieces handed on: big enough to keep per-chunk costs low, small enough to fan out.
_PIECE = 1 << 20


class LocalLayers:
    """Layers and configs read from the controller engine's classic overlay2 store."""

    def __init__(self, root: Path, driver: str) -> None:
        self.root = root
        self.driver = driver
        self._layerdb = root / "image" / driver / "layerdb" / "sha256"

    @classmethod
    def of(cls, client: Any) -> LocalLayers | None:
        """The engine's store, when it is a classic overlay2 store this process can read."""
        try:
            info = client.info()
        except (docker.errors.DockerException, OSError):
            return None
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

    def tar(self, chain_id: str, diff_id: str) -> Iterator[bytes]:
        """The layer's tar as a stream of pieces; OSError at its end if not ``diff_id``."""
        digest = hashlib.sha256()
        pending: list[bytes] = []
        held = 0
        for raw, path, size in self._files(chain_id):
            if raw is not None:
                pending.append(raw)
                held += len(raw)
            else:
                assert path is not None
                for data in _read_exactly(path, size):
                    pending.append(data)
                    held += len(data)
                    if held >= _PIECE:
                        piece = b"".join(pending)
                        pending, held = [], 0
                        digest.update(piece)
                        yield piece
        piece = b"".join(pending)
        digest.update(piece)
        if f"sha256:{digest.hexdigest()}" != diff_id:
            raise OSError(f"reassembled layer does not match {diff_id}")
        # The last piece goes only once the whole layer is known to be right.
        yield piece


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

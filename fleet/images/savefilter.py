"""A ``docker save`` stream without the layers a receiver already has: the save filter.

Standard library only, and no imports from fleet: besides being imported here, this
module's own source runs on a build host (``python3 -c SOURCE CHAIN=DIFF ...`` after
``docker save``), so that the layers the controller has never cross the network.

``docker save`` (legacy layout) names each layer's directory by a v1 ID that is not in
the image's config; :func:`v1_candidates` recomputes it from the directory's ``json``
file, which the stream carries before the directory's ``layer.tar``. Newer engines also
write each layer as ``blobs/sha256/<diff ID>``, which is dropped by name.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

_GO_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def go_json(value: Any) -> str:
    """JSON as Go's encoding/json writes it: compact, HTML characters escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in _GO_ESCAPES:
        text = text.replace(char, escaped)
    return text


def v1_candidates(document: Mapping[str, Any], chain: str) -> Iterator[str]:
    """Docker's legacy v1 layer IDs for a layer ``json`` file, assuming chain ID ``chain``.

    ``docker save`` names each layer directory ``sha256(json of the v1 config, minus its
    id, plus "layer_id": chain and "parent": parent)``; lower layers were hashed before
    ``os`` was set. Recomputing it tells which layer a directory holds *before* its data
    arrives, so the stream is never buffered.
    """
    for drop in ((), ("os",)):
        fields = {k: go_json(v) for k, v in document.items() if k != "id" and k not in drop}
        if "parent" in document:
            fields["parent"] = go_json("sha256:" + str(document["parent"]))
        fields["layer_id"] = go_json(chain)
        text = "{" + ",".join(go_json(k) + ":" + fields[k] for k in sorted(fields)) + "}"
        yield hashlib.sha256(text.encode()).hexdigest()


def filter_save(source: IO[bytes], sink: IO[bytes], drop: Mapping[str, str]) -> int:
    """Copy a ``docker save`` tar from ``source`` to ``sink`` without the layers ``drop``.

    ``drop`` maps chain IDs to diff IDs. Returns how many layer members were left out.
    """
    dropped_dirs: set[str] = set()
    blob_names = {f"blobs/sha256/{diff.removeprefix('sha256:')}" for diff in drop.values()}
    left_out = 0
    with (
        tarfile.open(fileobj=source, mode="r|") as tar,
        tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as out,
    ):
        for info in tar:
            directory, _, base = info.name.rpartition("/")
            if info.isfile() and base == "json" and directory and "/" not in directory:
                data = tar.extractfile(info)
                raw = data.read() if data is not None else b""
                try:
                    document = json.loads(raw)
                except ValueError:
                    document = None
                if isinstance(document, dict):
                    for chain in drop:
                        if directory in set(v1_candidates(document, chain)):
                            dropped_dirs.add(directory)
                            break
                out.addfile(info, _Bytes(raw))
                continue
            if (base == "layer.tar" and directory in dropped_dirs) or info.name in blob_names:
                left_out += 1
                continue
            out.addfile(info, tar.extractfile(info) if info.isfile() else None)
    return left_out


class _Bytes:
    """A file-like view of bytes already read (tarfile reads members once in a stream)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk = self._data[self._at : end]
        self._at += len(chunk)
        return chunk


def main(argv: Sequence[str]) -> int:
    """``python3 -c SOURCE CHAIN=DIFF ...``: filter stdin to stdout."""
    drop = dict(arg.split("=", 1) for arg in argv)
    filter_save(sys.stdin.buffer, sys.stdout.buffer, drop)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

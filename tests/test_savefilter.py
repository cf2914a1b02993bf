"""The save filter: a real ``docker save`` without the layers a receiver has."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import uuid

import pytest

from fleet.images import daemon, savefilter
from tests.framework import build_image


def _members(data: bytes) -> dict[str, bytes | None]:
    """Name -> content (None for links and directories) of a tar archive."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        found: dict[str, bytes | None] = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isfile() else None
            found[member.name] = handle.read() if handle is not None else None
        return found


def _is_layer(name: str) -> bool:
    return name.endswith("/layer.tar") or name.startswith("blobs/sha256/")


@pytest.mark.docker
def test_the_layers_to_drop_are_left_out_and_everything_else_kept() -> None:
    client = daemon.connect()
    reference = f"fleet-test-savefilter-{uuid.uuid4().hex[:6]}:1"
    files = {"a": os.urandom(40_000), "b": os.urandom(30_000), "c": os.urandom(20_000)}
    build_image(client, reference, "FROM scratch\nCOPY a /a\nCOPY b /b\nCOPY c /c\n", files)
    try:
        spec = daemon.image_spec(client, reference)
        whole = b"".join(daemon.save_stream(client, reference))
        drop = dict(list(zip(spec.chain_ids, spec.diff_ids, strict=True))[:2])
        out = io.BytesIO()
        assert savefilter.filter_save(io.BytesIO(whole), out, drop) >= 2
        before, after = _members(whole), _members(out.getvalue())
        # Only layer data went, and what layer data is left is the top layer's.
        assert before.keys() > after.keys()
        assert all(_is_layer(name) for name in before.keys() - after.keys())
        top = spec.diff_ids[2].removeprefix("sha256:")
        kept = [data for name, data in after.items() if _is_layer(name) and data is not None]
        assert kept and all(hashlib.sha256(data).hexdigest() == top for data in kept)
        assert {k: v for k, v in after.items() if not _is_layer(k)} == {
            k: v for k, v in before.items() if not _is_layer(k)
        }
    finally:
        client.images.remove(reference, force=True)

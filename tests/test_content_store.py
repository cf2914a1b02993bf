"""The controller's containerd content store, read as a directory of blobs: an image's
config and layers found through its index and manifest, each layer unpacked and checked.
The store here is written by the test in containerd's layout (blobs/sha256/<hex>)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from fleet.hostoutput import store_of
from fleet.images.spec import chain_ids
from fleet.images.store import ContentStore, Descriptor, named_by_config


def digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def layer_tar(name: str, size: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(range(256)) * (size // 256)))
    return out.getvalue()


class Store:
    """A content store on disk with one image: an uncompressed and a gzip'd layer."""

    def __init__(self, root: Path, *, sizes: bool = False) -> None:
        """``sizes``: the manifest gives each layer's size (as real manifests do)."""
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True)
        self.tars = [layer_tar("a", 1 << 20), layer_tar("b", 3 << 20)]
        # The second layer as two concatenated gzip members, as parallel gzip writes it.
        half = len(self.tars[1]) // 2
        packed = gzip.compress(self.tars[1][:half]) + gzip.compress(self.tars[1][half:])
        self.diff_ids = [digest(t) for t in self.tars]
        config = json.dumps({"rootfs": {"type": "layers", "diff_ids": self.diff_ids}}).encode()
        self.config = config
        layers = [
            ("application/vnd.oci.image.layer.v1.tar", self.put(self.tars[0])),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", self.put(packed)),
        ]
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"digest": self.put(config), "size": len(config)},
                "layers": [
                    {
                        "mediaType": m,
                        "digest": d,
                        **({"size": (self.blobs / d[7:]).stat().st_size} if sizes else {}),
                    }
                    for m, d in layers
                ],
            }
        ).encode()
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    # another platform's manifest, whose blobs were never pulled
                    {"digest": digest(b"arm64"), "platform": {"os": "linux"}},
                    {"digest": self.put(manifest), "platform": {"os": "linux"}},
                ],
            }
        ).encode()
        self.image_id = self.put(index)
        self.packed = layers[1][1]

    def put(self, data: bytes) -> str:
        name = digest(data)
        (self.blobs / name[7:]).write_bytes(data)
        return name


def test_an_image_is_found_through_its_index_and_its_layers_unpack_to_their_diff_ids(
    tmp_path: Path,
) -> None:
    made = Store(tmp_path / "content")
    store = ContentStore(tmp_path / "content", tmp_path / "sizes.json")
    chains = chain_ids(made.diff_ids)
    assert store.resolve(made.image_id, chains) == digest(made.config)
    assert store.config(digest(made.config)) == made.config
    for chain, diff_id, tar in zip(chains, made.diff_ids, made.tars, strict=True):
        pieces = list(store.tar(chain, diff_id))
        assert b"".join(pieces) == tar
        assert max(map(len, pieces)) <= 2 << 20  # streamed, never whole
        assert store.check(chain) == store.tar_size(chain) == len(tar)
    # a compressed blob's tar size is learnt once and kept
    assert json.loads((tmp_path / "sizes.json").read_text()) == {made.packed: len(made.tars[1])}
    again = ContentStore(tmp_path / "content", tmp_path / "sizes.json")
    again.resolve(made.image_id, chains)
    (made.blobs / made.packed[7:]).write_bytes(b"")  # unreadable now: the cache answers
    assert again.tar_size(chains[1]) == len(made.tars[1])


def test_a_layer_that_is_not_its_diff_id_or_a_blob_not_its_digest_fails_at_its_end(
    tmp_path: Path,
) -> None:
    made = Store(tmp_path / "content")
    store = ContentStore(tmp_path / "content")
    chains = chain_ids(made.diff_ids)
    store.resolve(made.image_id, chains)
    with pytest.raises(OSError, match="does not unpack to"):
        list(store.tar(chains[0], made.diff_ids[1]))
    blob = made.blobs / made.packed[7:]
    blob.write_bytes(gzip.compress(made.tars[1]))  # same tar, other bytes: not the blob
    with pytest.raises(OSError, match="does not match its digest"):
        list(store.tar(chains[1], made.diff_ids[1]))


def test_a_compressed_blob_is_offered_as_it_is_stored_and_read_checked(tmp_path: Path) -> None:
    made = Store(tmp_path / "content")
    store = ContentStore(tmp_path / "content")
    chains = chain_ids(made.diff_ids)
    store.resolve(made.image_id, chains)
    assert store.stored(chains[0]) is None  # a plain tar blob: it goes as its tar
    packed = (made.blobs / made.packed[7:]).read_bytes()
    descriptor = store.stored(chains[1])
    assert descriptor == Descriptor(
        "application/vnd.docker.image.rootfs.diff.tar.gzip", made.packed, len(packed)
    )
    assert b"".join(store.blob(chains[1])) == packed
    # A blob changed on disk since: refused at its end, before its last piece goes.
    (made.blobs / made.packed[7:]).write_bytes(packed[:-1] + bytes([packed[-1] ^ 1]))
    pieces = store.blob(chains[1])
    with pytest.raises(OSError, match="does not match its digest"):
        next(pieces)
    # A blob whose size is not the manifest's is not offered as stored.
    (made.blobs / made.packed[7:]).write_bytes(packed + b"x")
    sized = Store(tmp_path / "sized", sizes=True)
    store = ContentStore(tmp_path / "sized")
    store.resolve(sized.image_id, chains)
    assert store.stored(chains[1]) is not None
    (sized.blobs / sized.packed[7:]).write_bytes(b"short")
    assert store.stored(chains[1]) is None


def _saved(made: Store, extra: dict[str, bytes]) -> list[bytes]:
    """``made``'s blobs as docker save on a containerd store writes them, plus ``extra``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        files = {f"blobs/sha256/{p.name}": p.read_bytes() for p in made.blobs.iterdir()}
        for name, data in {**files, "index.json": b"{}", **extra}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = out.getvalue()
    return [raw[i : i + 4096] for i in range(0, len(raw), 4096)]  # a stream of chunks


def test_a_docker_save_copy_is_a_store_of_checked_blobs_that_goes_with_its_object(
    tmp_path: Path,
) -> None:
    import gc

    made = Store(tmp_path / "content")
    hostile = {"blobs/sha256/../../escape": b"x", f"blobs/sha256/{'0' * 63}/x": b"y"}
    copy = ContentStore.saved(_saved(made, hostile), "the store is root's")
    assert (copy.source, copy.why) == ("docker save copy", "the store is root's")
    directory = copy.blobs.parent.parent
    assert sorted(p.name for p in copy.blobs.iterdir()) == sorted(
        p.name for p in made.blobs.iterdir()
    )
    assert not (directory.parent / "escape").exists()
    chains = chain_ids(made.diff_ids)
    assert copy.resolve(made.image_id, chains) == digest(made.config)
    assert b"".join(copy.tar(chains[1], made.diff_ids[1])) == made.tars[1]
    del copy
    gc.collect()
    assert not directory.exists()  # the copy goes with its store
    wrong = {f"blobs/sha256/{'1' * 64}": b"not that digest"}
    with pytest.raises(OSError, match="not its digest"):
        ContentStore.saved(_saved(made, wrong), "")


def test_a_controllers_versions_get_their_config_digests_from_its_content_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleet.images.labels import ImageVersion

    made = Store(tmp_path / "root" / "containerd" / "daemon" / "io.containerd.content.v1.content")
    monkeypatch.delenv("FLEET_ENGINE_ROOT", raising=False)
    info = {
        "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
        "DockerRootDir": str(tmp_path / "root"),
    }
    fields = dict.fromkeys(("repository", "tag", "created", "build_date", "commit"), "")
    ours = ImageVersion(
        **fields,
        image_id=made.image_id,
        short_commit="",
        branch=None,
        dirty=False,
        commit_count=1,
        version="0.2.1",
        size=0,
        tagged=True,
        docker_cmd="",
    )
    gone = dataclasses.replace(ours, image_id=digest(b"removed meanwhile"))
    named = named_by_config([ours, gone], info)
    assert [v.config_digest for v in named] == [digest(made.config), ""]
    classic = {"DriverStatus": [["Backing Filesystem", "extfs"]]}
    assert named_by_config([ours], classic) == [ours]
    unreadable = {**info, "DockerRootDir": str(tmp_path / "elsewhere")}
    assert named_by_config([ours], unreadable) == [ours]  # compared by labels instead


def test_what_is_not_a_store_of_this_image_is_refused(tmp_path: Path) -> None:
    made = Store(tmp_path / "content")
    store = ContentStore(tmp_path / "content")
    with pytest.raises(OSError, match="not a sha256 digest"):
        store.resolve("sha256:../../etc/passwd", [])
    with pytest.raises(OSError, match="does not list the image's layers"):
        store.resolve(made.image_id, chain_ids(made.diff_ids[:1]))
    with pytest.raises(OSError, match="of no resolved image"):
        store.tar_size(chain_ids(made.diff_ids)[0])


def test_which_engines_keep_images_in_containerd() -> None:
    assert store_of([["driver-type", "io.containerd.snapshotter.v1"]]) == "containerd"
    assert store_of([["Backing Filesystem", "extfs"]]) == "classic"
    assert store_of(None) == "classic"

"""Transfer planning and the stream format, from states recorded on the lab's hosts."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

import pytest

from fleet.errors import HostError
from fleet.images import savefilter
from fleet.images.labels import normalized_name
from fleet.images.spec import ImageSpec, chain_ids
from fleet.images.store import Descriptor
from fleet.ship.codec import Encoder, zstd_program
from fleet.ship.plan import disk_needed, pull_plan, wire_compression, zstd_loads
from fleet.ship.plan import plan as ship_plan
from fleet.ship.state import HostImageState, engine_fix, is_current, parse_state
from fleet.ship.stream import Broadcast, ImageStream, Sink, identify_by_digest

FIXTURES = Path(__file__).parent / "fixtures" / "transfer"
# cauchy:0.2.3 as built on the controller when the fixtures were recorded.
SPEC = ImageSpec(
    "cauchy:0.2.3",
    "sha256:c7227963f03904824365555c726e9c575b4dc5fb57bc73a4489a10f73e2c4e86",
    (
        "sha256:c473b14f4a0bfdb36e90404acdb326e16dfac65f9c90c33579c8e78b5958951a",
        "sha256:0fd2eacb7785f36f9d3f2f3a52705bd581fbddde034d91e00a16c7818d72c334",
        "sha256:999a40c64ee6077a92ae3bb0b483c05c6a418d93ad5b5dfde87b90c3f7faf329",
        "sha256:a1797895f8972fb3712c6050e7b766d790faa73acaf067168ec122d0796c8bff",
        "sha256:c021fea5422181b46d4c8746fa73c46e5415995963d7d774a141b5356e878eda",
        "sha256:d107795b09ced1858f645338965319932c674cc0a2454d3820e623429a275858",
        "sha256:093131973c84049160288607f2167fd3b6d4e55b7a3a38f0a463e035943db446",
    ),
)


def state(name: str) -> HostImageState:
    return parse_state((FIXTURES / f"state-{name}.txt").read_text())


def test_chain_ids_follow_dockers_rule() -> None:
    chains = chain_ids(["sha256:aa", "sha256:bb", "sha256:cc"])
    assert chains[0] == "sha256:aa"
    second = "sha256:" + hashlib.sha256(b"sha256:aa sha256:bb").hexdigest()
    assert chains[1] == second
    assert chains[2] == "sha256:" + hashlib.sha256(f"{second} sha256:cc".encode()).hexdigest()


def test_layer_of_unknown_v1_id_is_identified_by_its_digest() -> None:
    data = b"layer bytes" * 1000
    diff = "sha256:" + hashlib.sha256(data).hexdigest()
    spec = ImageSpec("x:1", "sha256:" + "0" * 64, ("sha256:" + "1" * 64, diff))
    index, chunks = identify_by_digest(spec, io.BytesIO(data))
    assert index == 1
    assert b"".join(chunks) == data
    with pytest.raises(HostError, match="not in the image"):
        identify_by_digest(spec, io.BytesIO(b"other"))


def test_classic_host_with_the_image_is_current() -> None:
    found = state("classic-current")
    assert found.engine_ok and found.store == "classic"
    assert found.target_id == SPEC.config_digest and found.target_listed
    plan = ship_plan("lab1", SPEC, found)
    assert plan.up_to_date and plan.send == frozenset()


def test_containerd_host_with_the_image_is_current_by_its_manifests_config() -> None:
    found = state("containerd-current")
    assert found.store == "containerd"
    assert found.target_id != SPEC.config_digest  # the manifest's digest on this store
    assert found.target_config == SPEC.config_digest
    assert ship_plan("lab2", SPEC, found).up_to_date


def test_new_top_layer_is_all_a_classic_host_lacks() -> None:
    newer = ImageSpec(
        "cauchy:0.2.4", "sha256:" + "1" * 64, (*SPEC.diff_ids[:-1], "sha256:" + "2" * 64)
    )
    plan = ship_plan("lab1", newer, state("classic-missing"))
    assert not plan.up_to_date
    assert plan.send == frozenset({6})


def test_same_layer_on_another_parent_is_not_present_on_classic() -> None:
    # Chains, not diff IDs: layer 6 alone, without its parents, is not "present".
    moved = ImageSpec("x:1", "sha256:" + "3" * 64, ("sha256:" + "4" * 64, SPEC.diff_ids[6]))
    assert ship_plan("lab1", moved, state("classic-missing")).send == frozenset({0, 1})


def test_containerd_leaves_out_only_blobs_its_content_store_lists() -> None:
    found = state("containerd-missing")
    assert found.content is not None and SPEC.diff_ids[0] in found.content
    newer = ImageSpec(
        "cauchy:0.2.4", "sha256:" + "1" * 64, (*SPEC.diff_ids[:-1], "sha256:" + "2" * 64)
    )
    assert ship_plan("lab2", newer, found).send == frozenset({6})


def test_containerd_without_a_readable_content_store_gets_every_layer() -> None:
    text = (FIXTURES / "state-containerd-missing.txt").read_text()
    text = text.replace("@@content_rc 0", "@@content_rc 1")
    found = parse_state(text)
    assert found.content is None
    plan = ship_plan("lab2", SPEC, found)
    assert plan.send == frozenset(range(7))
    assert "sending every layer" in plan.reason


def test_engine_down_is_reported_with_its_words() -> None:
    found = parse_state(
        "@@engine\nCannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?\n@@engine_rc 1\n@@end\n"
    )
    assert not found.engine_ok
    assert "Cannot connect" in found.engine_error
    assert "start the host's Docker engine" in engine_fix(found.engine_error)
    assert "docker' group" in engine_fix("permission denied while trying to connect")


def test_v1_directories_are_recognised_before_their_data() -> None:
    # Recorded from a real 'docker save' (Engine 20.10) of a 7-layer image.
    diff_ids = [
        "sha256:c473b14f4a0bfdb36e90404acdb326e16dfac65f9c90c33579c8e78b5958951a",
        "sha256:0ce0aa1dc5d8de7f95949727e155c8a8fdab8aad21d0ab35fe88273c6056a077",
        "sha256:abaa8fedfacd9a9e90170fe62b757770c5933547c4469330d10adaecc3fe5eef",
        "sha256:f2d49bd89102c00a60c9ee07851e5a2eb6f5391225be4f33e6ba7264035192df",
        "sha256:a9f04adc79d18aea122e50d635c0b0466496fce23017c49accf42b494ef75f3b",
        "sha256:9264ec6b5c1b12ace3680e06bd6aa1634b74e5fd94b7a13905394e65e99eda91",
        "sha256:9d899604dd3b7d308fe0e3f7306828b1cef98ae007293c73e2747524ed54428a",
    ]
    expected = {
        "e24cd8d06713": 0,
        "1b2326882af1": 1,
        "7b063d4874e7": 2,
        "cfdb84a1226a": 3,
        "38b3a9fc822e": 4,
        "7a7cd5c5e5fb": 5,
        "4f688140ca76": 6,
    }
    chains = chain_ids(diff_ids)
    for path in sorted((FIXTURES / "v1").glob("*.json")):
        document = json.loads(path.read_text())
        found = [
            i
            for i, chain in enumerate(chains)
            if path.stem in savefilter.v1_candidates(document, chain)
        ]
        assert found == [expected[path.stem[:12]]], path.name


def test_normalized_names() -> None:
    assert normalized_name("cauchy:0.2.7") == "docker.io/library/cauchy:0.2.7"
    assert normalized_name("lab/cauchy:1") == "docker.io/lab/cauchy:1"
    assert normalized_name("reg.example:5000/cauchy:1") == "reg.example:5000/cauchy:1"
    assert normalized_name("cauchy") == "docker.io/library/cauchy:latest"


def test_disk_needed_counts_the_missing_layers_twice_on_both_stores() -> None:
    # Measured: classic 20.10 spools the tarball under <root>/tmp before unpacking it.
    classic = disk_needed([10, 20, 30], {1, 2}, "classic")
    assert (classic.staged, classic.unpacked, classic.total) == (50, 50, 100)
    assert "spool under <root>/tmp" in classic.describe()
    containerd = disk_needed([10 << 30, 20 << 30, 30 << 30], {1, 2}, "containerd")
    assert containerd.total == 100 << 30
    assert containerd.describe() == (
        "100.0GiB (50.0GiB the content store's blobs + 50.0GiB unpacked)"
    )
    # A layer sent as the controller's gzip blob is staged as that blob.
    blob = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", f"sha256:{'1' * 64}", 8)
    both = disk_needed([10, 20, 30], {1, 2}, "containerd", {2: blob})
    assert (both.staged, both.unpacked, both.total) == (28, 50, 78)


# -- the stream, on the controller's engine ---------------------------------------------
@pytest.fixture(scope="module")
def small_image():
    docker = pytest.importorskip("docker")
    from fleet.images import daemon
    from fleet.lab import nodes as lab

    client = lab.engine_client()
    lab.ensure_layer1_image(client)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = b"FROM fleet-lab-layer1:bookworm\nRUN echo one > /one\nRUN echo two > /two\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag="fleet-test-stream:1", rm=True)
    yield client, daemon.image_spec(client, "fleet-test-stream:1")
    with contextlib.suppress(docker.errors.NotFound):
        client.images.remove("fleet-test-stream:1", force=True)


def _gunzipped_size(data: bytes) -> int:
    """The size of a (multi-member) gzip stream once unpacked, read in pieces."""
    total = 0
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as unpacked:
        while piece := unpacked.read(1 << 20):
            total += len(piece)
    return total


def _members(raw: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


@pytest.mark.docker
def test_dual_tarball_has_both_manifests_and_only_wanted_layers(small_image) -> None:
    from fleet.images import daemon

    client, spec = small_image
    broadcast = Broadcast(spec, lambda: daemon.save_stream(client, spec.ref), "gzip")
    everything = Sink("a", frozenset(range(len(spec.diff_ids))))
    top_only = Sink("b", frozenset({len(spec.diff_ids) - 1}))
    import threading

    outputs: dict[str, bytes] = {}

    def drain(sink: Sink) -> None:
        outputs[sink.host] = b"".join(sink.chunks())

    readers = [threading.Thread(target=drain, args=(s,)) for s in (everything, top_only)]
    for reader in readers:
        reader.start()
    broadcast.run([everything, top_only])
    for reader in readers:
        reader.join()
    assert broadcast.error is None
    full = _members(gzip.decompress(outputs["a"]))
    thin = _members(gzip.decompress(outputs["b"]))
    blobs = {f"blobs/sha256/{d[7:]}" for d in spec.diff_ids}
    assert blobs <= set(full)
    assert set(thin) & blobs == {f"blobs/sha256/{spec.diff_ids[-1][7:]}"}
    for name in (
        "oci-layout",
        "index.json",
        "manifest.json",
        f"blobs/sha256/{spec.config_digest[7:]}",
    ):
        assert name in full and full[name] == thin[name]
    legacy = json.loads(full["manifest.json"])
    assert legacy[0]["RepoTags"] == [spec.ref]
    assert legacy[0]["Layers"] == [f"blobs/sha256/{d[7:]}" for d in spec.diff_ids]
    index = json.loads(full["index.json"])
    annotations = index["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] == "docker.io/library/fleet-test-stream:1"
    manifest = full[f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"]
    assert [layer["digest"] for layer in json.loads(manifest)["layers"]] == list(spec.diff_ids)
    # Every blob is what its name says: the receiving store checks digests.
    for name, data in full.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    # Progress counts tar bytes, exactly what each host's stream unpacks to.
    assert everything.raw == _gunzipped_size(outputs["a"])
    assert top_only.raw == _gunzipped_size(outputs["b"])
    # The thin stream is a small fraction of the full one: only the top layer travels.
    assert len(outputs["b"]) < len(outputs["a"]) / 10
    # Compressed once: a later wave is replayed from the cache, byte for byte.
    again = Sink("c", frozenset({len(spec.diff_ids) - 1}))
    reader = threading.Thread(target=drain, args=(again,))
    reader.start()
    broadcast.run([again])
    reader.join()
    assert outputs["c"] == outputs["b"]
    assert again.raw == top_only.raw


@pytest.mark.docker
def test_uncompressed_stream_is_a_plain_tar(small_image, tmp_path: Path) -> None:
    from fleet.images import daemon

    client, spec = small_image
    stream = ImageStream(spec, lambda: daemon.save_stream(client, spec.ref), "none")
    archive = tmp_path / "image.tar"
    with archive.open("wb") as out:  # on disk: the 190 MB image is never held in memory
        for _, chunks in stream.members():
            for chunk in chunks:
                out.write(chunk)
    bottom = f"blobs/sha256/{spec.diff_ids[0][7:]}"
    with tarfile.open(archive, mode="r:") as tar:
        member = tar.getmember(bottom)
        assert member.size == stream.layer_sizes[0] > 1_000_000
        digest = hashlib.sha256()
        layer = tar.extractfile(member)
        assert layer is not None
        while piece := layer.read(1 << 20):
            digest.update(piece)
    assert f"sha256:{digest.hexdigest()}" == spec.diff_ids[0]


@pytest.mark.docker
def test_local_store_gives_the_same_stream_as_docker_save(small_image) -> None:
    from fleet.images import daemon

    client, spec = small_image
    local = daemon.local_layers(client)
    # CI's controller engine is a classic overlay2 store: the path must be exercised there.
    assert local is not None, "the controller's store is not a readable classic overlay2 store"
    chains = spec.chain_ids
    bottom = 0  # the lab's layer 1: 190 MB, so it comes in many pieces, none held long
    count = total = largest = 0
    for piece in local.tar(chains[bottom], spec.diff_ids[bottom]):
        count, total, largest = count + 1, total + len(piece), max(largest, len(piece))
    assert count > 10 and largest <= 2 << 20, "a layer is never held whole"
    assert local.tar_size(chains[bottom]) == local.check(chains[bottom]) == total
    wrong = local.tar(chains[bottom], spec.diff_ids[1])
    first = next(wrong)  # streamed before the digest is known ...
    assert first
    with pytest.raises(OSError, match="does not match"):
        for _ in wrong:  # ... and refused at the end, before its last piece
            pass

    def digests(members) -> dict[str, str]:
        found = {}
        for member, chunks in members:
            digest = hashlib.sha256()
            for chunk in chunks:
                digest.update(chunk)
            found[member.key] = digest.hexdigest()
        return found

    top = len(spec.diff_ids) - 1
    saved = ImageStream(spec, lambda: daemon.save_stream(client, spec.ref), "none")
    wanted = ((m, c) for m, c in saved.members() if m.layer in (None, 0, top))
    from_save = digests(wanted)
    read = ImageStream(spec, lambda: iter(()), "none")
    assert digests(read.local_members(local, {0, top})) == from_save
    assert read.layer_sizes == saved.layer_sizes


class BrokenStore:
    """A LayerSource whose layer turns out wrong halfway, as a corrupted store's would."""

    source, why = "local store", ""

    def __init__(self, config: bytes) -> None:
        self._config = config

    def config(self, image_id: str) -> bytes:
        return self._config

    def tar_size(self, chain_id: str) -> int:
        return 3 << 20

    def check(self, chain_id: str) -> int:
        return self.tar_size(chain_id)

    def tar(self, chain_id: str, diff_id: str):
        yield b"x" * (1 << 20)
        raise OSError(f"reassembled layer does not match {diff_id}")


def test_a_layer_that_fails_midway_ends_the_stream_before_any_manifest() -> None:
    config = b'{"rootfs":{"diff_ids":[]}}'
    spec = ImageSpec(
        "broken:1", f"sha256:{hashlib.sha256(config).hexdigest()}", ("sha256:" + "a" * 64,)
    )
    broadcast = Broadcast(spec, lambda: iter(()), "none", BrokenStore(config))
    sink = Sink("a", frozenset({0}))
    import threading

    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(sink.chunks()))
    reader.start()
    broadcast.run([sink])
    reader.join()
    assert isinstance(broadcast.error, OSError) and "does not match" in str(broadcast.error)
    assert broadcast.source == "local store"
    wire = b"".join(got)
    assert wire.startswith(b"blobs/sha256/" + b"a" * 64)  # the layer's header went out
    for name in (b"index.json", b"manifest.json", b"oci-layout"):
        assert name not in wire  # so no engine can load what arrived


def test_parallel_gzip_is_one_stream_that_stores_what_does_not_shrink() -> None:
    import os

    from fleet.ship.codec import GZIP_BLOCK, gzip_level

    text = b"".join(b"line %d of a library file\n" % i for i in range(400_000))
    noise = os.urandom(3 * GZIP_BLOCK)
    encoder = Encoder("gzip")
    encoder.start(1 << 30)  # a large member: blocks on every core
    wire = b""
    for part in (text, noise):
        for start in range(0, len(part), 1 << 20):
            wire += encoder.feed(part[start : start + (1 << 20)])
    wire += encoder.finish()
    assert gzip.decompress(wire) == text + noise  # any gunzip reads it as one stream
    assert wire.count(b"\x1f\x8b\x08") >= (len(text) + len(noise)) // GZIP_BLOCK
    assert len(wire) < len(text) / 5 + len(noise) * 1.01
    # Random blocks are stored, not squeezed for nothing; library-like ones are compressed.
    assert gzip_level(noise[:GZIP_BLOCK], 1) == 0
    assert gzip_level(text[:GZIP_BLOCK], 1) == 1
    half = noise[: GZIP_BLOCK // 2] + text[: GZIP_BLOCK // 2]
    assert gzip_level(half, 6) == 6  # the sample is the middle: text there


# -- compression per host ----------------------------------------------------------------
def test_zstd_goes_only_to_engines_that_load_it() -> None:
    assert not zstd_loads("20.10.24+dfsg1")  # measured: "invalid tar header"
    assert zstd_loads("26.1.5+dfsg1")  # measured: loads, concatenated frames too
    assert zstd_loads("23.0.0")
    assert not zstd_loads("")
    classic = HostImageState(True, engine_version="20.10.24")
    recent = HostImageState(True, engine_version="26.1.5")
    assert wire_compression("zstd", classic) == "gzip"
    assert wire_compression("zstd", recent) == "zstd"
    assert wire_compression("none", classic) == "none"
    # The default: zstd wherever it loads (CI's controller has the zstd program).
    assert zstd_program() is not None, "setup installs zstd: the default depends on it"
    assert wire_compression("auto", classic) == "gzip"
    assert wire_compression("auto", recent) == "zstd"
    found = state("containerd-current")
    assert found.engine_version[:1].isdigit()


needs_zstd = pytest.mark.skipif(zstd_program() is None, reason="no zstd program")


@needs_zstd
def test_zstd_members_concatenate_into_one_stream() -> None:
    import subprocess

    encoder = Encoder("zstd")
    parts = [b"header" * 100, bytes(range(256)) * 5000, b"end"]
    wire = b""
    for index, part in enumerate(parts):
        encoder.start(len(part) if index else 1 << 30)  # both levels
        wire += encoder.feed(part[:1000]) + encoder.feed(part[1000:]) + encoder.finish()
    assert wire[:4] == b"\x28\xb5\x2f\xfd"  # zstd's magic number
    assert len(wire) < sum(map(len, parts)) / 10
    decoded = subprocess.run(["zstd", "-d", "-c"], input=wire, capture_output=True, check=True)
    assert decoded.stdout == b"".join(parts)


@needs_zstd
def test_an_abandoned_zstd_member_leaves_no_process() -> None:
    encoder = Encoder("zstd")
    encoder.start(10)
    frame = encoder._zip
    encoder.feed(b"partial")
    encoder.abort()
    assert frame._process.poll() is not None


def test_registry_manifests_spread_over_many_lines_still_verify() -> None:
    text = (FIXTURES / "state-containerd-current.txt").read_text()
    head, _, rest = text.partition("@@target_manifest\n")
    line, _, tail = rest.partition("\n")
    pretty = json.dumps(json.loads(line), indent=3)  # as 'docker push' writes manifests
    found = parse_state(f"{head}@@target_manifest\n{pretty}\n{tail}")
    assert found.target_config == SPEC.config_digest
    assert is_current(SPEC, found)


def test_a_pull_plans_by_layer_chains_on_both_stores() -> None:
    newer = ImageSpec(
        "cauchy:0.2.4", "sha256:" + "1" * 64, (*SPEC.diff_ids[:-1], "sha256:" + "2" * 64)
    )
    for name in ("classic-current", "containerd-current"):
        plan = pull_plan("h", newer, state(name))
        assert plan.send == frozenset({6}), name
        assert pull_plan("h", SPEC, state(name)).up_to_date


# -- bandwidth ---------------------------------------------------------------------------
def test_token_bucket_lends_and_makes_later_takers_repay() -> None:
    from fleet.ship.bandwidth import TokenBucket

    now = [0.0]
    bucket = TokenBucket(1000, burst=100, clock=lambda: now[0])
    assert bucket.reserve(100) == 0  # the burst
    assert bucket.reserve(500) == pytest.approx(0.5)  # in debt: wait half a second
    assert bucket.reserve(500) == pytest.approx(1.0)  # queued behind the first debt
    now[0] = 1.0
    assert bucket.reserve(0) == pytest.approx(0.0)


def test_limits_share_one_total_bucket_and_give_each_host_its_own() -> None:
    from fleet.ship.bandwidth import Limits

    assert Limits().for_host() is None
    limits = Limits(total=1000, per_host=500)
    one, two = limits.for_host(), limits.for_host()
    assert one is not None and two is not None
    assert one.buckets[0] is two.buckets[0]  # the total
    assert one.buckets[1] is not two.buckets[1]  # each host's


def test_a_throttled_sink_takes_at_least_size_over_rate() -> None:
    from fleet.ship.bandwidth import Limits

    size, rate = 3 << 20, 4 << 20  # 3 MiB at 4 MiB/s: at least 0.75 s
    limits = Limits(total=rate)
    sinks = [Sink(name, frozenset(), limits.for_host()) for name in ("a", "b")]

    def produce(sink: Sink) -> None:
        for _ in range(size // len(sinks) >> 16):
            sink.put(b"\0" * (1 << 16))
        sink.put(None)

    import threading

    counted: list[int] = []
    started = time.monotonic()
    threads = [threading.Thread(target=produce, args=(s,)) for s in sinks]
    threads += [
        threading.Thread(target=lambda s=s: counted.append(sum(map(len, s.chunks()))))
        for s in sinks
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - started
    assert sum(counted) == size
    assert took >= size / rate * 0.8, took  # the total holds for both hosts together
    assert took < size / rate * 4 + 2, took


# -- layers a containerd host holds only compressed ----------------------------------------
LISTING = """@@content
DIGEST\tSIZE\tAGE\tLABELS
sha256:{blob}\t67.41MB\t2 seconds\tcontainerd.io/distribution.source.127.0.0.1=fleet/x,containerd.io/uncompressed=sha256:{diff}
sha256:{manifest}\t1.775kB\t2 seconds\tcontainerd.io/gc.ref.content.config=sha256:{config},containerd.io/gc.ref.content.l.0=sha256:{blob}
sha256:{config}\t14.49kB\t2 seconds\tcontainerd.io/gc.ref.snapshot.overlayfs=sha256:{diff}
@@content_rc 0
"""


def test_a_content_listing_says_which_layers_are_held_compressed_and_where() -> None:
    from fleet.ship.state import _content_listing

    names = {"blob": "b" * 64, "diff": "d" * 64, "manifest": "e" * 64, "config": "c" * 64}
    lines = [line.strip() for line in LISTING.format(**names).splitlines()[1:-1]]
    compressed: dict[str, str] = {}
    manifests: dict[str, list[str]] = {}
    digests = _content_listing(lines, compressed, manifests)
    assert digests == [f"sha256:{names[k]}" for k in ("blob", "manifest", "config")]
    assert compressed == {f"sha256:{'d' * 64}": f"sha256:{'b' * 64}"}
    assert manifests == {f"sha256:{'b' * 64}": [f"sha256:{'e' * 64}"]}
    # The recorded states' digest-only listings (ctr content ls -q) still read.
    assert _content_listing([f"sha256:{'a' * 64}"], {}, {}) == [f"sha256:{'a' * 64}"]


@pytest.mark.hostile
def test_only_well_formed_layer_descriptors_from_a_host_are_used() -> None:
    from fleet.ship.state import Descriptor, _descriptors

    good = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": f"sha256:{'1' * 64}",
        "size": 5,
    }
    bad = [
        {**good, "digest": f"sha256:{'2' * 64}", "mediaType": "text/x-shellscript"},
        {**good, "digest": f"sha256:{'3' * 64}", "size": True},
        {**good, "digest": f"sha256:{'4' * 64}", "size": -1},
        {**good, "digest": "sha256:../../etc/passwd"},
        "not a descriptor",
    ]
    text = "@@blob x\n" + json.dumps({"layers": [good, *bad]}) + "\n@@blob y\n{not json\n@@end\n"
    assert _descriptors(text) == {good["digest"]: Descriptor(good["mediaType"], good["digest"], 5)}


class MemoryStore:
    """A LayerSource of our own interface holding two layers in memory."""

    source, why = "local store", ""

    def __init__(self, config: bytes, layers: list[bytes]) -> None:
        self._config, self.layers = config, layers

    def config(self, image_id: str) -> bytes:
        return self._config

    def tar_size(self, chain_id: str) -> int:
        return len(self.layers[0])

    def check(self, chain_id: str) -> int:
        return self.tar_size(chain_id)

    def tar(self, chain_id: str, diff_id: str):
        yield self.layers[int(diff_id[-1])]


def test_each_host_gets_the_manifest_naming_the_blobs_it_holds_in_every_wave() -> None:

    from fleet.ship.state import Descriptor

    config = b'{"rootfs":{}}'
    diff_ids = (f"sha256:{'0' * 64}", f"sha256:{'0' * 63}1")
    spec = ImageSpec("x:1", f"sha256:{hashlib.sha256(config).hexdigest()}", diff_ids)
    held = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", f"sha256:{'9' * 64}", 77)
    broadcast = Broadcast(
        spec, lambda: iter(()), "none", MemoryStore(config, [b"a" * 512, b"b" * 512])
    )

    def run(*sinks: Sink, replay: bool) -> dict[str, dict[str, bytes]]:
        got = _drain(broadcast, list(sinks), replay=replay)
        return {host: _members(raw) for host, raw in got.items()}

    def layers_named(files: dict[str, bytes]) -> list[dict]:
        index = json.loads(files["index.json"])
        return json.loads(files[f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"])["layers"]

    first = run(Sink("plain", frozenset({0, 1})), replay=True)
    assert [layer["digest"] for layer in layers_named(first["plain"])] == list(diff_ids)
    # A later wave (replayed from the cache) with a host that holds layer 0 compressed.
    later = run(
        Sink("holder", frozenset({1}), reuse={0: held}),
        Sink("other", frozenset({0, 1})),
        replay=False,
    )
    assert layers_named(later["holder"])[0] == held.to_json()
    assert layers_named(later["holder"])[1]["digest"] == diff_ids[1]
    assert f"blobs/sha256/{diff_ids[0][7:]}" not in later["holder"]  # not sent again
    assert [layer["digest"] for layer in layers_named(later["other"])] == list(diff_ids)


# -- layers sent as the controller stores them ---------------------------------------------
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


class BlobStore(MemoryStore):
    """A LayerSource whose second layer is stored as a gzip blob, as a content store keeps
    a pulled or built layer."""

    def __init__(self, config: bytes, layers: list[bytes]) -> None:
        super().__init__(config, layers)
        self.packed = gzip.compress(layers[1])
        self.descriptor = Descriptor(
            GZIP_LAYER, f"sha256:{hashlib.sha256(self.packed).hexdigest()}", len(self.packed)
        )
        self.tar_sizes_asked: list[str] = []

    def tar_size(self, chain_id: str) -> int:
        self.tar_sizes_asked.append(chain_id)
        return 512

    def tar(self, chain_id: str, diff_id: str):
        yield self.layers[self.chains.index(chain_id)]

    def stored(self, chain_id: str) -> Descriptor | None:
        return self.descriptor if chain_id == self.chains[1] else None

    def blob(self, chain_id: str):
        assert chain_id == self.chains[1]
        yield self.packed[:100]
        yield self.packed[100:]


def _two_layer_image() -> tuple[ImageSpec, BlobStore]:
    config = b'{"rootfs":{}}'
    layers = [b"a" * 512, b"b" * 512]
    diff_ids = tuple(f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers)
    spec = ImageSpec("x:1", f"sha256:{hashlib.sha256(config).hexdigest()}", diff_ids)
    store = BlobStore(config, layers)
    store.chains = spec.chain_ids
    return spec, store


def _drain(
    broadcast: Broadcast, sinks: list[Sink], *, replay: bool, failing: bool = False
) -> dict[str, bytes]:
    """Run ``broadcast`` into ``sinks``: what each host received (``failing``: the
    broadcast is expected to fail)."""
    import threading

    got: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda s=s: got.__setitem__(s.host, b"".join(s.chunks())))
        for s in sinks
    ]
    for reader in readers:
        reader.start()
    broadcast.run(sinks, replay=replay)
    for reader in readers:
        reader.join()
    assert (broadcast.error is not None) == failing, broadcast.error
    return got


def test_a_later_wave_gets_layers_the_first_wave_did_not_need() -> None:
    spec, store = _two_layer_image()
    thin = Sink("updated", frozenset({1}))
    fresh = Sink("fresh", frozenset({0, 1}))
    broadcast = Broadcast(spec, lambda: iter(()), "none", store, [thin, fresh])
    first = _members(_drain(broadcast, [thin], replay=True)["updated"])
    later = _members(_drain(broadcast, [fresh], replay=False)["fresh"])
    bottom = f"blobs/sha256/{spec.diff_ids[0][7:]}"
    assert bottom not in first
    assert later[bottom] == b"a" * 512  # replayed from what the first wave read


@pytest.mark.parametrize("compress", ["none", "gzip", "zstd"])
def test_a_stored_blob_goes_as_it_is_to_the_hosts_that_take_it(compress: str) -> None:
    import subprocess

    spec, store = _two_layer_image()
    blob = store.descriptor
    classic = Sink("classic", frozenset({0, 1}), stored={1: blob}, oci=False)
    containerd = Sink("containerd", frozenset({0, 1}), stored={1: blob})
    old = Sink("old", frozenset({1}))  # an engine that does not load the blob: its tar
    broadcast = Broadcast(spec, lambda: iter(()), compress, store, [classic, containerd, old])
    wires = _drain(broadcast, [classic, containerd, old], replay=False)
    decode = {
        "none": lambda raw: raw,
        "gzip": gzip.decompress,
        "zstd": lambda raw: (
            subprocess.run(["zstd", "-dc"], input=raw, capture_output=True, check=True).stdout
        ),
    }[compress]
    got = {host: _members(decode(raw)) for host, raw in wires.items()}
    blob_file = f"blobs/sha256/{blob.digest[7:]}"
    tar_file = f"blobs/sha256/{spec.diff_ids[1][7:]}"
    for host in ("classic", "containerd"):
        files = got[host]
        assert files[blob_file] == store.packed  # byte for byte, as stored
        assert tar_file not in files
        legacy = json.loads(files["manifest.json"])[0]["Layers"]
        assert legacy == [f"blobs/sha256/{spec.diff_ids[0][7:]}", blob_file]
    # A classic store reads manifest.json only: no OCI manifest, so no tar size is read
    # for the layer it gets as a blob.
    assert "index.json" not in got["classic"]
    index = json.loads(got["containerd"]["index.json"])
    manifest = json.loads(got["containerd"][f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"])
    assert manifest["layers"][1] == blob.to_json()
    assert manifest["layers"][0]["size"] == 512
    assert got["old"][tar_file] == b"b" * 512 and blob_file not in got["old"]
    assert json.loads(got["old"]["manifest.json"])[0]["Layers"][1] == tar_file
    # A classic host that gets layer 1 as a blob needs no tar size of it (the containerd
    # host's OCI manifest names the blob too): its compressed blob is never unpacked.
    spec, store = _two_layer_image()
    alone = Sink("classic", frozenset({1}), stored={1: store.descriptor}, oci=False)
    _drain(Broadcast(spec, lambda: iter(()), compress, store, [alone]), [alone], replay=False)
    assert store.chains[1] not in store.tar_sizes_asked


@needs_zstd
def test_compressed_data_is_framed_as_it_is_in_both_wire_compressions() -> None:
    import os
    import subprocess

    data = os.urandom(300 << 10)  # three raw zstd blocks, the last one partial
    for compress, decode in (
        (
            "zstd",
            lambda raw: subprocess.run(
                ["zstd", "-dc"], input=raw, capture_output=True, check=False
            ),
        ),
        ("gzip", None),
    ):
        encoder = Encoder(compress)
        for payload in (data, b""):
            encoder.start(len(payload), stored=True)
            wire = encoder.feed(payload[:1000]) + encoder.feed(payload[1000:]) + encoder.finish()
            assert len(wire) <= len(payload) + 256 + len(payload) // 1000  # framing only
            if decode is None:
                assert gzip.decompress(wire) == payload
            else:
                ran = decode(wire)
                assert ran.returncode == 0, ran.stderr
                assert ran.stdout == payload


def test_blobs_go_as_stored_to_the_engines_that_load_their_compression() -> None:
    from fleet.ship.plan import as_stored

    gz = Descriptor(GZIP_LAYER, f"sha256:{'1' * 64}", 10)
    zs = Descriptor(ZSTD_LAYER, f"sha256:{'2' * 64}", 10)
    blobs = [gz, zs, None]
    assert as_stored(blobs, {0, 1, 2}, "26.1.5") == {0: gz, 1: zs}
    assert as_stored(blobs, {0, 1, 2}, "20.10.24") == {0: gz}  # its load takes no zstd
    assert as_stored(blobs, {1}, "26.1.5") == {1: zs}  # only what the host lacks
    assert as_stored([], {0, 1}, "26.1.5") == {}  # a classic controller stores no blobs


def test_a_stored_blob_that_is_not_its_digest_fails_the_stream_before_any_manifest() -> None:
    spec, store = _two_layer_image()

    def corrupt(chain_id: str):
        yield store.packed[:100]
        raise OSError(f"blob {store.descriptor.digest} does not match its digest")

    store.blob = corrupt  # type: ignore[method-assign]
    sink = Sink("a", frozenset({1}), stored={1: store.descriptor})
    broadcast = Broadcast(spec, lambda: iter(()), "none", store, [sink])
    got = _drain(broadcast, [sink], replay=False, failing=True)
    assert isinstance(broadcast.error, OSError) and "does not match" in str(broadcast.error)
    assert b"manifest.json" not in got["a"]


def test_a_store_that_cannot_give_a_blob_sends_its_tar_from_docker_save() -> None:
    spec, store = _two_layer_image()
    store.stored = lambda chain: None  # type: ignore[method-assign]  # gone since planning
    sink = Sink("a", frozenset({1}), stored={1: store.descriptor})

    def save():
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for name, data in (
                (f"{spec.config_digest[7:]}.json", store._config),
                ("v1/layer.tar", b"b" * 512),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        yield out.getvalue()

    broadcast = Broadcast(spec, save, "none", store, [sink])
    _drain(broadcast, [sink], replay=False)
    assert broadcast.source == "docker save" and "stored blob" in broadcast.source_why
    assert sink.stored == frozenset() and not broadcast.blobs_ok

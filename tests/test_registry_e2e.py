"""End to end on the lab: fleet push --via registry, tunnelled and to a registry the hosts reach.

The registry is Debian's docker-registry (distribution 2.8) on this machine's loopback;
the hosts are the lab's classic (20.10) and containerd (26.1) engines over real SSH.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fleet.hosts import inventory
from fleet.images import daemon
from fleet.lab import nodes as lab
from fleet.results import FleetResult
from fleet.runner import Runner, SSHConnector
from fleet.ship import registry
from fleet.ship.plan import PushOptions
from fleet.ship.push import push as ship_push
from fleet.ssh.base import CommandResult, Transport
from fleet.ssh.known_hosts import KnownHosts
from fleet.ssh.paramiko_client import SSHTransport
from tests.conftest import LabFixture, host_sh, run_cli, run_json
from tests.framework import build_image

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        not os.access(registry.DEFAULT_BINARY, os.X_OK),
        reason="docker-registry is not installed (scripts/setup.sh installs it)",
    ),
]

# Per session: a concurrent session (another checkout's tests) must not remove ours.
REPO = f"fleet-test-registry-{os.getpid()}"


def _build(client, tag: str, parent: str | None, size: int) -> str:
    """An image of one more layer: ``size`` random bytes (new on every run) over ``parent``."""
    dockerfile = f"FROM {parent or 'scratch'}\nCOPY {tag} /{tag}\n"
    return build_image(client, f"{REPO}:{tag}", dockerfile, {tag: os.urandom(size)})


@pytest.fixture(scope="module")
def versions() -> Iterator[dict[str, str]]:
    client = lab.engine_client()
    refs: dict[str, str] = {}
    refs["v1"] = _build(client, "v1", None, 300_000)
    refs["v2"] = _build(client, "v2", refs["v1"], 200_000)
    refs["v3"] = _build(client, "v3", refs["v2"], 100_000)
    refs["slow"] = _build(client, "slow", refs["v1"], 3_000_000)
    refs["direct"] = _build(client, "direct", refs["v1"], 50_000)
    yield refs
    for ref in refs.values():
        with contextlib.suppress(Exception):
            client.images.remove(ref, force=True)


def push(capsys, env: LabFixture, *args: str) -> tuple[int, dict]:
    return run_json(
        capsys, "push", "all", *args, "-i", str(env.inventory), "--retry-file", "/dev/null"
    )


def registry_processes() -> list[int]:
    """docker-registry processes this test session started and that still exist."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
            parent = int(text[text.rindex(")") + 2 :].split()[1])
            if name == "docker-registry" and parent == os.getpid():
                found.append(int(stat.parent.name))
    return found


def names_on(env: LabFixture, host: str) -> list[str]:
    out = host_sh(env, host, "docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}")
    return out.split()


def assert_image_is(env: LabFixture, host: str, ref: str) -> None:
    """The host has ``ref`` under its real name, with the controller's config and layers."""
    local = lab.engine_client().images.get(ref)
    inspected = host_sh(
        env, host, "docker", "image", "inspect", "--format", "{{.Id}} {{json .RootFS.Layers}}", ref
    ).split(" ", 1)
    assert json.loads(inspected[1]) == local.attrs["RootFS"]["Layers"], (host, inspected)
    if host == "lab1":  # classic store: the image ID is the config digest
        assert inspected[0] == local.id
    else:  # containerd store: the ID is the pulled manifest's digest; its config is ours
        manifest = host_sh(
            env,
            host,
            "ctr",
            "--address",
            "/run/docker/containerd/containerd.sock",
            "-n",
            "moby",
            "content",
            "get",
            inspected[0],
        )
        assert local.id in manifest, manifest


def test_tunnelled_registry_ships_verifies_cleans_up_and_converges(
    lab_env: LabFixture, versions, capsys
) -> None:
    code, doc = push(capsys, lab_env, versions["v1"], "--via", "registry")
    assert code == 0, doc
    hosts = doc["hosts"]
    assert {h: r["outcome"] for h, r in hosts.items()} == {"lab1": "changed", "lab2": "changed"}
    assert hosts["lab1"]["details"]["store"] == "classic"
    assert hosts["lab2"]["details"]["store"] == "containerd"
    for host in ("lab1", "lab2"):
        details = hosts[host]["details"]
        assert details["via"] == "registry" and details["registry"] == "controller (tunnelled)"
        assert details["layers_pulled"] == 1
        # 300 kB of random bytes crossed the tunnel, gzip'd by the registry push.
        assert 300_000 < details["bytes_pulled"] < 300_000 * 1.1 + 65536, details
        assert_image_is(lab_env, host, versions["v1"])
        assert not [n for n in names_on(lab_env, host) if n.startswith("127.0.0.1:")]
        # The tunnel's credential is gone from the host: its private docker config and ctr
        # hosts directory were removed, and the user's own docker config never had it.
        leftovers = host_sh(
            lab_env, host, "sh", "-c", "find /tmp -name hosts.toml; cat ~/.docker/config.json"
        )
        assert "hosts.toml" not in leftovers and "127.0.0.1" not in leftovers, leftovers
    assert registry_processes() == []
    local_tags = [t for i in lab.engine_client().images.list(name=REPO) for t in i.tags]
    assert not [t for t in local_tags if t.startswith("127.0.0.1:")]

    code, doc = push(capsys, lab_env, versions["v1"], "--via", "registry")
    assert code == 0
    assert all(r["outcome"] == "ok" for r in doc["hosts"].values()), doc

    # An update: each host pulls only the layer it lacks, on both stores.
    code, doc = push(capsys, lab_env, versions["v2"], "--via", "registry")
    assert code == 0, doc
    for host, result in doc["hosts"].items():
        details = result["details"]
        assert (details["layers_present"], details["layers_pulled"]) == (1, 1), (host, details)
        assert 200_000 < details["bytes_pulled"] < 200_000 * 1.1 + 65536, (host, details)
        assert_image_is(lab_env, host, versions["v2"])
    assert registry_processes() == []


def test_check_says_what_would_be_pulled_and_starts_nothing(
    lab_env: LabFixture, versions, capsys
) -> None:
    push(capsys, lab_env, versions["v2"], "--via", "registry")
    code, doc = push(capsys, lab_env, versions["v3"], "--via", "registry", "--check")
    assert code == 0
    for host, result in doc["hosts"].items():
        assert result["outcome"] == "changed"
        assert result["details"]["layers_to_pull"] == 1, (host, result)
        assert "would pull 1/3 layers" in result["reason"]
        assert host_sh(lab_env, host, "docker", "image", "ls", "-q", versions["v3"]).strip() == ""
    assert registry_processes() == []


def test_max_rate_per_host_limits_the_tunnel(lab_env: LabFixture, versions, capsys) -> None:
    rate = 1 << 20
    started = time.monotonic()
    code, doc = push(
        capsys, lab_env, versions["slow"], "--via", "registry", "--max-rate-per-host", "1M"
    )
    took = time.monotonic() - started
    assert code == 0, doc
    for host, result in doc["hosts"].items():
        pulled = result["details"]["bytes_pulled"]
        assert pulled > 3_000_000, (host, result)
        # Each host's own pull, not the whole push (which also publishes): at least N/R.
        assert result["seconds"] >= pulled / rate * 0.8, (host, result)
    assert took < 300


@contextlib.contextmanager
def reachable_registry(env: LabFixture, hosts: tuple[str, ...]) -> Iterator[str]:
    """A registry the controller and ``hosts`` all reach at the same 127.0.0.1:PORT.

    The stand-in for Harbor: a loopback docker-registry, forwarded by the test's own SSH
    connections to the same port on each host's loopback.
    """
    with registry.LoopbackRegistry() as served:
        transports = []
        try:
            for endpoint in lab.endpoints(env.lab):
                if endpoint.name in hosts:
                    transport = SSHTransport(endpoint, KnownHosts([env.lab.known_hosts]))
                    transports.append(transport)
                    transport.forward_remote(served.port, ("127.0.0.1", served.port))
            yield f"http://{served.address}/lab"
        finally:
            for transport in transports:
                transport.close()


def test_existing_registry_is_pulled_directly_and_a_failing_host_does_not_stop_others(
    lab_env: LabFixture, versions, capsys
) -> None:
    # Only lab2 reaches the registry: lab1's pull fails, with the engine's words.
    with reachable_registry(lab_env, ("lab2",)) as url:
        code, doc = push(
            capsys, lab_env, versions["direct"], "--via", "registry", "--registry", url
        )
        address = url.removeprefix("http://")
        assert code == 2, doc
        lab1, lab2 = doc["hosts"]["lab1"], doc["hosts"]["lab2"]
        assert lab1["outcome"] == "failed"
        assert "docker pull" in lab1["reason"] and address in lab1["reason"], lab1
        assert lab2["outcome"] == "changed", lab2
        assert lab2["details"]["registry"] == address
        assert_image_is(lab_env, "lab2", versions["direct"])
        for host in ("lab1", "lab2"):
            assert not [n for n in names_on(lab_env, host) if n.startswith(address)]
        assert host_sh(lab_env, "lab1", "docker", "image", "ls", "-q", versions["direct"]) == ""


def test_unreachable_registry_fails_every_host_with_the_evidence(
    lab_env: LabFixture, versions, capsys
) -> None:
    code, doc = push(
        capsys, lab_env, versions["v3"], "--via", "registry", "--registry", "127.0.0.1:9/none"
    )
    assert code == 2, doc
    for result in doc["hosts"].values():
        assert result["outcome"] == "failed"
        assert "127.0.0.1:9/none" in result["reason"] and result["fix"], result


def test_bad_option_mixes_exit_5_before_touching_hosts(lab_env: LabFixture, versions, capsys):
    def cli(*args: str) -> tuple[int, str]:
        code, out, err = run_cli(
            capsys, "push", "all", versions["v3"], *args, "-i", str(lab_env.inventory)
        )
        return code, out + err

    code, text = cli("--registry", "harbor.lab")
    assert code == 5 and "--via registry" in text, text
    code, text = cli("--via", "registry", "--registry", "bob:hunter2@harbor.lab")
    assert code == 5 and "credentials" in text and "hunter2" not in text, text
    code, text = cli("--via", "registry", "--compress", "zstd")
    assert code == 5 and "--compress applies to --via ssh" in text, text
    code, text = cli("--via", "registry", "--registry", "harbor.lab", "--max-rate", "1M")
    assert code == 5 and "cannot limit" in text, text


def test_a_registry_update_over_layers_loaded_by_ssh_is_complete_on_both_stores(
    lab_env: LabFixture, versions, capsys
) -> None:
    # The base arrives over SSH (blobs named by diff ID); the update through the registry,
    # whose blobs are gzip'd: the containerd store skips pulling the base's (its snapshot
    # exists), so fleet fetches them, or Docker would neither list nor save the image.
    client = lab.engine_client()
    base = _build(client, "mixed-base", versions["v1"], 150_000)
    update = _build(client, "mixed-update", base, 50_000)
    try:
        code, doc = push(capsys, lab_env, base, "--via", "ssh")
        assert code == 0, doc
        code, doc = push(capsys, lab_env, update, "--via", "registry")
        assert code == 0, [(h, r["reason"]) for h, r in doc["hosts"].items()]
        for host in ("lab1", "lab2"):
            assert doc["hosts"][host]["details"]["layers_pulled"] == 1, doc["hosts"][host]
            assert_image_is(lab_env, host, update)
            listed = host_sh(lab_env, host, "docker", "image", "ls", "-q", update)
            assert listed.strip(), f"{host}: {update} is not listed"
    finally:
        for ref in (update, base):
            client.images.remove(ref, force=True)


def test_an_ssh_update_over_layers_pulled_from_a_registry_sends_only_the_new_layer(
    lab_env: LabFixture, versions, capsys
) -> None:
    # The reverse: the base comes from a registry, so the containerd store holds its layers
    # only as gzip'd blobs (not under their diff IDs). The SSH update names those blobs in
    # that host's manifest instead of sending the layers again.
    client = lab.engine_client()
    base = _build(client, "pulled-base", versions["v1"], 400_000)
    update = _build(client, "ssh-update", base, 30_000)
    try:
        code, doc = push(capsys, lab_env, base, "--via", "registry")
        assert code == 0, doc
        code, doc = push(capsys, lab_env, update, "--via", "ssh")
        assert code == 0, [(h, r["reason"]) for h, r in doc["hosts"].items()]
        lab2 = doc["hosts"]["lab2"]["details"]  # the containerd host
        assert lab2["store"] == "containerd"
        # At least the base's own layer (v1's may have come over SSH in an earlier test).
        assert lab2["layers_sent"] == 1 and lab2["layers_held_compressed"] >= 1, lab2
        assert lab2["bytes_sent"] < 200_000, lab2  # not the base's 400 kB of random bytes
        for host in ("lab1", "lab2"):
            assert_image_is(lab_env, host, update)
            # Complete: every blob its manifest names is in the host's store.
            host_sh(lab_env, host, "docker", "save", "-o", "/dev/null", update)
        code, doc = push(capsys, lab_env, update, "--via", "ssh")
        assert {r["reason"] for r in doc["hosts"].values()} == {"image already present"}, doc
    finally:
        for ref in (update, base):
            client.images.remove(ref, force=True)


# -- someone else on the registry path ------------------------------------------------------
# What a host's loopback neighbour runs once the tunnel is open: an image of its own, under
# the very name the host is about to pull, pushed to the tunnel's end; the pushed name is
# removed again, so that only the registry could hand it back.
POISON_PUSH = r"""
docker import - "$1" >/dev/null || exit 125
docker push "$1"; pushed=$?
docker rmi "$1" >/dev/null 2>&1
exit $pushed
"""


def poison_tar() -> bytes:
    """A root filesystem of one file of random bytes: an image no one else has."""
    data = os.urandom(4096)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("poison")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class PushesFirst:
    """A host's connection that, once the host's end of the tunnel is open and before
    the host's next command (its pull), pushes a poisoned image through that end.

    A wrapper of fleet's own Transport interface (and its port forward): the pull window
    made deterministic, with the push coming from the host's loopback for real.
    """

    def __init__(self, inner: SSHTransport, ref: str) -> None:
        self.inner = inner
        self.ref = ref
        self.port: int | None = None
        self.pushed: CommandResult | None = None

    @property
    def host(self) -> str:
        return self.inner.host

    def forward_remote(self, port: int, target: tuple[str, int]) -> int:
        self.port = self.inner.forward_remote(port, target)
        return self.port

    def cancel_forward(self, port: int) -> None:
        self.inner.cancel_forward(port)

    def run(self, argv: Sequence[str], **options: Any) -> CommandResult:
        if self.port is not None and self.pushed is None:
            path, tag = registry.repository_path(self.ref)
            name = f"127.0.0.1:{self.port}/{registry.LOOPBACK_PREFIX}/{path}:{tag}"
            self.pushed = self.inner.run(
                ["sh", "-c", POISON_PUSH, "fleet-poison", name],
                stdin=poison_tar(),
                check=False,
                timeout=120,
            )
        return self.inner.run(argv, **options)

    def stream(self, argv: Sequence[str], chunks: Iterable[bytes], **options: Any) -> CommandResult:
        return self.inner.stream(argv, chunks, **options)

    def close(self) -> None:
        self.inner.close()


class MovesTheTag:
    """Publishes with the controller's engine, then pushes another image under the same
    name (someone who reaches the registry moving the tag). ``hand_out``: report that
    other image's digest as the published one (the registry's answer cannot be trusted).
    """

    def __init__(self, poison: str, hand_out: bool = False) -> None:
        self.inner = registry.EnginePublisher(lab.engine_client())
        self.poison = poison
        self.hand_out = hand_out

    def serve(self) -> contextlib.AbstractContextManager[registry.Location]:
        return self.inner.serve()

    def publish(self, ref: str, name: str) -> str:
        genuine = self.inner.publish(ref, name)
        moved = registry.publish(lab.engine_client(), self.poison, name)
        assert moved != genuine
        return moved if self.hand_out else genuine


def push_via_registry(
    env: LabFixture,
    ref: str,
    wrap: Any = None,
    publisher: registry.Publisher | None = None,
) -> tuple[FleetResult, list[Transport]]:
    """``fleet push --via registry`` through fleet's API, with a seam for each connection."""
    hosts = inventory.load([env.inventory]).select("all")
    connector = SSHConnector(KnownHosts())
    opened: list[Transport] = []

    def connect(host: Any) -> Transport:
        transport = connector(host)
        if wrap is not None:
            transport = wrap(transport)
        opened.append(transport)
        return transport

    runner = Runner(connect, forks=4)
    try:
        image = daemon.shippable(lab.engine_client(), ref)
        options = PushOptions(via="registry")
        return ship_push(runner, hosts, image, options, publisher=publisher), opened
    finally:
        runner.close()


def assert_genuine_or_absent(env: LabFixture, host: str, ref: str) -> None:
    """The host has ``ref`` as the controller built it, or not at all; no pull's name left."""
    if host_sh(env, host, "docker", "image", "ls", "-q", ref).strip():
        assert_image_is(env, host, ref)
    assert not [n for n in names_on(env, host) if n.startswith("127.0.0.1:")]


@pytest.mark.hostile
def test_a_push_from_the_hosts_loopback_during_the_pull_is_refused(
    lab_env: LabFixture, versions
) -> None:
    client = lab.engine_client()
    ref = _build(client, "window", versions["v1"], 60_000)
    try:
        result, opened = push_via_registry(lab_env, ref, lambda t: PushesFirst(t, ref))
        for row in result.results:
            # The real name on the genuine image (not on the one pushed during the pull).
            assert_genuine_or_absent(lab_env, row.host, ref)
            assert row.outcome.value == "changed", row
            assert_image_is(lab_env, row.host, ref)
        for transport in opened:
            assert isinstance(transport, PushesFirst)
            pushed = transport.pushed
            assert pushed is not None, f"{transport.host}: the poison was never pushed"
            # Refused by the relay: no credential (and it would be read-only anyway).
            assert pushed.exit_code != 0, (transport.host, pushed)
            said = (pushed.stderr + pushed.stdout).lower()
            assert "auth" in said or "unauthorized" in said, (transport.host, said)
    finally:
        client.images.remove(ref, force=True)


@pytest.mark.hostile
def test_a_tag_moved_in_the_registry_is_not_what_hosts_pull(lab_env: LabFixture, versions) -> None:
    client = lab.engine_client()
    ref = _build(client, "moved", versions["v1"], 70_000)
    poison = _build(client, "moved-poison", None, 10_000)
    try:
        result, _ = push_via_registry(lab_env, ref, publisher=MovesTheTag(poison))
        for row in result.results:
            assert row.outcome.value == "changed", row
            assert_image_is(lab_env, row.host, ref)
            assert_genuine_or_absent(lab_env, row.host, ref)
    finally:
        for name in (ref, poison):
            client.images.remove(name, force=True)


@pytest.mark.hostile
def test_a_pulled_image_that_does_not_verify_is_never_tagged(lab_env: LabFixture, versions) -> None:
    client = lab.engine_client()
    ref = _build(client, "handed", versions["v1"], 80_000)
    poison = _build(client, "handed-poison", None, 10_000)
    try:
        result, _ = push_via_registry(lab_env, ref, publisher=MovesTheTag(poison, True))
        for row in result.results:
            assert row.outcome.value == "failed", row
            reason = row.reason or ""
            assert "nothing was tagged" in reason and "expected config" in reason, row
            listed = host_sh(lab_env, row.host, "docker", "image", "ls", "-q", ref)
            assert listed.strip() == "", (row.host, listed)
            assert_genuine_or_absent(lab_env, row.host, ref)
    finally:
        for name in (ref, poison):
            client.images.remove(name, force=True)

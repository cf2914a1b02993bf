"""End to end on the lab: fleet push --via registry, tunnelled and to a registry the hosts reach.

The registry is Debian's docker-registry (distribution 2.8) on this machine's loopback;
the hosts are the lab's classic (20.10) and containerd (26.1) engines over real SSH.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet import lab, registry
from fleet.transport import KnownHosts, SSHTransport
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

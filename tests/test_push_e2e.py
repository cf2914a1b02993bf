"""End to end on the lab: fleet push to a classic and a containerd host over real SSH."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from fleet.lab import nodes as lab
from fleet.ship.codec import zstd_program
from fleet.ssh.known_hosts import KnownHosts
from fleet.ssh.paramiko_client import SSHTransport
from tests.conftest import LabFixture, heal, host_sh, run_json
from tests.framework import build_image

pytestmark = pytest.mark.lab

# Per session: a concurrent session (another checkout's tests) must not remove ours.
REPO = f"fleet-test-push-{os.getpid()}"


def _build(client, tag: str, dockerfile: str) -> str:
    return build_image(client, f"{REPO}:{tag}", dockerfile)


@pytest.fixture(scope="module")
def versions() -> Iterator[dict[str, str]]:
    client = lab.engine_client()
    lab.ensure_layer1_image(client)
    base = "FROM fleet-lab-layer1:bookworm\nRUN head -c 300000 /dev/urandom > /v1\n"
    refs = {
        "v1": _build(client, "v1", base),
        "v2": _build(client, "v2", f"FROM {REPO}:v1\nRUN head -c 200000 /dev/urandom > /v2\n"),
        "v3": _build(client, "v3", f"FROM {REPO}:v2\nRUN echo three > /v3\n"),
        "big": _build(
            client, "big", f"FROM {REPO}:v1\nRUN head -c 120000000 /dev/urandom > /big\n"
        ),
        "zstd": _build(
            client,
            "zstd",
            f"FROM {REPO}:v1\nRUN head -c 400000 /dev/urandom > /z && seq 1 300000 > /seq\n",
        ),
        "slow": _build(client, "slow", f"FROM {REPO}:v1\nRUN head -c 3000000 /dev/urandom > /s\n"),
    }
    yield refs
    for ref in refs.values():
        client.images.remove(ref, force=True)


def push(capsys, env: LabFixture, *args: str) -> tuple[int, dict]:
    return run_json(
        capsys, "push", "all", *args, "-i", str(env.inventory), "--retry-file", "/dev/null"
    )


def test_push_ships_verifies_and_converges(lab_env: LabFixture, versions, capsys) -> None:
    code, doc = push(capsys, lab_env, versions["v1"])
    assert code == 0, doc
    hosts = doc["hosts"]
    assert {h: r["outcome"] for h, r in hosts.items()} == {"lab1": "changed", "lab2": "changed"}
    assert hosts["lab1"]["details"]["store"] == "classic"
    assert hosts["lab2"]["details"]["store"] == "containerd"
    for host in ("lab1", "lab2"):
        # The image is really usable on the host, not just reported loaded.
        out = host_sh(lab_env, host, "docker", "run", "--rm", versions["v1"], "wc", "-c", "/v1")
        assert out.split()[0] == "300000"

    code, doc = push(capsys, lab_env, versions["v1"])
    assert code == 0
    assert all(r["outcome"] == "ok" for r in doc["hosts"].values())
    assert all(r["details"]["layers_to_send"] == 0 for r in doc["hosts"].values())

    code, doc = push(capsys, lab_env, versions["v2"])
    assert code == 0
    for host, result in doc["hosts"].items():
        details = result["details"]
        assert details["layers_sent"] == 1, (host, details)
        # 200 kB of random data, gzip'd: the wire carries the one missing layer, no more.
        assert 200_000 < details["bytes_sent"] < 200_000 * 1.05 + 65536, (host, details)


def test_check_sends_nothing(lab_env: LabFixture, versions, capsys) -> None:
    push(capsys, lab_env, versions["v2"])
    code, doc = push(capsys, lab_env, versions["v3"], "--check")
    assert code == 0
    for host, result in doc["hosts"].items():
        assert result["outcome"] == "changed"
        assert result["details"]["layers_to_send"] == 1
        assert host_sh(lab_env, host, "docker", "image", "ls", "-q", versions["v3"]).strip() == ""


def test_not_enough_disk_is_refused_before_sending(lab_env: LabFixture, versions, capsys) -> None:
    code, doc = push(capsys, lab_env, versions["v3"], "--min-free", "100T")
    assert code == 2
    for host, result in doc["hosts"].items():
        assert result["outcome"] == "failed"
        assert "not enough disk" in result["reason"] and "free" in result["reason"]
        assert host_sh(lab_env, host, "docker", "image", "ls", "-q", versions["v3"]).strip() == ""


def test_engine_stopped_fails_that_host_only(lab_env: LabFixture, versions, capsys) -> None:
    client = lab.engine_client()
    container = client.containers.get(lab_env.host("lab1").container)
    container.exec_run(
        ["sh", "-c", "pkill -x dockerd; while pgrep -x dockerd >/dev/null; do sleep 0.1; done"]
    )
    try:
        code, doc = push(capsys, lab_env, versions["v3"])
        assert code == 2
        lab1 = doc["hosts"]["lab1"]
        assert lab1["outcome"] == "failed"
        assert "Docker engine not usable" in lab1["reason"]
        assert "start the host's Docker engine" in lab1["fix"]
        assert doc["hosts"]["lab2"]["outcome"] == "changed"
    finally:
        container.exec_run(["sh", "-c", "nohup dockerd >>/var/log/dockerd.log 2>&1 &"], detach=True)
        deadline = time.monotonic() + 60
        while (
            container.exec_run(["docker", "version", "--format", "{{.Server.Version}}"]).exit_code
            != 0
        ):
            assert time.monotonic() < deadline, "lab1's engine did not come back"
            time.sleep(0.3)


def test_connection_dropped_mid_stream_then_rerun_converges(
    lab_env: LabFixture, versions, capsys
) -> None:
    client = lab.engine_client()
    victim = client.containers.get(lab_env.host("lab2").container)

    def kill_when_loading() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if victim.exec_run(["pgrep", "-f", "docker load"]).exit_code == 0:
                time.sleep(0.3)
                victim.kill()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_loading)
    killer.start()
    try:
        code, doc = push(capsys, lab_env, versions["big"])
    finally:
        killer.join()
    env = heal(lab_env)
    assert code == 3, doc
    assert doc["hosts"]["lab2"]["outcome"] == "unreachable"
    assert doc["hosts"]["lab1"]["outcome"] == "changed"
    # Nothing half-loaded carries the name.
    deadline = time.monotonic() + 60
    while "Server Version" not in host_sh(env, "lab2", "docker", "info"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert host_sh(env, "lab2", "docker", "image", "ls", "-q", versions["big"]).strip() == ""
    code, doc = push(capsys, env, versions["big"])
    assert code == 0, doc
    assert doc["hosts"]["lab1"]["outcome"] == "ok"
    assert doc["hosts"]["lab2"]["outcome"] == "changed"


def test_stream_over_one_gib(lab_env: LabFixture) -> None:
    """Past paramiko's 512 MiB rekey point (paramiko#822): the stream arrives whole."""
    endpoint = next(e for e in lab.endpoints(lab_env.lab) if e.name == "lab1")
    transport = SSHTransport(endpoint, KnownHosts([lab_env.lab.known_hosts]))
    chunk = b"\xa5" * (1 << 20)
    total = 1100
    try:
        result = transport.stream(["wc", "-c"], (chunk for _ in range(total)), timeout=300)
    finally:
        transport.close()
    assert int(result.stdout.split()[0]) == total << 20


@pytest.mark.skipif(
    zstd_program() is None,
    reason="no zstd program on the controller (scripts/setup.sh should install zstd)",
)
def test_zstd_goes_to_the_engine_that_loads_it_and_gzip_to_the_other(
    lab_env: LabFixture, versions, capsys
) -> None:
    push(capsys, lab_env, versions["v1"])
    code, doc = push(capsys, lab_env, versions["zstd"], "--compress", "zstd", "--check")
    assert code == 0
    assert "gzip" in doc["hosts"]["lab1"]["reason"], doc  # says why it falls back
    code, doc = push(capsys, lab_env, versions["zstd"], "--compress", "zstd")
    assert code == 0, doc
    hosts = doc["hosts"]
    # Docker 20.10 cannot load zstd (measured); Docker 26.1 can.
    assert hosts["lab1"]["details"]["compress"] == "gzip"
    assert hosts["lab2"]["details"]["compress"] == "zstd"
    for host in ("lab1", "lab2"):
        assert hosts[host]["outcome"] == "changed"
        # 400 kB random + 2 MB of compressible text: the wire carries far less than 2.4 MB.
        assert hosts[host]["details"]["bytes_sent"] < 1_200_000, hosts[host]
        out = host_sh(lab_env, host, "docker", "run", "--rm", versions["zstd"], "wc", "-c", "/z")
        assert out.split()[0] == "400000"


def test_max_rate_caps_the_total_over_all_hosts(lab_env: LabFixture, versions, capsys) -> None:
    push(capsys, lab_env, versions["v1"])
    rate = 2 << 20
    started = time.monotonic()
    code, doc = push(capsys, lab_env, versions["slow"], "--max-rate", "2M", "--compress", "none")
    took = time.monotonic() - started
    assert code == 0, doc
    sent = sum(r["details"]["bytes_sent"] for r in doc["hosts"].values())
    assert sent > 2 * 3_000_000, doc
    # Both hosts share the 2 MiB/s: at least N/R (generous: 0.8), and not absurdly longer.
    assert took >= sent / rate * 0.8, (took, sent)
    assert took < sent / rate * 5 + 60, (took, sent)

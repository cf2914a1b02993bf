"""End to end: the lab's hosts are real SSH servers with their own Docker engines."""

from __future__ import annotations

import pytest

from fleet.lab import nodes as lab
from fleet.ssh.known_hosts import KnownHosts
from fleet.ssh.paramiko_client import SSHTransport
from tests.conftest import TEST_LAB, LabFixture, run_cli

pytestmark = pytest.mark.lab


def test_each_host_runs_its_own_engine_and_store(lab_env: LabFixture) -> None:
    known = KnownHosts([lab_env.lab.known_hosts])  # pinned keys only, nothing accepted
    seen = {}
    for endpoint in lab.endpoints(lab_env.lab):
        transport = SSHTransport(endpoint, known)
        try:
            info = transport.run(
                [
                    "docker",
                    "info",
                    "--format",
                    "{{.Name}} {{.ServerVersion}} {{json .DriverStatus}}",
                ]
            ).stdout.split(" ", 2)
        finally:
            transport.close()
        seen[endpoint.name] = info
    assert seen["lab1"][0] == "lab1" and seen["lab1"][1].startswith("20.10")
    assert "containerd.snapshotter" not in seen["lab1"][2]
    assert seen["lab2"][0] == "lab2" and seen["lab2"][1].startswith("26.")
    assert "io.containerd.snapshotter.v1" in seen["lab2"][2]
    assert known.accepted == []


def test_host_keys_are_per_host(lab_env: LabFixture) -> None:
    lines = lab_env.lab.known_hosts.read_text().splitlines()
    assert len(lines) == 2
    keys = {line.split()[2] for line in lines}
    assert len(keys) == 2, "two hosts share a host key"


def test_hosts_have_cron_and_data(lab_env: LabFixture) -> None:
    known = KnownHosts([lab_env.lab.known_hosts])
    endpoint = next(lab.endpoints(lab_env.lab))
    transport = SSHTransport(endpoint, known)
    try:
        assert transport.run(["pgrep", "-x", "cron"]).ok
        assert transport.run(["test", "-d", "/data"]).ok
    finally:
        transport.close()


def test_status_shows_engines_and_stores(
    lab_env: LabFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    hosts = lab.status(name=TEST_LAB)
    assert [(h.name, h.engine, h.image_store, h.state) for h in hosts] == [
        ("lab1", "classic", "classic", "running"),
        ("lab2", "containerd", "containerd", "running"),
    ]
    code, out, _ = run_cli(capsys, "lab", "status", "--name", TEST_LAB)
    assert code == 0
    assert "lab2" in out and "containerd" in out and "26.1" in out


def test_up_is_idempotent_and_fast(lab_env: LabFixture) -> None:
    again = lab.up(2, "mixed", name=TEST_LAB, inventory=lab_env.inventory)
    assert [(h.name, h.port) for h in again.hosts] == [(h.name, h.port) for h in lab_env.lab.hosts]


def test_down_leaves_nothing_behind(lab_env: LabFixture, tmp_path) -> None:
    name = "fleet-test-down"
    inventory = tmp_path / "lab.yml"
    small = lab.up(1, "classic", name=name, inventory=inventory)
    assert inventory.is_file()
    client = lab.engine_client()
    volume = f"{small.hosts[0].container}-docker"
    assert client.volumes.get(volume)
    removed = lab.down(name=name, inventory=inventory)
    assert removed == ["lab1"]
    assert client.containers.list(all=True, filters={"label": f"{lab.LABEL}={name}"}) == []
    assert [v for v in client.volumes.list() if v.name == volume] == []
    assert not inventory.exists()

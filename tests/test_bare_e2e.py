"""End to end: a bare GPU server becomes a fleet host with one ``fleet provision``.

The lab's bare host has sshd, Debian's base system and a driver (its ``nvidia-smi``), and
no engine, no toolkit, no cron. Its inventory (written by ``fleet lab up --bare``) lets
provisioning install the engine and the tools from Debian's archive and the NVIDIA
Container Toolkit from the lab's own signed apt repository. First the failures, each of
which must leave the host as it was; then the whole story on two hosts, one with Debian's
engine and one with Docker's packages from Docker's repository layout (the lab's
stand-ins), a deploy user joining the docker group and the engine's data-root on the
host's second disk: provision, a second provision with nothing to change, and a deploy
whose container sees the GPU.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.lab import nodes as lab
from tests.conftest import (
    TEST_LAB,
    LabFixture,
    framework_container,
    host_run,
    host_sh,
    run_json,
    run_project_json,
)
from tests.framework import ROOT, FrameworkProject

pytestmark = pytest.mark.lab

HOST = "lab1"
DOCKER_CE_HOST = "lab2"  # engine_package: docker-ce
SOURCES = "/etc/apt/sources.list.d/fleet-nvidia-container-toolkit.list"
DOCKER_SOURCES = "/etc/apt/sources.list.d/fleet-docker.list"
DAEMON_JSON = "/etc/docker/daemon.json"


@pytest.fixture(scope="module")
def bare(lab_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFixture]:
    inventory = tmp_path_factory.mktemp("bareinv") / "lab.yml"
    started = lab.up(2, lab.BARE, name=f"{TEST_LAB}-bare", inventory=inventory, gpus=1)
    yield LabFixture(started, inventory, lab_state)
    lab.down(name=started.name, inventory=inventory)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrameworkProject]:
    root = tmp_path_factory.mktemp("barefw") / "cauchy"
    built = FrameworkProject.create(root, f"fleet-test-bare-{uuid.uuid4().hex[:6]}")
    built.commit_and_build("v1")
    yield built
    built.remove_images()


def inventory(env: LabFixture, path: Path, **provision: Any) -> Path:
    """The bare lab's inventory with the project's run spec, a short health gate, and
    ``provision`` on top of the lab's own provisioning overrides."""
    document = yaml.safe_load(env.inventory.read_text())
    settings = yaml.safe_load((ROOT / "inventory" / "group_vars" / "all.yml").read_text())
    group = document["all"]["children"]["lab"]
    group["vars"]["fleet_run"] = settings["fleet_run"]
    group["vars"]["fleet_run_overrides"] = {
        **group["vars"]["fleet_run_overrides"],
        "health": {"timeout": 30, "interval": 0.5},
    }
    for name, host in group["hosts"].items():
        host["fleet_provision_overrides"] = {
            **host["fleet_provision_overrides"],
            "min_free": {"docker": "1M", "data": "1M"},
            **(DOCKER_CE if name == DOCKER_CE_HOST else {}),
            **provision,
        }
    path.write_text(yaml.safe_dump(document))
    return path


# Docker's packages, a deploy user, and the engine's data-root on the host's second disk.
DOCKER_CE = {
    "engine_package": "docker-ce",
    "docker_users": ["deploy"],
    "engine": {"data_root": "/srv/docker"},
}


def untouched(env: LabFixture) -> None:
    """What a failed provision must leave as it was: no engine, no toolkit, no source."""
    assert not host_run(env, HOST, "sh", "-c", "command -v dockerd").ok
    assert not host_run(env, HOST, "test", "-e", SOURCES).ok
    packages = host_run(env, HOST, "dpkg-query", "-W", "-f", "${Status}\n", "docker.io").stdout
    assert "install ok installed" not in packages
    assert not host_run(env, HOST, "test", "-e", "/data/checkpoints").ok


def provision(capsys: Any, path: Path, *args: str, hosts: str = HOST) -> tuple[int, dict[str, Any]]:
    return run_json(capsys, "provision", hosts, "-i", str(path), "--retry-file", "/dev/null", *args)


def test_an_unsupported_distribution_is_refused(
    bare: LabFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = host_sh(bare, HOST, "cat", "/etc/os-release")
    alpine = 'NAME="Alpine Linux"\nID=alpine\nPRETTY_NAME="Alpine Linux v3.20"\n'
    host_run(bare, HOST, "sh", "-c", "cat > /etc/os-release", stdin=alpine.encode())
    try:
        code, doc = provision(capsys, inventory(bare, tmp_path / "inv.yml"), "--skip-base")
    finally:
        host_run(bare, HOST, "sh", "-c", "cat > /etc/os-release", stdin=original.encode())
    assert code == 2, doc
    result = doc["hosts"][HOST]
    assert result["reason"].startswith("unsupported distribution: Alpine Linux v3.20"), result
    assert "with apt, on Debian and Ubuntu" in result["reason"]
    untouched(bare)


def test_a_held_dpkg_lock_is_waited_for_then_named(
    bare: LabFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = (
        "import fcntl, sys, time\n"
        "f = open('/var/lib/dpkg/lock-frontend', 'w')\n"
        "fcntl.lockf(f, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n"
    )
    host_run(bare, HOST, "sh", "-c", 'nohup python3 -c "$1" >/tmp/holder 2>&1 &', "h", holder)
    try:
        for _ in range(50):
            if "held" in host_run(bare, HOST, "cat", "/tmp/holder").stdout:
                break
        code, doc = provision(
            capsys, inventory(bare, tmp_path / "inv.yml", apt_lock_timeout=2), "--skip-base"
        )
    finally:
        host_run(bare, HOST, "pkill", "-f", "lock-frontend")
    assert code == 2, doc
    reason = doc["hosts"][HOST]["reason"]
    assert "Could not get lock /var/lib/dpkg/lock-frontend" in reason, reason
    assert "It is held by process" in reason and "(python3)" in reason
    assert (
        "apt-get install docker.io cron ca-certificates nvidia-container-toolkit (adding" in reason
    )
    untouched(bare)


def test_a_repository_out_of_reach_fails_with_apts_words(
    bare: LabFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(lab.state_dir(bare.lab.name) / "apt-key.gpg")
    path = inventory(
        bare,
        tmp_path / "inv.yml",
        nvidia_repository={"url": "http://127.0.0.1:9/", "key": key},
    )
    code, doc = provision(capsys, path, "--skip-base")
    assert code == 2, doc
    reason = doc["hosts"][HOST]["reason"]
    assert "http://127.0.0.1:9" in reason and "nvidia-container-toolkit" in reason, reason
    assert "apt-get install" in reason and "failed" in reason
    untouched(bare)


def test_a_full_disk_fails_before_a_package_is_installed(
    bare: LabFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archives = "/var/cache/apt/archives"
    mounted = host_run(bare, HOST, "mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", archives)
    assert mounted.ok, mounted.stderr
    try:
        code, doc = provision(capsys, inventory(bare, tmp_path / "inv.yml"), "--skip-base")
    finally:
        host_run(bare, HOST, "umount", archives)
    assert code == 2, doc
    reason = doc["hosts"][HOST]["reason"]
    assert "You don't have enough free space in /var/cache/apt/archives/" in reason, reason
    untouched(bare)


def test_one_provision_makes_a_bare_gpu_server_a_fleet_host(
    bare: LabFixture,
    project: FrameworkProject,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A vendor's image may bring a daemon.json of its own: its keys stay.
    host_run(bare, HOST, "mkdir", "-p", "/etc/docker")
    host_run(bare, HOST, "sh", "-c", "cat > " + DAEMON_JSON, stdin=b'{"labels": ["rack=9"]}\n')
    assert host_run(bare, DOCKER_CE_HOST, "useradd", "--create-home", "deploy").ok
    path = inventory(bare, tmp_path / "inv.yml")
    # The repositories' keys are checked against the fingerprints gpg printed for them.
    lab_hosts = yaml.safe_load(path.read_text())["all"]["children"]["lab"]["hosts"]
    for entry in lab_hosts.values():
        overrides = entry["fleet_provision_overrides"]
        for repository in ("nvidia_repository", "docker_repository"):
            assert len(overrides[repository]["fingerprint"]) == 40, overrides
    code, doc = provision(capsys, path, "--project", str(project.root), hosts="all")
    assert code == 0, [(r["host"], r["reason"]) for r in doc["hosts"].values()]
    for name, engine in ((HOST, "docker.io"), (DOCKER_CE_HOST, "docker-ce")):
        result = doc["hosts"][name]
        assert result["outcome"] == "changed", result
        kinds = [c["kind"] for c in result["details"]["changes"]]
        assert kinds[:2] == ["packages_installed", "engine_configured"], kinds
        assert "base_shipped" in kinds
        (install,) = [c for c in result["details"]["changes"] if c["kind"] == "packages_installed"]
        for package in (engine, "cron", "ca-certificates", "nvidia-container-toolkit"):
            assert package in install["what"], install
        info = host_sh(bare, name, "docker", "info", "--format", "{{.LiveRestoreEnabled}}")
        assert info == "true\n"
        assert "nvidia" in host_sh(bare, name, "docker", "info", "--format", "{{json .Runtimes}}")
        assert host_run(bare, name, "pgrep", "-x", "cron").ok
    assert '"rack=9"' in host_sh(bare, HOST, "cat", DAEMON_JSON)
    # Docker's packages came from Docker's layout, for the host's release, signed-by its key.
    source = host_sh(bare, DOCKER_CE_HOST, "cat", DOCKER_SOURCES)
    assert source.startswith("deb [signed-by=/etc/apt/keyrings/fleet-docker.gpg] http://")
    assert source.rstrip().endswith("/docker/debian bookworm stable"), source
    status = host_sh(bare, DOCKER_CE_HOST, "dpkg-query", "-W", "-f", "${Status}", "docker-ce")
    assert status == "install ok installed"
    kinds = [c["kind"] for c in doc["hosts"][DOCKER_CE_HOST]["details"]["changes"]]
    assert "docker_user_added" in kinds, kinds
    # Its engine keeps its images on the second disk, from the start.
    root = host_sh(bare, DOCKER_CE_HOST, "docker", "info", "--format", "{{.DockerRootDir}}")
    assert root == "/srv/docker\n"
    assert '"data-root": "/srv/docker"' in host_sh(bare, DOCKER_CE_HOST, "cat", DAEMON_JSON)
    assert host_sh(bare, HOST, "docker", "info", "--format", "{{.DockerRootDir}}") == (
        "/var/lib/docker\n"  # not asked: where the package puts it
    )
    # The deploy user may use the engine now, without sudo.
    as_deploy = host_run(bare, DOCKER_CE_HOST, "runuser", "-u", "deploy", "--", "docker", "ps")
    assert as_deploy.ok, as_deploy.stderr

    code, doc = provision(capsys, path, "--project", str(project.root), hosts="all")
    assert code == 0, doc
    for name in (HOST, DOCKER_CE_HOST):
        again = doc["hosts"][name]
        assert (again["outcome"], again["reason"]) == ("ok", "nothing to change"), again

    code, doc = run_project_json(capsys, path, project, "deploy", "all", project.built[0])
    assert code == 0, doc
    for name in (HOST, DOCKER_CE_HOST):
        container = framework_container(bare, name, project.repository)
        runtime = host_sh(
            bare, name, "docker", "inspect", "-f", "{{.HostConfig.Runtime}}", container
        )
        assert runtime.strip() == "nvidia"
        inside = host_sh(bare, name, "docker", "exec", container, "nvidia-smi", "-L")
        assert inside.startswith("GPU 0: NVIDIA A100-SXM4-80GB"), inside

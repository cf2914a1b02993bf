"""End to end on the lab: fleet provision configures each host's Docker engine.

daemon.json is merged (the operator's keys kept), live-restore turned on by a reload, log
rotation set with a restart that running containers survive; what cannot be done safely
is refused with the evidence, and the file and the engine are left as they were. Each test
puts back the hosts' daemon.json and init script and restarts their engines with them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.lab import nodes as lab
from tests.conftest import LabFixture, ensure_image, host_run, host_sh, restart_engine
from tests.test_provision_e2e import HOSTS, Sandbox, read_bytes

pytestmark = pytest.mark.lab

DAEMON_JSON = "/etc/docker/daemon.json"
INIT = "/etc/init.d/docker"
SURVIVOR = "fleet-e2e-survivor"


def write(env: LabFixture, host: str, path: str, content: bytes, mode: str = "0644") -> None:
    script = 'cat >"$1.e2e" && chmod "$2" "$1.e2e" && mv "$1.e2e" "$1"'
    ran = host_run(env, host, "sh", "-c", script, "write", path, mode, stdin=content)
    assert ran.ok, ran.stderr


def dockerd_pid(env: LabFixture, host: str) -> str:
    return host_run(env, host, "cat", "/var/run/docker.pid").stdout.strip()


def engine_says(env: LabFixture, host: str, template: str) -> str:
    ran = host_run(env, host, "docker", "info", "--format", template)
    assert ran.ok, ran.stderr
    return ran.stdout.strip()


def unconfigured(env: LabFixture, host: str, **extra: Any) -> dict[str, Any]:
    """The host's daemon.json without what fleet sets, plus ``extra``; written, and the
    engine restarted with it (so that the running engine has live-restore off)."""
    document = json.loads(read_bytes(env, host, DAEMON_JSON))
    document.pop("live-restore", None)
    document.pop("log-opts", None)
    document.update(extra)
    write(env, host, DAEMON_JSON, json.dumps(document).encode())
    restart_engine(env, host)
    return document


@pytest.fixture
def sandbox(lab_env: LabFixture, tmp_path: Path) -> Iterator[Sandbox]:
    saved = {
        host: (read_bytes(lab_env, host, DAEMON_JSON), read_bytes(lab_env, host, INIT))
        for host in HOSTS
    }
    box = Sandbox(lab_env, tmp_path, 18350)
    box.settings.pop("engine")
    try:
        yield box
    finally:
        box.clean()
        for host, (daemon_json, init) in saved.items():
            host_run(lab_env, host, "docker", "rm", "-f", SURVIVOR)
            write(lab_env, host, DAEMON_JSON, daemon_json)
            write(lab_env, host, INIT, init, "0755")
            host_run(lab_env, host, "sh", "-c", "rm -f /etc/docker/daemon.json.fleet-*.bak")
            restart_engine(lab_env, host)


def test_the_engine_config_is_merged_and_a_running_container_survives_the_restart(
    lab_env: LabFixture, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    before: dict[str, dict[str, Any]] = {}
    survivor: dict[str, tuple[str, str]] = {}
    pids = {}
    for host in HOSTS:
        before[host] = unconfigured(lab_env, host, labels=["rack=7"], **{"shutdown-timeout": 20})
        assert engine_says(lab_env, host, "{{.LiveRestoreEnabled}}") == "false"
        image = ensure_image(lab_env, host)
        ran = host_run(
            lab_env, host, "docker", "run", "-d", "--name", SURVIVOR, image, "sleep", "600"
        )
        assert ran.ok, ran.stderr
        started = host_run(
            lab_env, host, "docker", "inspect", "-f", "{{.Id}} {{.State.StartedAt}}", SURVIVOR
        ).stdout.split()
        survivor[host] = (started[0], started[1])
        pids[host] = dockerd_pid(lab_env, host)
    old_bytes = {host: read_bytes(lab_env, host, DAEMON_JSON) for host in HOSTS}

    code, doc = sandbox.provision(capsys, sandbox.inventory(), "--skip-base")
    assert code == 0, doc
    for host in HOSTS:
        result = doc["hosts"][host]
        assert result["outcome"] == "changed", result
        (change,) = [c for c in result["details"]["changes"] if c["kind"] == "engine_configured"]
        assert "restart the engine" in change["what"]
        after = json.loads(read_bytes(lab_env, host, DAEMON_JSON))
        # The operator's keys, every one with its value; fleet's added.
        assert {k: after[k] for k in before[host]} == before[host]
        assert after["live-restore"] is True
        assert after["log-opts"] == {"max-size": "100m", "max-file": "3"}
        backups = host_run(lab_env, host, "sh", "-c", "ls /etc/docker/daemon.json.fleet-*.bak")
        (backup,) = backups.stdout.split()
        assert read_bytes(lab_env, host, backup) == old_bytes[host]
        # The engine restarted with it, and the container ran on through the restart.
        assert dockerd_pid(lab_env, host) != pids[host]
        assert engine_says(lab_env, host, "{{.LiveRestoreEnabled}}") == "true"
        state = host_run(
            lab_env,
            host,
            "docker",
            "inspect",
            "-f",
            "{{.Id}} {{.State.StartedAt}} {{.State.Running}}",
            SURVIVOR,
        ).stdout.split()
        assert state == [*survivor[host], "true"], (host, state)

    code, doc = sandbox.provision(capsys, sandbox.inventory(), "--skip-base")
    assert code == 0, doc
    for host in HOSTS:
        assert doc["hosts"][host]["outcome"] == "ok", doc["hosts"][host]


def test_a_daemon_json_that_is_not_json_fails_its_host_and_is_left_alone(
    lab_env: LabFixture, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = b'{"live-restore": true,\n  "log-opts": {oops}\n'
    write(lab_env, "lab1", DAEMON_JSON, broken)  # the running engine keeps its old one
    pid = dockerd_pid(lab_env, "lab1")
    code, doc = sandbox.provision(capsys, sandbox.inventory(), "--skip-base")
    assert code == 2, doc
    lab1 = doc["hosts"]["lab1"]
    assert lab1["outcome"] == "failed"
    assert lab1["reason"].startswith(f"{DAEMON_JSON} is not valid JSON: "), lab1
    assert "fix the file by hand" in lab1["fix"]
    assert read_bytes(lab_env, "lab1", DAEMON_JSON) == broken
    assert dockerd_pid(lab_env, "lab1") == pid
    assert not host_run(lab_env, "lab1", "test", "-e", sandbox.root).ok  # nothing half-done
    assert doc["hosts"]["lab2"]["outcome"] in ("ok", "changed"), doc["hosts"]["lab2"]


# An init script whose engine will not start with rotated logs: an engine that does not
# come back after the restart with the new configuration.
_REFUSING_INIT = """#!/bin/sh
if [ "$1" = start ] || [ "$1" = restart ]; then
  if grep -q max-file /etc/docker/daemon.json; then
    [ "$1" = restart ] && /etc/init.d/docker.real stop
    exit 1
  fi
fi
exec /etc/init.d/docker.real "$@"
"""


def test_an_engine_that_does_not_come_back_gets_its_old_config_back(
    lab_env: LabFixture, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    unconfigured(lab_env, "lab1")
    old = read_bytes(lab_env, "lab1", DAEMON_JSON)
    write(lab_env, "lab1", "/etc/init.d/docker.real", read_bytes(lab_env, "lab1", INIT), "0755")
    write(lab_env, "lab1", INIT, _REFUSING_INIT.encode(), "0755")
    # Not a minute: the engine that does not come back is not waited for long here.
    sandbox.settings["engine"] = {"restart_timeout": 8}
    try:
        code, doc = sandbox.provision(capsys, sandbox.inventory(), "--skip-base")
    finally:
        host_run(lab_env, "lab1", "mv", "/etc/init.d/docker.real", INIT)
    assert code == 2, doc
    lab1 = doc["hosts"]["lab1"]
    assert lab1["outcome"] == "failed", lab1
    assert "the engine did not come back after the restart" in lab1["reason"], lab1
    backup = host_run(lab_env, "lab1", "sh", "-c", "ls /etc/docker/daemon.json.fleet-*.bak")
    assert f"restored from {backup.stdout.strip()}" in lab1["reason"], lab1
    assert read_bytes(lab_env, "lab1", DAEMON_JSON) == old
    assert engine_says(lab_env, "lab1", "{{.ServerVersion}}")  # it runs, with the old one


def test_a_restart_that_would_stop_containers_is_refused_with_the_evidence(
    lab_env: LabFixture, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    unconfigured(lab_env, "lab1", **{"live-restore": False})
    image = ensure_image(lab_env, "lab1", lab.LAYER1_IMAGE)
    assert host_run(
        lab_env, "lab1", "docker", "run", "-d", "--name", SURVIVOR, image, "sleep", "600"
    ).ok
    old = read_bytes(lab_env, "lab1", DAEMON_JSON)
    pid = dockerd_pid(lab_env, "lab1")
    code, doc = sandbox.provision(capsys, sandbox.inventory(), "--skip-base")
    assert code == 2, doc
    lab1 = doc["hosts"]["lab1"]
    running = len(host_sh(lab_env, "lab1", "docker", "ps", "-q").split())  # ours and others'
    assert running >= 1
    expected = f"with live-restore off (your daemon.json) it would stop the {running} running"
    assert expected in lab1["reason"], lab1
    assert "live-restore is false (yours, kept)" in " ".join(lab1["details"]["warnings"])
    assert read_bytes(lab_env, "lab1", DAEMON_JSON) == old
    assert dockerd_pid(lab_env, "lab1") == pid
    running = host_run(lab_env, "lab1", "docker", "inspect", "-f", "{{.State.Running}}", SURVIVOR)
    assert running.stdout.strip() == "true"


def test_a_data_root_for_an_engine_that_holds_images_is_refused_and_nothing_moves(
    lab_env: LabFixture, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_image(lab_env, "lab1", lab.LAYER1_IMAGE)
    old = read_bytes(lab_env, "lab1", DAEMON_JSON)
    pid = dockerd_pid(lab_env, "lab1")
    sandbox.settings["engine"] = {"data_root": "/srv/docker"}
    code, doc = sandbox.provision(capsys, sandbox.inventory(), "--skip-base")
    assert code == 2, doc
    lab1 = doc["hosts"]["lab1"]
    images = engine_says(lab_env, "lab1", "{{.Images}}")
    assert int(images) >= 1
    assert "setting data-root: /srv/docker moves the engine, which holds" in lab1["reason"]
    assert f"{images} image(s) in /var/lib/docker: they would stay behind there" in lab1["reason"]
    assert read_bytes(lab_env, "lab1", DAEMON_JSON) == old
    assert dockerd_pid(lab_env, "lab1") == pid
    assert engine_says(lab_env, "lab1", "{{.DockerRootDir}}") == "/var/lib/docker"

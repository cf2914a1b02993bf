"""Faults injected into real rollouts on the lab: what fleet reports, and what survives."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleet import lab
from tests.conftest import LabFixture, clear_framework, heal, run_json, run_project_json
from tests.framework import FrameworkProject

pytestmark = [pytest.mark.lab, pytest.mark.faults]


@pytest.fixture(scope="module")
def project(
    lab_env: LabFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrameworkProject]:
    clear_framework(lab_env)
    built = FrameworkProject.create(
        tmp_path_factory.mktemp("fw") / "cauchy", f"fleet-test-faults-{uuid.uuid4().hex[:6]}"
    )
    built.commit_and_build("v1")
    built.commit_and_build("v2")
    yield built
    built.remove_images()


fleet = run_project_json


def running_tag(env: LabFixture, host: str) -> str:
    container = lab.engine_client().containers.get(env.host(host).container)
    code, out = container.exec_run(
        [
            "docker",
            "inspect",
            "-f",
            '{{index .Config.Labels "io.fleet.tag"}} {{.State.Status}}',
            "cauchy_service",
        ]
    )
    tag, _, state = out.decode().strip().partition(" ")
    return tag if code == 0 and state == "running" else ""


def test_frozen_host_times_out_named_and_does_not_hold_up_the_others(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    v1, v2 = project.built
    assert fleet(capsys, fast_inventory, project, "deploy", "all", v1)[0] == 0
    frozen = lab.engine_client().containers.get(lab_env.host("lab2").container)
    frozen.pause()
    try:
        started = time.monotonic()
        code, doc = fleet(capsys, fast_inventory, project, "deploy", "all", v2, "--timeout", "6")
        elapsed = time.monotonic() - started
    finally:
        frozen.unpause()
    assert code == 3, doc["hosts"]["lab2"]["reason"]
    assert doc["hosts"]["lab2"]["outcome"] == "unreachable"
    assert (
        "timed out" in doc["hosts"]["lab2"]["reason"]
        or "handshake" in doc["hosts"]["lab2"]["reason"]
    )
    assert doc["hosts"]["lab1"]["outcome"] == "changed"
    assert elapsed < 60, f"the frozen host held the run up for {elapsed:.0f}s"
    assert running_tag(lab_env, "lab1") == v2
    assert running_tag(lab_env, "lab2") == v1  # untouched, still running the old version
    # A rerun converges the whole fleet.
    code, doc = fleet(capsys, fast_inventory, project, "deploy", "all", v2)
    assert code == 0, doc
    assert running_tag(lab_env, "lab2") == v2


def test_new_version_unhealthy_on_one_host_only(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys, tmp_path: Path
) -> None:
    v1, v2 = project.built
    assert fleet(capsys, fast_inventory, project, "deploy", "all", v1)[0] == 0
    # Only lab2's settings make the service fail its health check.
    document = yaml.safe_load(fast_inventory.read_text())
    host = document["all"]["children"]["lab"]["hosts"]["lab2"]
    group = document["all"]["children"]["lab"]["vars"]["fleet_run_overrides"]
    host["fleet_run_overrides"] = {**group, "env": {"CAUCHY_FAIL_HEALTH": "1"}}
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(document))
    code, doc = fleet(capsys, broken, project, "deploy", "all", v2)
    assert code == 2
    assert doc["hosts"]["lab1"]["outcome"] == "changed"
    assert doc["hosts"]["lab2"]["outcome"] == "failed"
    assert f"rolled back to {v1}" in doc["hosts"]["lab2"]["reason"]
    assert running_tag(lab_env, "lab2") == v1
    history = (
        lab.engine_client()
        .containers.get(lab_env.host("lab2").container)
        .exec_run(["tail", "-n", "1", "/var/lib/fleet/history.jsonl"])
        .output
    )
    assert json.loads(history)["outcome"] == "failed"
    code, doc = fleet(capsys, fast_inventory, project, "deploy", "all", v2)
    assert code == 0, doc["hosts"]["lab2"]["reason"]
    assert running_tag(lab_env, "lab2") == v2


def test_sshd_killed_mid_deploy_leaves_the_old_version_running(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    v1, v2 = project.built
    assert fleet(capsys, fast_inventory, project, "deploy", "all", v1)[0] == 0
    victim = lab.engine_client().containers.get(lab_env.host("lab2").container)

    def kill_sshd_after_the_image_arrived() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (
                victim.exec_run(
                    ["sh", "-c", f"docker image ls -q {project.repository}:{v2} | grep -q ."]
                ).exit_code
                == 0
            ):
                # Only the SSH sessions: the host's engine and framework keep running.
                victim.exec_run(["sh", "-c", "pkill -f 'sshd: root' || true"])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_sshd_after_the_image_arrived)
    killer.start()
    try:
        code, doc = fleet(capsys, fast_inventory, project, "deploy", "all", v2)
    finally:
        killer.join()
    assert doc["hosts"]["lab1"]["outcome"] == "changed"
    assert doc["hosts"]["lab2"]["outcome"] in ("unreachable", "failed", "changed")
    # Whatever the moment: lab2 runs a framework (old or new), and a rerun converges.
    assert running_tag(lab_env, "lab2") in (v1, v2)
    code, doc = fleet(capsys, fast_inventory, project, "deploy", "all", v2)
    assert code == 0, doc
    assert running_tag(lab_env, "lab2") == v2


def _silent_server() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server, server.getsockname()[1]


@pytest.mark.parametrize("behaviour", ["never answers", "sends garbage"])
def test_hostile_ssh_peer_is_unreachable_with_the_reason(
    lab_env: LabFixture, capsys, tmp_path: Path, behaviour: str
) -> None:
    server, port = _silent_server()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        held = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)
            if behaviour == "sends garbage":
                conn.sendall(b"\x00\xffHELLO not ssh at all\r\n" * 50)
        for conn in held:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    document = yaml.safe_load(lab_env.inventory.read_text())
    document["all"]["children"]["lab"]["hosts"]["evil"] = {
        "ansible_host": "127.0.0.1",
        "ansible_port": port,
    }
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump(document))
    try:
        started = time.monotonic()
        code, doc = run_json(
            capsys, "ping", "all", "-i", str(path), "--timeout", "3", "--retry-file", "/dev/null"
        )
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        server.close()
    assert code == 3
    assert doc["hosts"]["evil"]["outcome"] == "unreachable"
    assert (
        "127.0.0.1" in doc["hosts"]["evil"]["reason"]
        or "handshake" in doc["hosts"]["evil"]["reason"]
    )
    assert doc["hosts"]["lab1"]["outcome"] == "ok" and doc["hosts"]["lab2"]["outcome"] == "ok"
    assert elapsed < 20


def test_heal_after_faults(lab_env: LabFixture) -> None:
    """Leave the lab as the next tests expect it."""
    healed = heal(lab_env)
    assert [h.state for h in healed.lab.hosts] == ["running", "running"]


def test_ctrl_c_mid_rollout_releases_locks_and_leaves_every_host_running(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    v1, v2 = project.built
    assert fleet(capsys, fast_inventory, project, "deploy", "all", v1)[0] == 0
    argv = [
        sys.executable,
        "-m",
        "fleet",
        "deploy",
        "all",
        v2,
        "--serial",
        "1",
        "-i",
        str(fast_inventory),
    ]
    argv += ["--project", str(project.root), "--retry-file", "/dev/null"]
    controller = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    time.sleep(2.5)  # in the middle of the first batch
    controller.send_signal(signal.SIGINT)
    _, err = controller.communicate(timeout=120)
    assert controller.returncode == 130, err[-2000:]
    assert "RECAP deploy" in err  # what was done so far is printed
    for host in ("lab1", "lab2"):
        lock = (
            lab.engine_client()
            .containers.get(lab_env.host(host).container)
            .exec_run(["test", "-e", "/var/lib/fleet/deploy.lock"])
        )
        assert lock.exit_code != 0, f"{host} still locked"
        assert running_tag(lab_env, host) in (v1, v2), f"{host} runs no framework"
    code, doc = fleet(capsys, fast_inventory, project, "deploy", "all", v2)
    assert code == 0, doc
    assert running_tag(lab_env, "lab1") == v2 and running_tag(lab_env, "lab2") == v2

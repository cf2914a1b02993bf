"""End to end on the lab: ping, exec and facts over real SSH with pinned host keys."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from fleet.lab import nodes as lab
from tests.conftest import LabFixture, heal, run_cli, run_json

pytestmark = pytest.mark.lab


def test_ping_all(lab_env: LabFixture, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "ping", "all", "-i", str(lab_env.inventory))
    assert code == 0
    assert {h: r["outcome"] for h, r in doc["hosts"].items()} == {"lab1": "ok", "lab2": "ok"}
    assert doc["summary"]["ok"] == 2


def test_exec_output_per_host(lab_env: LabFixture, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "exec", "all", "-i", str(lab_env.inventory), "--", "hostname")
    assert code == 0
    assert "--- lab1 changed rc=0\nlab1\n" in out
    assert "--- lab2 changed rc=0\nlab2\n" in out
    assert "2 hosts in" in err and "changed=2" in err


def test_exec_arguments_are_never_interpreted_by_a_shell(
    lab_env: LabFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = "x; touch /tmp/pwned; $(touch /tmp/pwned2) `touch /tmp/pwned3`"
    code, doc = run_json(
        capsys, "exec", "lab1", "-i", str(lab_env.inventory), "--", "echo", hostile
    )
    assert code == 0
    assert doc["hosts"]["lab1"]["stdout"] == hostile + "\n"
    code, doc = run_json(capsys, "exec", "lab1", "-i", str(lab_env.inventory), "--", "ls", "/tmp")
    assert "pwned" not in doc["hosts"]["lab1"]["stdout"]


def test_exec_failure_is_failed_with_exit_2(
    lab_env: LabFixture, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    code, doc = run_json(
        capsys,
        "exec",
        "all",
        "-i",
        str(lab_env.inventory),
        "--retry-file",
        str(tmp_path / "retry"),
        "--shell",
        "--",
        'test "$(hostname)" = lab1',
    )
    assert code == 2
    assert doc["hosts"]["lab1"]["outcome"] == "changed"
    assert doc["hosts"]["lab2"]["outcome"] == "failed"
    assert doc["hosts"]["lab2"]["details"]["exit_code"] == 1
    assert (tmp_path / "retry").read_text() == "lab2\n"


def test_facts(lab_env: LabFixture, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "facts", "all", "-i", str(lab_env.inventory))
    assert code == 0
    lab1 = doc["hosts"]["lab1"]["details"]["facts"]
    lab2 = doc["hosts"]["lab2"]["details"]["facts"]
    assert (lab1["hostname"], lab1["image_store"]) == ("lab1", "classic")
    assert (lab2["hostname"], lab2["image_store"]) == ("lab2", "containerd")
    assert lab2["api_version"] >= "1.45"
    # A lab host is a GPU server (simulated): one GPU, the nvidia runtime.
    assert [g["model"] for g in lab1["gpus"]] == ["NVIDIA A100-SXM4-80GB"]
    assert "nvidia" in lab1["runtimes"]
    assert lab1["disk_docker"]["free"] > 0


def _inventory_with_known_hosts(lab_env: LabFixture, tmp_path: Path, known_hosts: Path) -> Path:
    document = yaml.safe_load(lab_env.inventory.read_text())
    group_vars = document["all"]["children"]["lab"]["vars"]
    group_vars["fleet_known_hosts"] = str(known_hosts)
    group_vars["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={known_hosts}"
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_unknown_host_key_refused_then_accepted_with_flag(
    lab_env: LabFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts to fall back on
    known = tmp_path / "known_hosts"
    inventory = _inventory_with_known_hosts(lab_env, tmp_path, known)
    code, doc = run_json(capsys, "ping", "lab1", "-i", str(inventory))
    assert code == 3
    assert "unknown host key" in doc["hosts"]["lab1"]["reason"]
    assert "--accept-new-host-keys" in doc["hosts"]["lab1"]["fix"]
    code, doc = run_json(capsys, "ping", "lab1", "-i", str(inventory), "--accept-new-host-keys")
    assert code == 0
    recorded = known.read_text().split()
    pinned = lab_env.lab.known_hosts.read_text().splitlines()[0].split()
    assert recorded == pinned  # the key accepted is the host's real key
    code, _ = run_json(capsys, "ping", "lab1", "-i", str(inventory))
    assert code == 0


def test_changed_host_key_refused_with_both_fingerprints(
    lab_env: LabFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    lab1 = lab_env.host("lab1")
    lab2_line = lab_env.lab.known_hosts.read_text().splitlines()[1].split()
    known = tmp_path / "known_hosts"
    # lab1's address with lab2's key: what a man in the middle would look like.
    known.write_text(f"[127.0.0.1]:{lab1.port} {lab2_line[1]} {lab2_line[2]}\n")
    inventory = _inventory_with_known_hosts(lab_env, tmp_path, known)
    code, doc = run_json(capsys, "ping", "lab1", "-i", str(inventory), "--accept-new-host-keys")
    assert code == 3
    reason = doc["hosts"]["lab1"]["reason"]
    assert "CHANGED" in reason and reason.count("SHA256:") == 2


def test_host_stopped_mid_run_is_unreachable_and_retry_reruns_only_it(
    lab_env: LabFixture, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    client = lab.engine_client()
    victim = client.containers.get(lab_env.host("lab2").container)
    retry = tmp_path / "retry"

    def stop_soon() -> None:
        time.sleep(1.0)
        victim.stop(timeout=0)

    stopper = threading.Thread(target=stop_soon)
    stopper.start()
    try:
        code, doc = run_json(
            capsys,
            "exec",
            "all",
            "-i",
            str(lab_env.inventory),
            "--retry-file",
            str(retry),
            "--",
            "sleep",
            "4",
        )
    finally:
        stopper.join()
    try:
        assert code == 3, doc
        assert doc["hosts"]["lab1"]["outcome"] == "changed"
        assert doc["hosts"]["lab2"]["outcome"] == "unreachable"
        assert retry.read_text() == "lab2\n"
    finally:
        heal(lab_env)
    code, doc = run_json(
        capsys, "ping", "all", "-i", str(lab_env.inventory), "--limit", f"@{retry}"
    )
    assert code == 0
    assert list(doc["hosts"]) == ["lab2"]


def test_unreachable_host_does_not_hold_up_the_others(
    lab_env: LabFixture, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    document = yaml.safe_load(lab_env.inventory.read_text())
    # A port nobody listens on: connection refused, named, the other host fine.
    document["all"]["children"]["lab"]["hosts"]["ghost"] = {
        "ansible_host": "127.0.0.1",
        "ansible_port": 9,
    }
    inventory = tmp_path / "inv.yml"
    inventory.write_text(yaml.safe_dump(document))
    code, doc = run_json(
        capsys, "ping", "all", "-i", str(inventory), "--retry-file", str(tmp_path / "r")
    )
    assert code == 3
    assert doc["hosts"]["ghost"]["outcome"] == "unreachable"
    assert "127.0.0.1:9" in doc["hosts"]["ghost"]["reason"]
    assert doc["hosts"]["lab1"]["outcome"] == "ok"

"""Shared fixtures: the test lab (real sshd + real Docker engines) and CLI helpers."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet import lab
from fleet.cli import main
from fleet.transport import KnownHosts, SSHTransport

# Unique per test session: several sessions (developers, CI) may share one engine.
TEST_LAB = os.environ.get("FLEET_TEST_LAB", f"fleet-test-{os.getpid()}")


@dataclass(frozen=True)
class LabFixture:
    """A running test lab and its generated inventory."""

    lab: lab.Lab
    inventory: Path
    state: Path

    def host(self, name: str) -> lab.LabHost:
        return next(h for h in self.lab.hosts if h.name == name)


def _engine_answers() -> bool:
    try:
        lab.engine_client()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def lab_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFixture]:
    """A two-host lab (one classic, one containerd engine), shared by the session."""
    if not _engine_answers():
        if os.environ.get("CI"):
            pytest.fail(
                "the controller's Docker engine is not running (scripts/setup.sh starts it)"
            )
        pytest.skip("no Docker engine on this machine: run scripts/setup.sh")
    _remove_abandoned_test_labs()
    state = tmp_path_factory.mktemp("labstate")
    os.environ["FLEET_LAB_DIR"] = str(state)
    inventory = tmp_path_factory.mktemp("labinv") / "lab.yml"
    started = lab.up(2, "mixed", name=TEST_LAB, inventory=inventory)
    yield LabFixture(started, inventory, state)
    lab.down(name=TEST_LAB, inventory=inventory)
    shutil.rmtree(state, ignore_errors=True)


def _remove_abandoned_test_labs() -> None:
    """Labs of test sessions that died without tearing down (their process is gone)."""
    client = lab.engine_client()
    names = {
        c.labels.get(lab.LABEL, "")
        for c in client.containers.list(all=True, filters={"label": lab.LABEL})
    }
    for name in names:
        pid = name.removeprefix("fleet-test-")
        if name.startswith("fleet-test-") and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            lab.down(name=name)


def heal(env: LabFixture) -> LabFixture:
    """Bring every test-lab host back (after a test stopped one) and return the new lab."""
    started = lab.up(2, "mixed", name=TEST_LAB, inventory=env.inventory)
    return LabFixture(started, env.inventory, env.state)


@pytest.fixture(scope="module")
def fast_inventory(lab_env: LabFixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's inventory with a short health timeout, so failing versions fail fast."""
    document = yaml.safe_load(lab_env.inventory.read_text())
    group = document["all"]["children"]["lab"]["vars"]
    group["fleet_run_overrides"] = {
        **group["fleet_run_overrides"],
        "health": {"timeout": 15, "interval": 0.5},
    }
    path = tmp_path_factory.mktemp("fastinv") / "lab.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def host_sh(env: LabFixture, host: str, *argv: str) -> str:
    """Run argv on a lab host over SSH (pinned keys); its stdout."""
    endpoint = next(e for e in lab.endpoints(env.lab) if e.name == host)
    transport = SSHTransport(endpoint, KnownHosts([env.lab.known_hosts]))
    try:
        return transport.run(list(argv), check=False).stdout
    finally:
        transport.close()


def clear_framework(env: LabFixture) -> None:
    """Remove every framework container from the lab's hosts (another module's deploys).

    Each test module deploys its own framework repository under the same container name
    and port, as one lab would; on a real host there is only one.
    """
    for host in env.lab.hosts:
        host_sh(
            env,
            host.name,
            "sh",
            "-c",
            'ids=$(docker ps -aq --filter label=io.fleet.framework); [ -z "$ids" ] || docker rm -f $ids >/dev/null; rm -f /var/lib/fleet/deploy.lock',
        )


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run fleet in-process; (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_project_json(
    capsys: pytest.CaptureFixture[str], inventory: Path, project: Any, *args: str
) -> tuple[int, dict[str, Any]]:
    """Run a fleet command on the lab for a test framework project; (exit code, JSON)."""
    return run_json(
        capsys,
        *args,
        "-i",
        str(inventory),
        "--project",
        str(project.root),
        "--retry-file",
        "/dev/null",
    )


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    args = list(argv)
    cut = args.index("--") if "--" in args else len(args)
    code, out, err = run_cli(capsys, *args[:cut], "--json", *args[cut:])
    try:
        return code, json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"not one JSON document on stdout:\n{out}\nstderr:\n{err}") from None

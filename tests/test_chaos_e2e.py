"""A seeded chaos soak: rollouts hit by one random fault at a random moment, then rerun.

The module has a lab of its own (lab1 and lab3 classic, lab2 containerd). Each round
builds a new version, starts ``fleet deploy all VERSION`` as a process of its own, and at a
moment drawn from the seed injects one fault into one host (or the controller):

* the controller killed with SIGKILL (a laptop that sleeps, an OOM kill);
* a host frozen (``docker pause``) for longer than the command timeout;
* a host restarted (its sshd and engine with it);
* the host's SSH sessions killed (the listener lives on);
* the host's Docker engine restarted;
* the disk full mid-load (a tiny filesystem over the engine's TMPDIR and, on the
  containerd store, its content store: the load fails with ENOSPC).

The fault is lifted, and one clean rerun (no ``--wait``, no manual step) must exit 0.
Then every host must run exactly one framework container, of the new version; ``fleet
audit --expect`` must agree; no lock may be left, nor a temporary file of fleet's; no tag
may point at anything but the controller's build; and the history must hold exactly one
switch line to the new version per host. Each round is a row of the chaos table printed
at the session's end (``chaos: N/N rounds converged``). CI runs one round of each fault
(``FLEET_CHAOS_SEED``, default 7, orders them and draws the moments); ``bench/chaos.py``
runs 50 rounds of random faults (``FLEET_CHAOS_ROUNDS``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.lab import nodes as lab
from tests.conftest import (
    CHAOS,
    ENGINE_START,
    ENGINE_STOP,
    TEST_LAB,
    ChaosRound,
    LabFixture,
    clear_framework,
    heal,
    run_json,
    run_project_json,
    start_lab,
    stop_lab,
    write_fast_inventory,
)
from tests.framework import FrameworkProject
from tests.test_faults_e2e import half_tagged, history, host_exec, poll, wait_framework

pytestmark = [pytest.mark.lab, pytest.mark.faults]

HOSTS = ("lab1", "lab2", "lab3")
NAME = "cauchy_service"
SEED = int(os.environ.get("FLEET_CHAOS_SEED", "7"))
FAULTS = (
    "controller SIGKILL",
    "host frozen past the timeout",
    "host restarted",
    "SSH sessions killed",
    "engine restarted",
    "disk full mid-load",
)
# Without FLEET_CHAOS_ROUNDS: one round of each fault, in an order the seed draws.
ROUNDS = int(os.environ.get("FLEET_CHAOS_ROUNDS", "0")) or len(FAULTS)
COMMAND_TIMEOUT = 10
# A disk full mid-load: a filesystem too small for a layer over what a load writes
# through, the engine's TMPDIR (the classic store extracts there) and, on the containerd
# store, its content store (its ingest then fails with ENOSPC; the blobs it holds come
# back with the umount).
_CONTENT = "/var/lib/docker/containerd/daemon/io.containerd.content.v1.content"
_FILL = f"""
mount -t tmpfs -o size=64k fleet-chaos-full /var/lib/docker/tmp || exit 1
if docker info --format '{{{{.DriverStatus}}}}' | grep -q io.containerd.snapshotter; then
  mount -t tmpfs -o size=64k fleet-chaos-full {_CONTENT} || exit 1
  mkdir -p {_CONTENT}/ingest {_CONTENT}/blobs/sha256
fi
"""
_UNFILL = f"umount {_CONTENT} 2>/dev/null; umount /var/lib/docker/tmp 2>/dev/null; true"


@dataclass
class Chaos:
    env: LabFixture
    inventory: Path
    project: FrameworkProject
    # How long a rollout of one new version to every host took here (the moments of the
    # faults are drawn within it, so that they land in a rollout, not after it).
    rollout_seconds: float = 10.0

    def build(self, message: str) -> str:
        """A new version whose top layer is 2 MiB of random bytes (a load takes a moment)."""
        blob = self.project.root / "framework" / "blob.bin"
        blob.write_bytes(os.urandom(2 << 20))
        try:
            return self.project.commit_and_build(message)
        finally:
            blob.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def chaos(lab_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    env = start_lab(lab_state, tmp_path_factory, f"{TEST_LAB}-chaos", len(HOSTS))
    clear_framework(env)
    inventory = write_fast_inventory(env, tmp_path_factory.mktemp("chaosinv") / "lab.yml")
    project = FrameworkProject.create(
        tmp_path_factory.mktemp("fw") / "cauchy", f"fleet-test-chaos-{uuid.uuid4().hex[:6]}"
    )
    CHAOS.seed = SEED
    try:
        first = project.commit_and_build("v1")
        code, doc = run_project_json_quiet(env, inventory, project, "deploy", "all", first)
        assert code == 0, doc
        chaos = Chaos(env, inventory, project)
        calibration = chaos.build("calibration")
        started = time.monotonic()
        code, doc = run_project_json_quiet(env, inventory, project, "deploy", "all", calibration)
        assert code == 0, doc
        chaos.rollout_seconds = time.monotonic() - started
        CHAOS.rollout_seconds = chaos.rollout_seconds
        yield chaos
    finally:
        for host in HOSTS:
            host_exec(env, host, _UNFILL)
        project.remove_images()
        stop_lab(env)


def run_project_json_quiet(
    env: LabFixture, inventory: Path, project: FrameworkProject, *argv: str
) -> tuple[int, dict]:
    """fleet in a process of its own (as the soak's controller is): exit code and JSON."""
    done = subprocess.run(
        [*_fleet(inventory, project, *argv), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError:
        return done.returncode, {"stdout": done.stdout[-2000:], "stderr": done.stderr[-2000:]}


def _fleet(inventory: Path, project: FrameworkProject, *argv: str) -> list[str]:
    return [
        *(sys.executable, "-m", "fleet", *argv),
        *("-i", str(inventory), "--project", str(project.root)),
        *("--retry-file", "/dev/null", "--timeout", str(COMMAND_TIMEOUT)),
    ]


def _container(env: LabFixture, host: str):  # type: ignore[no-untyped-def]
    return lab.engine_client().containers.get(env.host(host).container)


# -- the faults: each returns what it did (the table's "injected") ------------------------
Inject = Callable[[Chaos, str, subprocess.Popen[str], float], str]


def _at(moment: float, controller: subprocess.Popen[str]) -> bool:
    """Sleep until ``moment`` seconds after the rollout started; False when it ended first."""
    deadline = time.monotonic() + moment
    while time.monotonic() < deadline:
        if controller.poll() is not None:
            return False
        time.sleep(0.05)
    return True


def kill_controller(chaos: Chaos, host: str, controller: subprocess.Popen[str], at: float) -> str:
    if not _at(at, controller):
        return "too late: the rollout had ended"
    controller.send_signal(signal.SIGKILL)
    return "SIGKILL"


def freeze_host(chaos: Chaos, host: str, controller: subprocess.Popen[str], at: float) -> str:
    if not _at(at, controller):
        return "too late: the rollout had ended"
    victim = _container(chaos.env, host)
    victim.pause()
    try:
        time.sleep(COMMAND_TIMEOUT + 5)
    finally:
        victim.unpause()
    return f"paused {COMMAND_TIMEOUT + 5}s"


def restart_host(chaos: Chaos, host: str, controller: subprocess.Popen[str], at: float) -> str:
    if not _at(at, controller):
        return "too late: the rollout had ended"
    _container(chaos.env, host).restart(timeout=5)
    return "restarted"


def kill_sessions(chaos: Chaos, host: str, controller: subprocess.Popen[str], at: float) -> str:
    if not _at(at, controller):
        return "too late: the rollout had ended"
    # Each connection's own process: "sshd: root@notty", or "sshd-session: root@notty"
    # since OpenSSH 9.8 (Debian trixie); the listener lives on.
    code, _ = host_exec(chaos.env, host, "pkill -KILL -f 'sshd(-session)?: [^ ]+@'")
    return "sessions killed" if code == 0 else "no session to kill"


def restart_engine(chaos: Chaos, host: str, controller: subprocess.Popen[str], at: float) -> str:
    if not _at(at, controller):
        return "too late: the rollout had ended"
    code, out = host_exec(chaos.env, host, ENGINE_STOP + "\n" + ENGINE_START)
    assert code == 0, out
    return "engine restarted"


def fill_disk(chaos: Chaos, host: str, controller: subprocess.Popen[str], at: float) -> str:
    if not _at(at, controller):
        return "too late: the rollout had ended"
    code, out = host_exec(chaos.env, host, _FILL)
    assert code == 0, out
    loading = poll(lambda: host_exec(chaos.env, host, "pgrep -f 'docker load'")[0] == 0, 15)
    time.sleep(2)
    return "filled while loading" if loading else "filled (no load seen)"


INJECT: dict[str, Inject] = dict(
    zip(
        FAULTS,
        (kill_controller, freeze_host, restart_host, kill_sessions, restart_engine, fill_disk),
        strict=True,
    )
)


def lift(chaos: Chaos, fault: str, host: str) -> None:
    """Undo the fault: the host answers again, its engine runs, its disk has room."""
    if fault == "disk full mid-load":
        host_exec(chaos.env, host, _UNFILL)
    if fault == "host restarted":
        chaos.env = heal(chaos.env)
    if fault in ("host restarted", "engine restarted"):
        poll(lambda: host_exec(chaos.env, host, "docker version")[0] == 0, 120, every=0.5)


# -- the invariants -----------------------------------------------------------------------
def invariants(chaos: Chaos, target: str, before: dict[str, int], capsys) -> list[str]:
    env, project = chaos.env, chaos.project
    problems: list[str] = []
    for host in HOSTS:
        running = wait_framework(env, host, {target}, 60)
        if not (running.healthy and running.tag == target):
            problems.append(
                f"{host} runs {running.tag or 'no framework'} (healthy={running.healthy})"
            )
        _, out = host_exec(
            env,
            host,
            f"docker ps --filter label=io.fleet.framework={project.repository} --format '{{{{.Names}}}}'",
        )
        if out.split() != [NAME]:
            problems.append(f"{host}: running framework containers {out.split()}")
        code, out = host_exec(env, host, "ls -A /var/lib/fleet; ls -d /tmp/tmp.* 2>/dev/null")
        left = set(out.split()) - {"history.jsonl", "deploy.lock.guard"}
        if left:
            problems.append(f"{host}: left behind {sorted(left)}")
        switches = [e for e in history(env, host)[before[host] :] if e.get("outcome") != "lock"]
        to_target = [e for e in switches if e.get("outcome") == "changed" and e.get("to") == target]
        if len(to_target) != 1:
            problems.append(f"{host}: {len(to_target)} history lines of the switch to {target}")
    problems += [bad for h in HOSTS for bad in half_tagged(env, h, project.repository, {target})]
    code, doc = run_json(
        capsys,
        "audit",
        "all",
        "--expect",
        target,
        *_options(chaos),
        "--repository",
        project.repository,
    )
    if code != 0:
        problems.append(f"audit --expect {target}: exit {code}, {doc.get('summary')}")
    return problems


def _options(chaos: Chaos) -> list[str]:
    return ["-i", str(chaos.inventory), "--retry-file", "/dev/null"]


def _plan(seed: int, rounds: int) -> list[tuple[str, str, float]]:
    """(fault, host, when) per round: every fault once per six rounds, in a seeded order;
    ``when`` is a share of a rollout's duration."""
    rng = random.Random(seed)
    faults: list[str] = []
    while len(faults) < rounds:
        batch = list(FAULTS)
        rng.shuffle(batch)
        faults += batch
    return [
        (fault, rng.choice(HOSTS), round(rng.uniform(0.05, 0.95), 2)) for fault in faults[:rounds]
    ]


@pytest.mark.parametrize(
    ("number", "fault", "host", "when"), [(i + 1, *p) for i, p in enumerate(_plan(SEED, ROUNDS))]
)
def test_a_rollout_hit_by_a_fault_then_rerun_converges(
    chaos: Chaos, number: int, fault: str, host: str, when: float, capsys
) -> None:
    moment = when * chaos.rollout_seconds
    row = ChaosRound(number, fault, host, moment)
    CHAOS.rounds.append(row)
    target = chaos.build(f"chaos round {number}: {fault}")
    before = {h: len(history(chaos.env, h)) for h in HOSTS}
    controller = subprocess.Popen(
        [*_fleet(chaos.inventory, chaos.project, "deploy", "all", target), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        row.hit = INJECT[fault](chaos, host, controller, moment)
    finally:
        controller.communicate(timeout=600)
    row.faulted_exit = None if controller.returncode == -signal.SIGKILL else controller.returncode
    lift(chaos, fault, host)
    # One clean rerun: no --wait, no manual step (a killed controller's lock is taken over).
    row.rerun_exit, doc = run_project_json(
        capsys, chaos.inventory, chaos.project, "deploy", "all", target
    )
    if row.rerun_exit != 0:
        reasons = {h: (r.get("outcome"), r.get("reason")) for h, r in doc.get("hosts", {}).items()}
        row.problems.append(f"rerun: {reasons}")
    row.problems += invariants(chaos, target, before, capsys)
    assert row.converged, "\n".join(row.problems)

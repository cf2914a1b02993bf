"""Faults injected into real rollouts on a mixed lab of four hosts (issue #10).

The module has a lab of its own (lab1 and lab3 classic, lab2 and lab4 containerd): the
session's two-host lab is too small, and four hosts start in about 9 s. Each fault test:

1. the fleet runs BASE (the version the previous fault converged to) on every host;
2. a new version TARGET is built, so the rollout really ships a layer;
3. the fault is injected into ``fleet deploy all TARGET`` (or a rollout playbook);
4. the fault is lifted (host restarted, engine started, disk grown, ...);
5. :func:`check_fault` asserts, the same way for every fault: the outcome reported per
   host is the expected one and agrees with what runs there; every host still runs a
   healthy framework (BASE or TARGET, whichever its outcome says); no tag of the
   framework on any host points at an image other than the controller's build of it; the
   history log has a line for every switch and every rolled-back attempt; and a rerun
   converges the whole fleet to TARGET.

Each check fills the fault's row of the table printed at the end of the session
(``tests/conftest.py``: ``faults survived: N/N``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.images import daemon
from fleet.lab import nodes as lab
from fleet.ship.state import is_current, read_state
from fleet.ssh.known_hosts import KnownHosts
from fleet.ssh.paramiko_client import SSHTransport
from tests.conftest import (
    ENGINE_START,
    ENGINE_STOP,
    FAULTS,
    TEST_LAB,
    FaultRow,
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

pytestmark = [pytest.mark.lab, pytest.mark.faults]

HOSTS = ("lab1", "lab2", "lab3", "lab4")
NAME = "cauchy_service"
# Generous: the machine has 2 cores and other sessions run lab tests at the same time.
RECOVERY_SECONDS = 180.0

FAULT_NAMES = [
    "1 host container killed mid-transfer",
    "2 sshd killed after the image arrived",
    "3 host frozen (docker pause)",
    "4 new version unhealthy on one host",
    "5a disk too small (small filesystem)",
    "5b disk below the configured minimum",
    "6 Ctrl-C of the controller mid-rollout",
    "7 two controllers, overlapping hosts",
    "8 host's engine stopped",
]


# -- the lab, the project, the fleet's state ---------------------------------------------
@dataclass
class Faults:
    """The faults module's lab, inventory, framework project and converged version."""

    env: LabFixture
    inventory: Path
    project: FrameworkProject
    current: str

    def build(self, message: str, blob_mib: int = 0) -> str:
        """A new version; ``blob_mib`` of random data make its top layer that big."""
        blob = self.project.root / "framework" / "blob.bin"
        if blob_mib:
            blob.write_bytes(os.urandom(blob_mib << 20))
        try:
            return self.project.commit_and_build(message)
        finally:
            blob.unlink(missing_ok=True)  # the next version is thin again


@pytest.fixture(scope="module")
def faults(lab_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    env = start_lab(lab_state, tmp_path_factory, f"{TEST_LAB}-faults", len(HOSTS))
    clear_framework(env)  # a lab kept under FLEET_TEST_LAB may hold an older run's
    inventory = write_fast_inventory(env, tmp_path_factory.mktemp("faultsinv") / "lab.yml")
    project = FrameworkProject.create(
        tmp_path_factory.mktemp("fw") / "cauchy", f"fleet-test-faults-{uuid.uuid4().hex[:6]}"
    )
    FAULTS.expected[:] = FAULT_NAMES
    try:
        yield Faults(env, inventory, project, project.commit_and_build("v1"))
    finally:
        project.remove_images()
        stop_lab(env)


fleet = run_project_json


@functools.cache
def _engine() -> Any:
    return lab.engine_client()


def host_exec(env: LabFixture, host: str, script: str) -> tuple[int, str]:
    """Run a shell script in a lab host through the controller's engine, not over SSH."""
    container = _engine().containers.get(env.host(host).container)
    code, out = container.exec_run(["sh", "-c", script])
    return int(code), (out or b"").decode("utf-8", "replace")


# -- observing a host --------------------------------------------------------------------
@dataclass(frozen=True)
class Running:
    """The framework a host runs: its version label, and whether it serves that version."""

    tag: str
    healthy: bool


_PROBE = f"""
tag=$(docker inspect -f '{{{{index .Config.Labels "io.fleet.tag"}}}} {{{{.State.Status}}}}' {NAME} 2>/dev/null)
health=$(curl -s -o /dev/null -m 3 -w '%{{http_code}}' http://127.0.0.1:8339/health)
served=$(curl -s -m 3 http://127.0.0.1:8339/version)
echo "$tag"; echo "$health"; echo "$served"
"""


def framework_on(env: LabFixture, host: str) -> Running:
    code, out = host_exec(env, host, _PROBE)
    lines = [*out.splitlines(), "", "", ""]
    tag, _, state = lines[0].partition(" ")
    try:
        served = json.loads(lines[2]).get("tag", "")
    except (json.JSONDecodeError, AttributeError):
        served = ""
    if code != 0 or state != "running":
        return Running("", False)
    return Running(tag, lines[1] == "200" and served == tag)


def wait_framework(
    env: LabFixture, host: str, wanted: set[str], seconds: float = RECOVERY_SECONDS
) -> Running:
    """What the host runs, once it runs a healthy version of ``wanted`` (or time is up)."""
    deadline = time.monotonic() + seconds
    while True:
        seen = framework_on(env, host)
        if (seen.healthy and seen.tag in wanted) or time.monotonic() > deadline:
            return seen
        time.sleep(1)


def history(env: LabFixture, host: str) -> list[dict[str, Any]]:
    _, out = host_exec(env, host, "cat /var/lib/fleet/history.jsonl 2>/dev/null")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def locked(env: LabFixture, host: str) -> bool:
    return host_exec(env, host, "test -e /var/lib/fleet/deploy.lock")[0] == 0


def half_tagged(env: LabFixture, host: str, repository: str, shipped: set[str]) -> list[str]:
    """Tags of the framework on the host that are not exactly the controller's build.

    Every tag must be a version the controller built; the versions this fault's rollout
    shipped (``shipped``) are compared layer by layer and by config digest.
    """
    _, out = host_exec(
        env, host, f"docker image ls --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {repository}"
    )
    refs = [r for r in out.split() if not r.endswith(":<none>")]
    versions = daemon.list_versions(daemon.connect(), repository)
    built = {f"{repository}:{v.tag}" for v in versions if v.tagged}
    bad = [f"{host}: {ref} was never built on the controller" for ref in refs if ref not in built]
    endpoint = next(e for e in lab.endpoints(env.lab) if e.name == host)
    transport = SSHTransport(endpoint, KnownHosts([env.lab.known_hosts]))
    try:
        for ref in refs:
            if ref not in built or ref.rpartition(":")[2] not in shipped:
                continue
            spec = daemon.image_spec(daemon.connect(), ref)
            state = read_state(transport, ref)
            if not is_current(spec, state):
                bad.append(
                    f"{host}: {ref} is ID {state.target_id[:19]} with {len(state.target_layers)} "
                    f"layers, the controller built {spec.config_digest[:19]} with "
                    f"{len(spec.diff_ids)}"
                )
    finally:
        transport.close()
    return bad


# -- what a rollout reported -------------------------------------------------------------
Results = Mapping[str, Mapping[str, Any]]


def expect(
    results: Results, expected: Mapping[str, set[str]], reasons: Mapping[str, str]
) -> list[str]:
    """Problems with the reported outcomes: not the expected ones, or not the right reason."""
    problems = []
    for host, allowed in expected.items():
        result = results.get(host, {})
        if result.get("outcome") not in allowed:
            problems.append(
                f"{host}: reported {result.get('outcome')} ({result.get('reason')}), "
                f"expected {' or '.join(sorted(allowed))}"
            )
        elif host in reasons and not re.search(reasons[host], str(result.get("reason"))):
            problems.append(f"{host}: reason {result.get('reason')!r} lacks /{reasons[host]}/")
    return problems


def versions_reported(results: Results, base: str, target: str) -> dict[str, set[str]]:
    """What each host should run given what was reported: TARGET if switched, else BASE."""
    return {
        host: {target} if result.get("outcome") in ("ok", "changed") else {base}
        for host, result in results.items()
    }


def rolled_back(results: Results) -> set[str]:
    return {h for h, r in results.items() if r.get("details", {}).get("rolled_back")}


def describe(results: Results, affected: Sequence[str]) -> str:
    """``lab2 unreachable, 3 others changed``: the table's "outcome reported"."""
    parts = [f"{h} {results[h]['outcome']}" for h in affected if h in results]
    others: dict[str, int] = {}
    for host, result in results.items():
        if host not in affected:
            others[result["outcome"]] = others.get(result["outcome"], 0) + 1
    parts += [f"{n} other{'s' if n > 1 else ''} {o}" for o, n in sorted(others.items())]
    return ", ".join(parts)


# -- the checker every fault uses --------------------------------------------------------
@dataclass
class Injected:
    """A fault's run: what was reported and what the checker should expect of it."""

    fault: str
    affected: list[str]
    base: str
    target: str
    reported: str
    problems: list[str]  # the reported outcomes that were not the expected ones
    should_run: dict[str, set[str]]  # per host, the versions its report allows
    attempted: set[str] = field(default_factory=set)  # hosts that rolled a failed try back
    history_before: dict[str, int] = field(default_factory=dict)


def check_fault(faults: Faults, run: Injected, capsys: pytest.CaptureFixture[str]) -> None:
    """Check what survived a fault the same way for all, record its row, then assert."""
    env, project = faults.env, faults.project
    row = FaultRow(run.fault, ", ".join(run.affected), run.reported)
    FAULTS.rows[run.fault] = row
    # Every host ran BASE before: it runs a healthy framework, the version its report says.
    running = {h: wait_framework(env, h, run.should_run[h]) for h in HOSTS}
    down = [
        f"{host}: runs {seen.tag or 'no framework'} (healthy={seen.healthy})"
        for host, seen in running.items()
        if not seen.healthy or seen.tag not in {run.base, run.target} | run.should_run[host]
    ]
    row.framework_running = not down
    wrong = [
        f"{host}: runs {seen.tag}, its report says {run.should_run[host]}"
        for host, seen in running.items()
        if seen.tag and seen.tag not in run.should_run[host]
    ]
    row.outcome_correct = not run.problems and not wrong
    problems = [*run.problems, *down, *wrong]
    # No tag points at anything but the controller's build of that version.
    shipped = {run.base, run.target} | {v for want in run.should_run.values() for v in want}
    whole = [bad for h in HOSTS for bad in half_tagged(env, h, project.repository, shipped)]
    row.images_whole = not whole
    problems += whole
    # A history line for each switch, and for each attempt that was rolled back.
    lines_ok = True
    for host in HOSTS:
        new = history(env, host)[run.history_before.get(host, 0) :]
        now = running[host].tag
        if now != run.base and not (
            new and new[-1]["outcome"] == "changed" and new[-1]["to"] == now
        ):
            lines_ok = False
            problems.append(f"{host}: switched to {now}, history says {new[-1:]}")
        if host in run.attempted and not any(
            e["outcome"] == "failed" and e["to"] == run.target for e in new
        ):
            lines_ok = False
            problems.append(f"{host}: a rolled-back attempt, history says {new}")
    row.history_ok = lines_ok
    # A rerun converges the whole fleet to TARGET.
    code, doc = fleet(capsys, faults.inventory, project, "deploy", "all", run.target)
    after = {h: wait_framework(env, h, {run.target}, 60) for h in HOSTS}
    last = {h: (history(env, h) or [{}])[-1] for h in HOSTS}
    row.converged = (
        code == 0
        and all(s.healthy and s.tag == run.target for s in after.values())
        and all(e.get("to") == run.target and e.get("outcome") == "changed" for e in last.values())
    )
    if not row.converged:
        problems.append(
            f"rerun: exit {code}, "
            + "; ".join(f"{h} {r['outcome']} {r['reason']}" for h, r in doc["hosts"].items())
            + f"; runs {after}; last history lines {last}"
        )
    else:
        faults.current = run.target
    assert not problems, "\n".join(problems)


def start(faults: Faults, capsys: pytest.CaptureFixture[str], message: str, blob_mib: int = 0):
    """The fleet on BASE everywhere (checked), and a freshly built TARGET: (base, target)."""
    base = faults.current
    code, doc = fleet(capsys, faults.inventory, faults.project, "deploy", "all", base)
    assert code == 0, doc
    for host in HOSTS:
        assert wait_framework(faults.env, host, {base}, 60) == Running(base, True), host
        assert not locked(faults.env, host), host
    return base, faults.build(message, blob_mib)


def counts(faults: Faults) -> dict[str, int]:
    return {h: len(history(faults.env, h)) for h in HOSTS}


def in_background(action: Callable[[], bool]) -> tuple[threading.Thread, list[bool]]:
    """Run an injection next to the rollout; its list says whether it did inject."""
    done: list[bool] = []
    thread = threading.Thread(target=lambda: done.append(action()), daemon=True)
    thread.start()
    return thread, done


def poll(condition: Callable[[], bool], seconds: float = 120, every: float = 0.05) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def single(
    fault: str,
    affected: list[str],
    base: str,
    target: str,
    results: Results,
    expected: Mapping[str, set[str]],
    reasons: Mapping[str, str],
    before: dict[str, int],
) -> Injected:
    return Injected(
        fault,
        affected,
        base,
        target,
        describe(results, affected),
        expect(results, expected, reasons),
        versions_reported(results, base, target),
        rolled_back(results),
        before,
    )


def others(victims: Sequence[str], outcome: str = "changed") -> dict[str, set[str]]:
    return {h: {outcome} for h in HOSTS if h not in victims}


# -- the faults --------------------------------------------------------------------------
def test_fault1_host_container_killed_mid_transfer(faults: Faults, capsys) -> None:
    env = faults.env
    base, target = start(faults, capsys, "fault 1", blob_mib=64)
    before = counts(faults)
    victim = _engine().containers.get(env.host("lab2").container)

    def kill_while_loading() -> bool:
        if not poll(lambda: victim.exec_run(["pgrep", "-f", "docker load"]).exit_code == 0):
            return False
        time.sleep(0.3)
        victim.kill()
        return True

    killer, injected = in_background(kill_while_loading)
    code, doc = fleet(capsys, faults.inventory, faults.project, "deploy", "all", target)
    killer.join()
    assert injected == [True], "the host was not killed while loading"
    faults.env = heal(env)  # the host boots again; its engine restarts what ran
    assert code == 3, doc
    run = single(
        FAULT_NAMES[0],
        ["lab2"],
        base,
        target,
        doc["hosts"],
        {"lab2": {"unreachable"}, **others(["lab2"])},
        {},
        before,
    )
    check_fault(faults, run, capsys)


def test_fault2_sshd_killed_after_the_image_arrived(faults: Faults, capsys) -> None:
    env = faults.env
    base, target = start(faults, capsys, "fault 2")
    before = counts(faults)
    reference = f"{faults.project.repository}:{target}"

    def kill_sshd_when_the_image_is_there() -> bool:
        arrived = poll(
            lambda: host_exec(env, "lab4", f"docker image ls -q {reference} | grep -q .")[0] == 0
        )
        if arrived:
            # Only the SSH sessions ("sshd-session: root@..." since OpenSSH 9.8): sshd
            # itself, the engine and the framework keep running.
            host_exec(env, "lab4", "pkill -f '^sshd(-session)?: root@' || true")
        return arrived

    killer, injected = in_background(kill_sshd_when_the_image_is_there)
    code, doc = fleet(capsys, faults.inventory, faults.project, "deploy", "all", target)
    killer.join()
    assert injected == [True]
    assert code == 3, doc
    run = single(
        FAULT_NAMES[1],
        ["lab4"],
        base,
        target,
        doc["hosts"],
        {"lab4": {"unreachable"}, **others(["lab4"])},
        {"lab4": "connection|closed|lost|EOF|reset|unreachable|socket"},
        before,
    )
    check_fault(faults, run, capsys)


def test_fault3_frozen_host_times_out_named_without_holding_up_the_others(
    faults: Faults, capsys
) -> None:
    env = faults.env
    base, target = start(faults, capsys, "fault 3")
    before = counts(faults)
    timeout = 6.0
    frozen = _engine().containers.get(env.host("lab3").container)
    frozen.pause()
    try:
        started = time.monotonic()
        code, doc = fleet(
            capsys,
            faults.inventory,
            faults.project,
            "deploy",
            "all",
            target,
            "--timeout",
            f"{timeout:g}",
        )
        elapsed = time.monotonic() - started
    finally:
        frozen.unpause()
    assert code == 3, doc
    run = single(
        FAULT_NAMES[2],
        ["lab3"],
        base,
        target,
        doc["hosts"],
        {"lab3": {"unreachable"}, **others(["lab3"])},
        {"lab3": "timed out|handshake"},
        before,
    )
    # The others wait for the frozen host's timeout at most, not for the frozen host.
    busiest = max(r["seconds"] for h, r in doc["hosts"].items() if h != "lab3")
    held_up = elapsed - busiest
    if held_up > 2 * timeout + 15:
        run.problems.append(f"the run took {elapsed:.0f}s, the busiest other host {busiest:.0f}s")
    run.reported += f", others held up {held_up:.0f}s (timeout {timeout:g}s)"
    check_fault(faults, run, capsys)


def test_fault4_new_version_unhealthy_on_one_host_only(
    faults: Faults, capsys, tmp_path: Path
) -> None:
    base, target = start(faults, capsys, "fault 4")
    before = counts(faults)
    document = yaml.safe_load(faults.inventory.read_text())
    group = document["all"]["children"]["lab"]["vars"]["fleet_run_overrides"]
    document["all"]["children"]["lab"]["hosts"]["lab1"]["fleet_run_overrides"] = {
        **group,
        "env": {"CAUCHY_FAIL_HEALTH": "1"},
    }
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(document))
    code, doc = fleet(capsys, broken, faults.project, "deploy", "all", target)
    assert code == 2, doc
    run = single(
        FAULT_NAMES[3],
        ["lab1"],
        base,
        target,
        doc["hosts"],
        {"lab1": {"failed"}, **others(["lab1"])},
        {"lab1": f"rolled back to {re.escape(base)}"},
        before,
    )
    check_fault(faults, run, capsys)


_STOP_ENGINE, _START_ENGINE = ENGINE_STOP, ENGINE_START
# The engine stopped, its root (re)mounted, the engine started again.
_SWAP_ROOT = _STOP_ENGINE + "\n{mount}\n" + _START_ENGINE


def _used_bytes(env: LabFixture, host: str) -> int:
    return int(host_exec(env, host, "df -PB1 /var/lib/docker | tail -n 1")[1].split()[2])


def test_fault5a_disk_too_small_a_real_small_filesystem(faults: Faults, capsys) -> None:
    """lab2's Docker root is a tmpfs just big enough for what it holds (nested engines
    run on tmpfs: overlay2 on the classic store, the overlayfs snapshotter on containerd)."""
    env, victim = faults.env, "lab2"
    mount = "mount -t tmpfs -o size=1g fleet-small-root /var/lib/docker"
    code, out = host_exec(env, victim, _SWAP_ROOT.format(mount=mount))
    assert code == 0, out
    try:
        base, target = start(faults, capsys, "fault 5a", blob_mib=48)  # ships BASE to lab2
        before = counts(faults)
        # Room for the running version and 32 MiB more: not for a 48 MiB layer.
        small = _used_bytes(env, victim) + (32 << 20)
        code, out = host_exec(env, victim, f"mount -o remount,size={small} /var/lib/docker")
        assert code == 0, out
        code, doc = fleet(capsys, faults.inventory, faults.project, "deploy", "all", target)
        assert code == 2, doc
        run = single(
            FAULT_NAMES[4],
            [victim],
            base,
            target,
            doc["hosts"],
            {victim: {"failed"}, **others([victim])},
            {victim: "not enough disk|no space left"},
            before,
        )
        run.reported += f" ({small >> 20} MiB filesystem)"
        # The fix: grow the host's disk.
        assert host_exec(env, victim, "mount -o remount,size=2g /var/lib/docker")[0] == 0
        check_fault(faults, run, capsys)
    finally:
        # Back to the host's own volume (whatever ran there comes back by its restart policy).
        restore = "umount /var/lib/docker || umount -l /var/lib/docker"
        code, out = host_exec(env, victim, _SWAP_ROOT.format(mount=restore))
        assert code == 0, out


def play_results(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per host, the rollout's outcome: its first failing task, else its last task."""
    merged: dict[str, dict[str, Any]] = {}
    for task in doc["tasks"]:
        for host, result in task["hosts"].items():
            if merged.get(host, {}).get("outcome") not in ("failed", "unreachable"):
                merged[host] = result
    return merged


def test_fault5b_disk_below_the_configured_minimum(faults: Faults, capsys, tmp_path: Path) -> None:
    """A rollout playbook whose push keeps a reserve per host; lab3's reserve is 100T."""
    base, target = start(faults, capsys, "fault 5b")
    before = counts(faults)
    document = yaml.safe_load(faults.inventory.read_text())
    document["all"]["children"]["lab"]["hosts"]["lab3"]["fleet_min_free"] = "100T"
    inventory = tmp_path / "reserve.yml"
    inventory.write_text(yaml.safe_dump(document))
    playbook = tmp_path / "rollout.yml"
    project = str(faults.project.root)
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Roll out with a disk reserve",
                    "hosts": "all",
                    "tasks": [
                        {
                            "name": "Ship",
                            "push": {
                                "project": project,
                                "image": target,
                                "min_free": "{{ fleet_min_free | default(0) }}",
                            },
                        },
                        {"name": "Switch", "deploy": {"project": project, "version": target}},
                    ],
                }
            ]
        )
    )
    code, doc = run_json(
        capsys, "play", str(playbook), "-i", str(inventory), "--retry-file", "/dev/null"
    )
    assert code == 2, doc
    results = play_results(doc)
    run = single(
        FAULT_NAMES[5],
        ["lab3"],
        base,
        target,
        results,
        {"lab3": {"failed"}, **others(["lab3"])},
        {"lab3": "not enough disk.*reserve"},
        before,
    )
    check_fault(faults, run, capsys)


_RECAP_ROW = re.compile(r"^\W*(lab\d)\W+(ok|changed|failed|unreachable|skipped)\b", re.M)


def test_fault6_ctrl_c_mid_rollout(faults: Faults, capsys) -> None:
    env = faults.env
    base, target = start(faults, capsys, "fault 6")
    before = counts(faults)
    argv = [sys.executable, "-m", "fleet", "deploy", "all", target, "--serial", "1"]
    argv += ["-i", str(faults.inventory), "--project", str(faults.project.root)]
    controller = subprocess.Popen(
        [*argv, "--retry-file", "/dev/null"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    # In the middle of the first batch's switch: lab1's new container is starting (before
    # that, under the lock, Ctrl-C still leaves lab1 untouched: "skipped").
    probe = f"docker inspect -f '{{{{index .Config.Labels \"io.fleet.tag\"}}}}' {NAME}"
    in_switch = poll(lambda: host_exec(env, "lab1", probe)[1].strip() == target, 180, every=0.1)
    controller.send_signal(signal.SIGINT)
    out, err = controller.communicate(timeout=300)
    err += out
    assert in_switch, err[-2000:]
    assert controller.returncode == 130, err[-2000:]
    recap = err[err.rfind("RECAP deploy") :]
    assert "RECAP deploy" in err, err[-2000:]  # the summary of what was done is printed
    results = {h: {"outcome": o, "reason": ""} for h, o in _RECAP_ROW.findall(recap)}
    run = single(
        FAULT_NAMES[6],
        ["lab1"],
        base,
        target,
        results,
        {"lab1": {"changed"}, **others(["lab1"], "skipped")},
        {},
        before,
    )
    for host in HOSTS:
        if locked(env, host):
            run.problems.append(f"{host}: still locked after Ctrl-C")
    check_fault(faults, run, capsys)


def test_fault7_two_controllers_deploy_to_overlapping_hosts(faults: Faults, capsys) -> None:
    """Controller A: TARGET to lab1-lab3; controller B, another process: OTHER to lab2-lab4."""
    base, target = start(faults, capsys, "fault 7")
    other = faults.build("fault 7, the other controller's version")
    before = counts(faults)
    argv = [sys.executable, "-m", "fleet", "deploy", "lab2:lab3:lab4", other, "--json"]
    argv += ["-i", str(faults.inventory), "--project", str(faults.project.root)]
    second = subprocess.Popen(
        [*argv, "--retry-file", "/dev/null"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, doc = fleet(capsys, faults.inventory, faults.project, "deploy", "lab1:lab2:lab3", target)
    out, err = second.communicate(timeout=300)
    first, then = doc["hosts"], json.loads(out)["hosts"]
    problems = []
    should_run: dict[str, set[str]] = {}
    reported = []
    for host in HOSTS:
        mine, theirs = first.get(host), then.get(host)
        switched = {
            v for r, v in ((mine, target), (theirs, other)) if r and r["outcome"] == "changed"
        }
        for r in (mine, theirs):
            if (
                r
                and r["outcome"] not in ("changed", "ok")
                and "deploy lock held by" not in (r["reason"] or "")
            ):
                problems.append(f"{host}: {r['outcome']} for another reason: {r['reason']}")
        if not switched:
            problems.append(f"{host}: neither controller switched it ({mine}, {theirs})")
        should_run[host] = switched or {base}
        reported.append(
            f"{host} "
            + "/".join(
                f"{who}:{r['outcome']}" for who, r in (("A", mine), ("B", theirs)) if r is not None
            )
        )
    if code not in (0, 2) or second.returncode not in (0, 2):
        problems.append(f"exit codes {code} and {second.returncode}: {err[-500:]}")
    run = Injected(
        FAULT_NAMES[7],
        ["lab2", "lab3"],
        base,
        target,
        ", ".join(reported),
        problems,
        should_run,
        rolled_back(first) | rolled_back(then),
        before,
    )
    check_fault(faults, run, capsys)


def test_fault8_engine_stopped(faults: Faults, capsys) -> None:
    env, victim = faults.env, "lab3"
    base, target = start(faults, capsys, "fault 8")
    before = counts(faults)
    code, out = host_exec(env, victim, _STOP_ENGINE)
    assert code == 0, out
    try:
        code, doc = fleet(capsys, faults.inventory, faults.project, "deploy", "all", target)
    finally:
        started = host_exec(env, victim, _START_ENGINE)
        assert started[0] == 0, started[1]
    assert code == 2, doc
    run = single(
        FAULT_NAMES[8],
        [victim],
        base,
        target,
        doc["hosts"],
        {victim: {"failed"}, **others([victim])},
        {victim: "Docker engine not usable"},
        before,
    )
    if "start the host's Docker engine" not in str(doc["hosts"][victim].get("fix")):
        run.problems.append(f"{victim}: fix {doc['hosts'][victim].get('fix')!r}")
    check_fault(faults, run, capsys)


# -- not a rollout: peers that are not SSH servers at all ---------------------------------
def _silent_server() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server, server.getsockname()[1]


@pytest.mark.hostile
@pytest.mark.parametrize("behaviour", ["never answers", "sends garbage"])
def test_hostile_ssh_peer_is_unreachable_with_the_reason(
    faults: Faults, capsys, tmp_path: Path, behaviour: str
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
    document = yaml.safe_load(faults.env.inventory.read_text())
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
    assert all(doc["hosts"][h]["outcome"] == "ok" for h in HOSTS)
    assert elapsed < 20

"""Shared fixtures: the test lab (real sshd + real Docker engines) and CLI helpers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.cli import main
from fleet.lab import nodes as lab
from fleet.ssh.base import CommandResult
from fleet.ssh.known_hosts import KnownHosts
from fleet.ssh.paramiko_client import SSHTransport

# A suite started in the background by a shell without job control (`.ci/run &`) inherits
# SIGINT ignored, and so would every fleet the tests start: Ctrl-C tests could not
# interrupt it. A handled signal is reset to the default on exec, an ignored one is not.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


def _require_engine() -> None:
    if not _engine_answers():
        if os.environ.get("CI"):
            pytest.fail(
                "the controller's Docker engine is not running (scripts/setup.sh starts it)"
            )
        pytest.skip("no Docker engine on this machine: run scripts/setup.sh")


@pytest.fixture(scope="session")
def lab_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where this session's labs keep their keys and known_hosts (``FLEET_LAB_DIR``)."""
    _require_engine()
    _remove_abandoned_test_labs()
    state = tmp_path_factory.mktemp("labstate")
    os.environ["FLEET_LAB_DIR"] = str(state)
    yield state
    shutil.rmtree(state, ignore_errors=True)


def start_lab(
    state: Path, tmp_path_factory: pytest.TempPathFactory, name: str, hosts: int
) -> LabFixture:
    """Start a mixed lab (classic, containerd, classic, ...) and write its inventory."""
    inventory = tmp_path_factory.mktemp("labinv") / "lab.yml"
    return LabFixture(lab.up(hosts, "mixed", name=name, inventory=inventory), inventory, state)


def stop_lab(env: LabFixture) -> None:
    lab.down(name=env.lab.name, inventory=env.inventory)


@pytest.fixture(scope="session")
def lab_env(lab_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFixture]:
    """A two-host lab (one classic, one containerd engine), shared by the session."""
    started = start_lab(lab_state, tmp_path_factory, TEST_LAB, 2)
    yield started
    stop_lab(started)


def _remove_abandoned_test_labs() -> None:
    """Labs of test sessions that died without tearing down (their process is gone)."""
    client = lab.engine_client()
    names = {
        c.labels.get(lab.LABEL, "")
        for c in client.containers.list(all=True, filters={"label": lab.LABEL})
    }
    for name in names:
        # fleet-test-PID, or fleet-test-PID-SUFFIX (a module's own lab).
        pid = name.removeprefix("fleet-test-").partition("-")[0]
        if name.startswith("fleet-test-") and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            lab.down(name=name)


def heal(env: LabFixture) -> LabFixture:
    """Bring every host of a test lab back (after a test stopped one) and return the new lab."""
    started = lab.up(len(env.lab.hosts), "mixed", name=env.lab.name, inventory=env.inventory)
    return LabFixture(started, env.inventory, env.state)


@pytest.fixture(scope="module")
def fast_inventory(lab_env: LabFixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's inventory with a short health timeout, so failing versions fail fast."""
    return write_fast_inventory(lab_env, tmp_path_factory.mktemp("fastinv") / "lab.yml")


def write_fast_inventory(env: LabFixture, path: Path, timeout: float = 15) -> Path:
    """Write a copy of the lab's inventory whose health gate gives up after ``timeout``."""
    document = yaml.safe_load(env.inventory.read_text())
    group = document["all"]["children"]["lab"]["vars"]
    group["fleet_run_overrides"] = {
        **group["fleet_run_overrides"],
        "health": {"timeout": timeout, "interval": 0.5},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def host_run(env: LabFixture, host: str, *argv: str, stdin: bytes | None = None) -> CommandResult:
    """Run argv on a lab host over SSH (pinned keys), whatever its exit code."""
    endpoint = next(e for e in lab.endpoints(env.lab) if e.name == host)
    transport = SSHTransport(endpoint, KnownHosts([env.lab.known_hosts]))
    try:
        return transport.run(list(argv), stdin=stdin, check=False, timeout=60)
    finally:
        transport.close()


def host_sh(env: LabFixture, host: str, *argv: str) -> str:
    """Run argv on a lab host over SSH (pinned keys); its stdout."""
    return host_run(env, host, *argv).stdout


# A lab host's engine stopped, and started again (its entrypoint started it the first time).
ENGINE_STOP = "pkill -x dockerd; while pgrep -x dockerd >/dev/null; do sleep 0.1; done"
ENGINE_START = """
nohup dockerd >>/var/log/dockerd.log 2>&1 &
for i in $(seq 600); do docker version >/dev/null 2>&1 && exit 0; sleep 0.2; done
exit 1
"""


def restart_engine(env: LabFixture, host: str) -> None:
    """Restart a lab host's Docker engine, through the controller's engine (not over SSH)."""
    container = lab.engine_client().containers.get(env.host(host).container)
    code, out = container.exec_run(["sh", "-c", ENGINE_STOP + "\n" + ENGINE_START])
    assert code == 0, (out or b"").decode("utf-8", "replace")


def ensure_image(env: LabFixture, host: str, image: str = lab.LAYER1_IMAGE) -> str:
    """``image`` on a lab host's engine, loaded from this machine's when it lacks it."""
    if host_run(env, host, "docker", "image", "inspect", image).ok:
        return image
    saved = b"".join(lab.engine_client().images.get(image).save(named=True))
    loaded = host_run(env, host, "docker", "load", stdin=saved)
    assert loaded.ok, loaded.stderr
    return image


@contextlib.contextmanager
def swapping(env: LabFixture, host: str, mount: str, script: str) -> Iterator[str]:
    """What any framework container can do to the data root, as fast as it can: a container
    on ``host`` with the host's ``mount`` at ``/d``, running the sh ``script`` in a loop
    (for at most two minutes, whatever happens to the test). Yields its name."""
    image = ensure_image(env, host)
    name = f"fleet-test-swapper-{uuid.uuid4().hex[:6]}"
    loop = f"while :; do {script}; done"
    ran = host_run(
        env,
        host,
        *("docker", "run", "-d", "--name", name, "--network", "none", "-v", f"{mount}:/d"),
        *(image, "timeout", "120", "sh", "-c", loop),
    )
    assert ran.ok, ran.stderr
    try:
        yield name
    finally:
        host_run(env, host, "docker", "rm", "-f", name)


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


def running_tag(env: LabFixture, host: str, repository: str) -> str:
    """The tag of the framework version that runs on ``host`` ("" when none does)."""
    return host_sh(
        env,
        host,
        "docker",
        "ps",
        "--filter",
        f"label=io.fleet.framework={repository}",
        "--format",
        '{{.Label "io.fleet.tag"}}',
    ).strip()


def framework_container(env: LabFixture, host: str, repository: str) -> str:
    """The id of the one framework container of ``repository`` that runs on ``host``."""
    ids = host_sh(
        env, host, "docker", "ps", "-q", "--filter", f"label=io.fleet.framework={repository}"
    ).split()
    assert len(ids) == 1, f"{host}: framework containers running: {ids}"
    return ids[0]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run fleet in-process; (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_project_json(
    capsys: pytest.CaptureFixture[str], inventory: Path, project: Any, *args: str
) -> tuple[int, dict[str, Any]]:
    """Run a fleet command on the lab for a test framework project; (exit code, JSON)."""
    return run_json(capsys, *args, *project_options(inventory, project))


def project_options(inventory: Path, project: Any) -> list[str]:
    """The options of a fleet command on the lab for a test framework project."""
    return ["-i", str(inventory), "--project", str(project.root), "--retry-file", "/dev/null"]


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    args = list(argv)
    cut = args.index("--") if "--" in args else len(args)
    code, out, err = run_cli(capsys, *args[:cut], "--json", *args[cut:])
    try:
        return code, json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"not one JSON document on stdout:\n{out}\nstderr:\n{err}") from None


# -- the faults table (tests/test_faults_e2e.py fills it; printed at the session's end) ----
@dataclass
class FaultRow:
    """One fault's line: what fleet reported, and what survived it."""

    fault: str
    hosts_affected: str
    outcome_reported: str = ""
    outcome_correct: bool = False
    framework_running: bool = False
    images_whole: bool = False
    history_ok: bool = False
    converged: bool = False

    @property
    def survived(self) -> bool:
        return all(
            (
                self.outcome_correct,
                self.framework_running,
                self.images_whole,
                self.history_ok,
                self.converged,
            )
        )


@dataclass
class FaultTable:
    """The faults the suite meant to inject, and a row for each one that ran."""

    expected: list[str]
    rows: dict[str, FaultRow]

    def render(self) -> list[str]:
        rows = [self.rows.get(f) or FaultRow(f, "-") for f in self.expected]
        header = (
            "fault",
            "hosts affected",
            "outcome reported",
            "framework still running",
            "no half-tagged image",
            "history line",
            "converged on rerun",
        )
        cells = [
            (
                r.fault,
                r.hosts_affected,
                f"{r.outcome_reported} ({'correct' if r.outcome_correct else 'WRONG'})"
                if r.fault in self.rows
                else "did not run to the end",
                *("yes" if ok else "no" for ok in (r.framework_running, r.images_whole)),
                *("yes" if ok else "no" for ok in (r.history_ok, r.converged)),
            )
            for r in rows
        ]
        widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header))]
        lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        lines.append("-+-".join("-" * w for w in widths))
        lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
        survived = sum(1 for r in rows if r.survived)
        lines.append(f"faults survived: {survived}/{len(rows)}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "rows": [
                {**vars(self.rows[f]), "survived": self.rows[f].survived}
                for f in self.expected
                if f in self.rows
            ],
        }


FAULTS = FaultTable([], {})


# -- the chaos soak's rounds (tests/test_chaos_e2e.py; printed beside the faults table) ---
@dataclass
class ChaosRound:
    """One round: the fault, when and where it hit, and whether the fleet converged."""

    number: int
    fault: str
    host: str
    moment: float
    hit: str = ""  # what the injection found (e.g. "killed mid-switch"), or why it missed
    faulted_exit: int | None = None
    rerun_exit: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return self.rerun_exit == 0 and not self.problems


@dataclass
class ChaosTable:
    seed: int = 0
    rounds: list[ChaosRound] = field(default_factory=list)
    rollout_seconds: float = 0.0  # what the faults' moments were drawn within

    def render(self) -> list[str]:
        header = ("round", "fault", "host", "at", "injected", "run", "rerun", "invariants")
        cells = [
            (
                str(r.number),
                r.fault,
                r.host,
                f"{r.moment:.1f}s",
                r.hit,
                "killed" if r.faulted_exit is None else f"exit {r.faulted_exit}",
                f"exit {r.rerun_exit}",
                "held" if not r.problems else "BROKEN: " + "; ".join(r.problems)[:200],
            )
            for r in self.rounds
        ]
        widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
        lines = [
            f"seed {self.seed}; a rollout took {self.rollout_seconds:.1f}s, faults hit within it"
        ]
        lines.append(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        lines.append("-+-".join("-" * w for w in widths))
        lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
        converged = sum(1 for r in self.rounds if r.converged)
        lines.append(f"chaos: {converged}/{len(self.rounds)} rounds converged")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rollout_seconds": self.rollout_seconds,
            "rounds": [{**vars(r), "converged": r.converged} for r in self.rounds],
        }


CHAOS = ChaosTable()


# -- hostile inputs (tests marked ``hostile``): counted at the session's end ------------
HOSTILE: dict[str, str] = {}


# Comparisons with ansible-core (tests marked ``ansible_oracle``) that ran, by outcome.
ORACLE: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record the outcome of each hostile-input and oracle test (its call, or a failed setup)."""
    for marker, outcomes in (("hostile", HOSTILE), ("ansible_oracle", ORACLE)):
        if marker in report.keywords and (report.when == "call" or report.outcome != "passed"):
            outcomes[report.nodeid] = report.outcome


def hostile_summary() -> str:
    """``hostile inputs handled: N/M`` over the hostile-input tests that ran."""
    handled = sum(1 for outcome in HOSTILE.values() if outcome == "passed")
    return f"hostile inputs handled: {handled}/{len(HOSTILE)}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The oracle and hostile-input counts, and the faults table when the faults suite ran."""
    if ORACLE:
        ran = sum(1 for outcome in ORACLE.values() if outcome != "skipped")
        terminalreporter.write_line(f"comparisons with ansible-core run: {ran}/{len(ORACLE)}")
    if HOSTILE:
        terminalreporter.section("hostile inputs")
        for nodeid, outcome in sorted(HOSTILE.items()):
            if outcome != "passed":
                terminalreporter.write_line(f"NOT HANDLED ({outcome}): {nodeid}")
        terminalreporter.write_line(hostile_summary())
    for name, table, shown, target in (
        ("faults", FAULTS, FAULTS.expected, "FLEET_FAULTS_JSON"),
        ("chaos", CHAOS, CHAOS.rounds, "FLEET_CHAOS_JSON"),
    ):
        if not shown:
            continue
        terminalreporter.section(name)
        for line in table.render():
            terminalreporter.write_line(line)
        if os.environ.get(target):
            Path(os.environ[target]).write_text(json.dumps(table.to_json(), indent=2))

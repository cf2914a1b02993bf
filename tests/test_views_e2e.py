"""End to end on the lab: fleet ps, images --on, logs (--tail, --follow), shell, the picker.

The lab runs two versions of a demo framework of this module's own: v2 running, v1 kept
(stopped) for rollback, on a classic and a containerd host. Commands that need a
terminal or a signal run as subprocesses (``python -c`` of fleet's CLI, with the views
registered), on a pseudo-terminal where a terminal is the point.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import fleet.cli
from tests.conftest import LabFixture, host_run, run_cli, run_json
from tests.framework import ROOT, FrameworkProject

pytestmark = pytest.mark.lab

HOSTS = ("lab1", "lab2")
# fleet's CLI with the views registered (until fleet.cli lists them itself).
BOOT = (
    "import sys, fleet.cli as c\n"
    "if 'views' not in c._COMMAND_MODULES:\n"
    "    c._COMMAND_MODULES = (*c._COMMAND_MODULES, 'views')\n"
    "sys.exit(c.main(sys.argv[1:]))\n"
)
FLEET = (sys.executable, "-c", BOOT)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CLEAR_FRAMEWORK = (
    'ids=$(docker ps -aq --filter "label=io.fleet.framework${1:+=$1}"); '
    '[ -z "$ids" ] || docker rm -f $ids >/dev/null; '
    '[ -z "$1" ] || { imgs=$(docker image ls -q --filter "label=io.fleet.framework=$1" | sort -u); '
    '[ -z "$imgs" ] || docker rmi -f $imgs >/dev/null; }; true'
)


@pytest.fixture(autouse=True)
def _views_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if "views" not in fleet.cli._COMMAND_MODULES:
        monkeypatch.setattr(fleet.cli, "_COMMAND_MODULES", (*fleet.cli._COMMAND_MODULES, "views"))


def clear_framework(env: LabFixture, repository: str = "") -> None:
    """Remove the framework containers of ``repository`` (all when empty) and its images.

    Every lab test's framework is called cauchy_service on port 8339: another module's
    must not be in the way.
    """
    for host in HOSTS:
        host_run(env, host, "sh", "-c", CLEAR_FRAMEWORK, "fleet-test-clear", repository)


@dataclass(frozen=True)
class Deployed:
    """The lab with this module's framework: v2 runs everywhere, v1 is kept."""

    env: LabFixture
    project: FrameworkProject
    v1: str
    v2: str

    @property
    def options(self) -> tuple[str, ...]:
        return (
            "-i",
            str(self.env.inventory),
            "--project",
            str(self.project.root),
            "--retry-file",
            "/dev/null",
        )


def deploy_two_versions(env: LabFixture, tmp: Path, prefix: str) -> Deployed:
    """Build v1 and v2 of a fresh demo framework, deploy v1 then v2 on every lab host."""
    project = FrameworkProject.create(tmp / "cauchy", f"fleet-test-views-{uuid.uuid4().hex[:6]}")
    project.tag_prefix = prefix  # tags of its own in the hosts' shared history
    project.write_settings({})
    v1 = project.commit_and_build("v1")
    v2 = project.commit_and_build("v2")
    clear_framework(env)
    deployed = Deployed(env, project, v1, v2)
    for tag in (v1, v2):
        code, out, err = run_fleet_process("deploy", "all", tag, *deployed.options, "--json")
        assert code == 0, out + err
    return deployed


def run_fleet_process(*argv: str, timeout: float = 300) -> tuple[int, str, str]:
    proc = subprocess.run(
        [*FLEET, *argv], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    return proc.returncode, proc.stdout, proc.stderr


# One deployment for this module and test_reboot_e2e (it builds two versions and ships them).
_SHARED: dict[str, Deployed] = {}


@pytest.fixture(scope="session")
def views_framework(lab_env: LabFixture) -> Iterator[dict[str, Deployed]]:
    """The shared deployment's holder; removes it from the lab at the end of the session."""
    yield _SHARED
    for built in _SHARED.values():
        clear_framework(lab_env, built.project.repository)
        built.project.remove_images()
    _SHARED.clear()


def shared_deployment(
    env: LabFixture, holder: dict[str, Deployed], tmp_path_factory: pytest.TempPathFactory
) -> Deployed:
    """The deployment of this session, made on first use."""
    if "views" not in holder:
        holder["views"] = deploy_two_versions(env, tmp_path_factory.mktemp("views"), "9.5")
    return holder["views"]


@pytest.fixture
def deployed(
    lab_env: LabFixture,
    views_framework: dict[str, Deployed],
    tmp_path_factory: pytest.TempPathFactory,
) -> Deployed:
    return shared_deployment(lab_env, views_framework, tmp_path_factory)


def request(env: LabFixture, host: str, marker: str) -> None:
    """A request to the demo service on ``host``: it logs one line naming ``marker``."""
    ran = host_run(env, host, "curl", "-s", f"http://127.0.0.1:8339/cauchy?x=1&m={marker}")
    assert ran.ok and '"pdf"' in ran.stdout, ran


# -- ps, images --on, logs --tail -------------------------------------------------------------
def test_ps_shows_the_running_version_healthy_and_the_kept_one_stopped(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = run_json(capsys, "ps", "all", *deployed.options)
    assert code == 0, doc
    for host in HOSTS:
        rows = {r["name"]: r for r in doc["hosts"][host]["details"]["containers"]}
        assert set(rows) == {"cauchy_service", f"cauchy_service-{deployed.v1}"}
        running, kept = rows["cauchy_service"], rows[f"cauchy_service-{deployed.v1}"]
        assert (running["tag"], running["state"], running["health"]) == (
            deployed.v2,
            "running",
            "healthy",
        )
        assert running["image"] == f"{deployed.project.repository}:{deployed.v2}"
        assert running["version"] and running["restart_policy"] == "unless-stopped"
        assert isinstance(running["restarts"], int)
        assert (kept["tag"], kept["state"]) == (deployed.v1, "exited")
    code, out, err = run_cli(capsys, "ps", "all", *deployed.options)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["host", "name", "image"]
    lab1_row = next(line for line in lines if line.startswith("lab1 "))
    assert "cauchy_service" in lab1_row and "running" in lab1_row and "healthy" in lab1_row
    assert any(f"cauchy_service-{deployed.v1}" in line and "exited" in line for line in lines)
    # --all: every container of the host; here those are the framework's.
    code, doc = run_json(capsys, "ps", "lab2", "--all", *deployed.options)
    assert code == 0 and len(doc["hosts"]["lab2"]["details"]["containers"]) >= 2


def test_images_on_shows_what_runs_and_the_rollback_target_beside_the_controller(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = run_json(capsys, "images", "--on", "all", *deployed.options)
    assert code == 0, doc
    assert [v["tag"] for v in doc["versions"]] == [deployed.v2, deployed.v1]
    for host in HOSTS:
        details = doc["hosts"][host]["details"]
        marks = {i["tag"]: (i["running"], i["rollback_target"]) for i in details["images"]}
        assert marks == {deployed.v2: (True, False), deployed.v1: (False, True)}
        assert details["rollback_target"] == deployed.v1
    code, out, err = run_cli(capsys, "images", "--on", "all", *deployed.options)
    assert code == 0, err
    assert out.index("on this controller:") < out.index("on the hosts:")
    assert "rollback target" in out and "running" in out


def test_logs_tail_prefixes_each_line_with_its_host(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = uuid.uuid4().hex[:8]
    for host in HOSTS:
        request(deployed.env, host, f"{marker}-{host}")
    code, out, err = run_cli(capsys, "logs", "all", "--tail", "3", *deployed.options)
    assert code == 0, err
    lines = out.splitlines()
    for host in HOSTS:
        own = [line for line in lines if line.startswith(f"{host} | ")]
        assert 1 <= len(own) <= 3
        assert any(f"m={marker}-{host}" in line for line in own)
    code, doc = run_json(capsys, "logs", "lab1", "--tail", "1", "--timestamps", *deployed.options)
    assert code == 0
    assert doc["hosts"]["lab1"]["stdout"][:4].isdigit()


# -- logs --follow ----------------------------------------------------------------------------
class Following:
    """``fleet logs --follow`` as a subprocess, its lines read as they come."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [*FLEET, "logs", "--follow", "--tail", "0", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: object, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, predicate: object, timeout: float, poke: object = None) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.proc.poll() is None, f"fleet logs ended: {self.errors}"
            assert time.monotonic() < deadline, f"lines: {self.lines}\nstderr: {self.errors}"
            if poke is not None:
                poke()
            time.sleep(0.5)

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=15)
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code, "\n".join(self.errors)


def test_logs_follow_merges_new_lines_from_both_hosts_until_interrupted(
    deployed: Deployed,
) -> None:
    marker = uuid.uuid4().hex[:8]
    following = Following("all", *deployed.options)

    def seen(host: str) -> bool:
        return any(
            line.startswith(f"{host} | ") and f"m={marker}-{host}" in line
            for line in following.lines
        )

    def poke() -> None:  # until the streams are up, new requests make new lines
        for host in HOSTS:
            if not seen(host):
                request(deployed.env, host, f"{marker}-{host}")

    try:
        following.wait_for(lambda: all(seen(h) for h in HOSTS), 30, poke)
        # Once streaming, one request is one line, there and then.
        request(deployed.env, "lab2", f"again-{marker}")
        following.wait_for(lambda: any(f"m=again-{marker}" in x for x in following.lines), 10)
    finally:
        code, errors = following.interrupt()
    assert code == 0, errors
    assert "Traceback" not in errors
    assert all(" | " in line for line in following.lines)


# -- shell ------------------------------------------------------------------------------------
def test_shell_runs_one_command_in_the_framework_container(deployed: Deployed) -> None:
    expected = host_run(
        deployed.env, "lab1", "docker", "exec", "cauchy_service", "cat", "/etc/hostname"
    )
    code, out, err = run_fleet_process(
        "shell", "lab1", "-i", str(deployed.env.inventory), "--project", str(deployed.project.root),
        "--", "cat", "/etc/hostname",
    )  # fmt: skip
    assert code == 0, err
    assert out == expected.stdout and out.strip()
    code, out, err = run_fleet_process(
        "shell", "lab2", "-i", str(deployed.env.inventory), "--project", str(deployed.project.root),
        "--", "sh", "-c", "echo out; echo err >&2; exit 7",
    )  # fmt: skip
    assert (code, out, err) == (7, "out\n", "err\n")


def run_on_pty(
    argv: Sequence[str], answer: bytes, *, after: bytes, timeout: float = 120
) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal; type ``answer`` once ``after`` was printed.

    The exit code and what the terminal showed, without its colours and cursor moves.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))  # rows, columns
    # The terminal's own size, not the COLUMNS/LINES readline put in this process's environ.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env, start_new_session=True
    )
    os.close(slave)
    output = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the other side closed: the process ended
                    break
                if not data:
                    break
                output += data
            if not answered and after in output:
                os.write(master, answer)
                answered = True
            if not ready and proc.poll() is not None:
                break
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, ANSI.sub("", output.decode("utf-8", "replace"))


def test_shell_gives_an_interactive_shell_a_real_terminal(deployed: Deployed) -> None:
    code, out = run_on_pty(
        [*FLEET, "shell", "lab2", "-i", str(deployed.env.inventory), "--project", str(deployed.project.root)],
        b"echo $((6*7)); tty; exit 3\n",
        after=b"#",  # the prompt of root's shell
    )  # fmt: skip
    assert code == 3, out
    assert "42" in out
    assert "/dev/pts/" in out  # a terminal inside the container, not a pipe


# -- the version picker -----------------------------------------------------------------------
def current_tag(env: LabFixture, host: str) -> str:
    ran = host_run(env, host, "curl", "-s", "http://127.0.0.1:8339/version")
    return str(json.loads(ran.stdout)["tag"])


def test_deploy_and_rollback_pickers_on_a_terminal(deployed: Deployed) -> None:
    try:
        # deploy: the built versions, newest first and preselected, with the hosts running each.
        code, out = run_on_pty(
            [sys.executable, "-m", "fleet", "deploy", "lab2", *deployed.options],
            b"2\n",
            after=b"]: ",
        )
        assert code == 0, out
        menu = out[: out.index("]: ")]
        assert f"> 1)  {deployed.v2}" in menu and "newest" in menu
        v2_row = next(line for line in menu.splitlines() if f"1)  {deployed.v2}" in line)
        assert "lab2" in v2_row
        assert menu.index(deployed.v2) < menu.index(deployed.v1)
        assert f"deploy which version [1: {deployed.v2}]" in out
        assert current_tag(deployed.env, "lab2") == deployed.v1
        assert current_tag(deployed.env, "lab1") == deployed.v2

        # rollback: each host's own previous version preselected (lab2: back to v2).
        code, out = run_on_pty(
            [sys.executable, "-m", "fleet", "rollback", "lab2", *deployed.options],
            b"\n",
            after=b"]: ",
        )
        assert code == 0, out
        assert f"lab2 -> {deployed.v2}" in out and "roll back to [1: previous]" in out, out
        assert current_tag(deployed.env, "lab2") == deployed.v2

        # Not on a terminal: no question, the newest, as before.
        code, out, err = run_fleet_process("deploy", "lab2", *deployed.options, "--json")
        assert code == 0, err
        assert json.loads(out)["hosts"]["lab2"]["outcome"] == "ok"
        assert "which version" not in err
    finally:
        if current_tag(deployed.env, "lab2") != deployed.v2:  # as the other tests expect it
            run_fleet_process("deploy", "lab2", deployed.v2, *deployed.options)

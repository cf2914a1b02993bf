"""The live view as a person sees it: fleet in a real terminal (tmux), read while it runs.

``fleet push`` (and a playbook's push task) of a fresh 200 MB layer to the lab's two
hosts runs in a tmux pane of 150x30; the pane is captured every 0.4 s until fleet exits. What a person must be able to
read during the send, in those captures: per host the phase, bytes done of total, a rate
and an ETA, an elapsed time that advances, and no outcome until the host is done.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleet.lab import nodes as lab
from tests.conftest import LabFixture, ensure_image, host_run
from tests.framework import build_image

pytestmark = pytest.mark.lab

REPO = f"fleet-test-live-{os.getpid()}"
HOSTS = ("lab1", "lab2")
# A row while bytes move: host, step, phase, bar, bytes done/total, rate, ETA, elapsed.
SENDING = re.compile(
    r"^(?P<host>lab\d)\s+push\s+send\s.*?(?P<done>[\d.]+)/(?P<total>[\d.]+) MiB\s+"
    r"(?P<rate>[\d.]+ [kMG]?B/s)\s+(?P<eta>\d+:\d\d:\d\d|-:--:--)\s+(?P<elapsed>\d+:\d\d:\d\d)\s*$"
)
LOADING_BYTES = re.compile(r"^lab\d\s+push\s+load\s.*MiB")
OUTCOME = re.compile(r"^(?P<host>lab\d)\s+push\S*\s+(?P<outcome>ok|changed|failed)\b")


@pytest.fixture(scope="module")
def fat_image() -> Iterator[str]:
    """A framework version the hosts lack: 200 MB of incompressible bytes on layer 1."""
    client = lab.engine_client()
    lab.ensure_layer1_image(client)
    ref = build_image(
        client,
        f"{REPO}:fat",
        f"FROM {lab.LAYER1_IMAGE}\nRUN head -c 200000000 /dev/urandom > /fat\n",
    )
    yield ref
    client.images.remove(ref, force=True)


def _tmux(socket: str, *argv: str) -> str:
    tmux = shutil.which("tmux")
    assert tmux is not None, "tmux is required (scripts/setup.sh installs it)"
    return subprocess.run(
        [tmux, "-L", socket, *argv], check=True, capture_output=True, text=True
    ).stdout


def watch(command: list[str], width: int, height: int) -> list[str]:
    """Run ``command`` in a tmux pane of ``width`` x ``height``; the pane as a person saw
    it every 0.4 s until the command ended (the last capture shows ``FLEET-EXIT=code``)."""
    socket = f"fleet-test-live-{os.getpid()}"
    shell = f"{shlex.join(command)}; echo FLEET-EXIT=$?; sleep 600"
    _tmux(socket, "new-session", "-d", "-x", str(width), "-y", str(height), "-s", "live", shell)
    captures: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            pane = _tmux(socket, "capture-pane", "-p", "-t", "live")
            captures.append(pane)
            if "FLEET-EXIT=" in pane:
                break
            time.sleep(0.4)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False, capture_output=True)
    return captures


def fleet_command(*argv: str) -> list[str]:
    """fleet's command line, with this session's lab keys (tmux does not pass them on) and
    without the test runner's LINES and COLUMNS (rich would believe them over the pane)."""
    fleet = Path(sys.executable).with_name("fleet")
    lab_dir = f"FLEET_LAB_DIR={os.environ['FLEET_LAB_DIR']}"
    return ["env", "-u", "LINES", "-u", "COLUMNS", lab_dir, str(fleet), *argv]


def test_a_push_shows_phase_bytes_rate_eta_and_a_moving_clock(
    lab_env: LabFixture, fat_image: str
) -> None:
    for host in HOSTS:  # whatever an earlier test left, the layer is new to both hosts
        host_run(lab_env, host, "docker", "image", "rm", "-f", fat_image)
    command = fleet_command(
        "push",
        "all",
        fat_image,
        "-i",
        str(lab_env.inventory),
        "--retry-file",
        "/dev/null",
        "--compress",
        "none",
        # Slow enough to be read a few times (about 10 s): a person's view, not a benchmark.
        "--max-rate",
        "40M",
    )
    captures = watch(command, 150, 30)
    last = captures[-1]
    assert "FLEET-EXIT=0" in last, last
    assert re.search(r"2 hosts in .*changed=2", last), last

    sending: dict[str, list[re.Match[str]]] = {h: [] for h in HOSTS}
    for pane in captures[:-1]:
        for line in pane.splitlines():
            match = SENDING.match(line.strip())
            if match:
                sending[match["host"]].append(match)
            # After the send, the load shows its phase and clock, not the send's total
            # with nothing done (rich keeps a total once set).
            assert not LOADING_BYTES.match(line.strip()), pane
            ended = OUTCOME.match(line.strip())
            # An outcome in the live view before the host sent its bytes is the old lie.
            if ended and ended["host"] in HOSTS:
                assert sending[ended["host"]], f"{ended['host']} ended before sending:\n{pane}"
    for host, rows in sending.items():
        assert len(rows) >= 3, (host, captures)
        dones = [float(r["done"]) for r in rows]
        assert dones == sorted(dones) and dones[-1] > dones[0], (host, dones)
        assert all(float(r["total"]) > 150 for r in rows), rows[0].group(0)
        assert any(r["eta"] != "-:--:--" for r in rows), [r.group(0) for r in rows]
        elapsed = {r["elapsed"] for r in rows}
        assert len(elapsed) >= 2, (host, elapsed)  # the clock moves


def test_a_play_shows_its_tasks_live_view(
    lab_env: LabFixture, fat_image: str, tmp_path: Path
) -> None:
    """A playbook's push task: under its TASK header, the hosts' rows move bytes with a
    rate and a clock; when the task ends its rows give way to the hosts' lines."""
    for host in HOSTS:
        host_run(lab_env, host, "docker", "image", "rm", "-f", fat_image)
    book = tmp_path / "ship.yml"
    book.write_text(
        "- name: Ship\n  hosts: all\n  tasks:\n"
        f"    - name: The fat image\n      push: {{image: '{fat_image}', compress: none, "
        "max_rate_per_host: 20M}\n"
    )
    captures = watch(fleet_command("play", str(book), "-i", str(lab_env.inventory)), 150, 30)
    last = captures[-1]
    assert "FLEET-EXIT=0" in last, last
    assert "TASK [The fat image] (push)" in last and "lab1: changed" in last, last
    moving: dict[str, set[str]] = {h: set() for h in HOSTS}
    for pane in captures[:-1]:
        if "TASK [The fat image]" not in pane or "PLAY RECAP" in pane:
            continue
        for line in pane.splitlines():
            match = SENDING.match(line.strip())
            if match:
                moving[match["host"]].add(match["elapsed"] + " " + match["done"])
    for host, seen in moving.items():
        assert len(seen) >= 2, (host, captures)


def test_more_hosts_than_lines_fold_into_counts(lab_env: LabFixture, tmp_path: Path) -> None:
    """16 inventory names for the lab's two hosts, in a pane of 8 lines: a line of counts and
    the rows that fit, never 16 rows scrolling; then the recap of all 16."""
    document = yaml.safe_load(lab_env.inventory.read_text())
    group = document["all"]["children"]["lab"]
    real = list(group["hosts"].values())
    group["hosts"] = {f"gpu{i:02d}": real[i % len(real)] for i in range(1, 17)}
    inventory = tmp_path / "many.yml"
    inventory.write_text(yaml.safe_dump(document))
    captures = watch(
        fleet_command(
            "exec", "all", "-i", str(inventory), "--retry-file", "/dev/null", "--", "sleep", "3"
        ),
        120,
        8,
    )
    assert "FLEET-EXIT=0" in captures[-1], captures[-1]
    assert "16 hosts in" in "".join(captures[-3:]), captures[-1]
    folded = [
        pane
        for pane in captures[:-1]
        if re.search(r"^16 hosts: \d+ waiting · \d+ running", pane, re.M)
    ]
    assert folded, captures
    for pane in folded:
        rows = [line for line in pane.splitlines() if re.match(r"gpu\d\d ", line)]
        assert 1 <= len(rows) <= 5, pane


def test_fleet_top_shows_the_busy_gpu_its_job_and_answers_keys(lab_env: LabFixture) -> None:
    """A training job on lab1's GPU: fleet top shows 1 of 2 GPUs busy, the job on lab1, lab2
    free; 's' sorts by busy GPUs, 'q' quits."""
    image = ensure_image(lab_env, "lab1")
    job = host_run(
        lab_env,
        "lab1",
        *("docker", "run", "-d", "--rm", "--name", "fleet-top-job", "--runtime", "nvidia"),
        *("-e", "NVIDIA_VISIBLE_DEVICES=all", "-e", "FLEET_GPU_JOB_MIB=2048"),
        *(image, "fleet-gpu-job", "300"),
    )
    assert job.ok, job.stderr
    socket = f"fleet-test-top-{os.getpid()}"
    command = fleet_command("top", "-i", str(lab_env.inventory), "--interval", "1")
    shell = f"{shlex.join(command)}; echo FLEET-EXIT=$?; sleep 600"
    _tmux(socket, "new-session", "-d", "-x", "140", "-y", "12", "-s", "top", shell)
    try:

        def pane_until(text: str) -> str:
            deadline = time.monotonic() + 30
            while True:
                pane = _tmux(socket, "capture-pane", "-p", "-t", "top")
                if text in pane or time.monotonic() > deadline:
                    return pane
                time.sleep(0.3)

        pane = pane_until("1/2 busy")
        assert "2 hosts · GPUs 1/2 busy · free on lab2 · sorted by free" in pane, pane
        rows = {line.split()[0]: line for line in pane.splitlines() if line.startswith("lab")}
        assert rows["lab1"].split()[1] == "1/1" and "python3 2.0GiB" in rows["lab1"], pane
        assert rows["lab2"].split()[1] == "0/1", pane
        assert pane.index("lab2") < pane.index("lab1")  # the free host first
        _tmux(socket, "send-keys", "-t", "top", "s")
        pane = pane_until("sorted by busy")
        assert pane.index("\nlab1") < pane.index("\nlab2"), pane
        _tmux(socket, "send-keys", "-t", "top", "q")
        pane = pane_until("FLEET-EXIT=")
        assert "FLEET-EXIT=0" in pane, pane
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False, capture_output=True)
        host_run(lab_env, "lab1", "docker", "rm", "-f", "fleet-top-job")

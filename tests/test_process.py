"""Waiting for a local child process to exit (fleet.ssh.process), with real processes."""

from __future__ import annotations

import subprocess
import time

from fleet.ssh.process import ExitWatch


def test_an_exit_is_seen_and_the_process_reaped() -> None:
    proc = subprocess.Popen(["sh", "-c", "exit 3"])
    with ExitWatch(proc) as watch:
        assert watch.exited(10)
    assert proc.returncode == 3


def test_a_process_still_running_at_the_deadline_is_left_running() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        with ExitWatch(proc) as watch:
            started = time.monotonic()
            assert not watch.exited(0.2)
            waited = time.monotonic() - started
            assert 0.15 < waited < 5, waited
            assert proc.poll() is None
            proc.kill()
            assert watch.exited(None)
        assert proc.returncode == -9
    finally:
        proc.kill()
        proc.wait()


def test_a_watch_of_a_process_already_reaped_says_it_exited() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    with ExitWatch(proc) as watch:
        assert watch.exited(0)

"""Waiting for a local child process (an ``ssh`` client, a local command) to exit.

``Popen.wait(timeout)`` polls ``waitpid`` with sleeps that grow to 50 ms: a fan-out of
hundreds of ``ssh`` processes, each waited for by its own thread for seconds, spends more
of the controller's CPU in those polls than in anything else it does per host. Linux
tells a process's exit on a *pidfd* instead, which a thread can sleep on until the exit or
the deadline.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess


class ExitWatch:
    """A child process's exit, waited for without polling where Linux has pidfds."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._poll: select.poll | None = None
        self._fd: int | None = None
        # No pidfd (not Linux, a kernel older than 5.3): Popen.wait's polling it is.
        with contextlib.suppress(AttributeError, OSError):
            self._fd = os.pidfd_open(proc.pid)
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN)

    def __enter__(self) -> ExitWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exited(self, timeout: float | None) -> bool:
        """Whether the process has exited (and is reaped) within ``timeout`` seconds
        (None: however long it takes)."""
        if self._proc.returncode is not None:
            return True
        if self._poll is None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        if not self._poll.poll(None if timeout is None else max(0, int(timeout * 1000))):
            return False
        self._proc.wait()
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._poll = None

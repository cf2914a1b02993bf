"""The controller itself as a :class:`~fleet.ssh.base.Transport`: a playbook task's
``delegate_to: localhost``, and an inventory host with ``ansible_connection: local``.

Commands run as argv (never through a shell string), as the controller's user; becoming
another user goes through ``sudo -n`` as on a remote host, and becoming the user fleet
already runs as is nothing to do. Output past :data:`~fleet.ssh.base.MAX_OUTPUT` per
stream fails the host, as a remote command's does.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import IO

from fleet.errors import CommandError, HostError
from fleet.ssh.base import MAX_OUTPUT, CommandResult, fix_for, too_much_output
from fleet.ssh.process import ExitWatch

_TIMEOUT_FIX = "raise the task's timeout, or look at what the command waits for"


class LocalTransport:
    """Runs commands on the controller for the inventory host ``host``."""

    def __init__(self, host: str, become: bool = False, become_user: str = "") -> None:
        self._host = host
        wanted = (become_user or "root") if become else ""
        # sudo only when the command must run as someone else than fleet's own user.
        self._prefix = ["sudo", "-n", "-H", "-u", wanted, "--"] if wanted not in ("", _me()) else []

    @property
    def host(self) -> str:
        return self._host

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        return self.stream(argv, [stdin] if stdin is not None else [], timeout=timeout, check=check)

    def stream(
        self,
        argv: Sequence[str],
        chunks: Iterable[bytes],
        *,
        timeout: float | None = None,
        check: bool = True,
        stall_timeout: float | None = None,
    ) -> CommandResult:
        if not argv:
            raise ValueError("empty command")
        words = [*self._prefix, *argv]
        command = shlex.join(words)
        started = time.monotonic()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(words, stdin=subprocess.PIPE, stdout=out, stderr=err)
            except OSError as exc:
                raise HostError(self._host, f"cannot run {command!r} here: {exc}") from None
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                for chunk in chunks:
                    proc.stdin.write(chunk)
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            with ExitWatch(proc) as watch:
                exited = watch.exited(timeout)
            if not exited:
                proc.kill()
                proc.wait()
                raise HostError(
                    self._host,
                    f"timed out after {timeout:g}s running {command!r}",
                    fix=_TIMEOUT_FIX,
                ) from None
            stdout, stderr = (_read(f, self._host, command) for f in (out, err))
        result = CommandResult(command, proc.returncode, stdout, stderr, time.monotonic() - started)
        if check and not result.ok:
            raise CommandError(
                self._host, command, result.exit_code, stdout, stderr, fix=fix_for(stderr)
            )
        return result

    def close(self) -> None:
        return None


def _me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return ""


def _read(file: IO[bytes], host: str, command: str) -> str:
    file.seek(0, 2)
    if file.tell() > MAX_OUTPUT:
        raise too_much_output(host, command)
    file.seek(0)
    return file.read().decode("utf-8", "replace")

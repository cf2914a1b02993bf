"""A command on a host, whatever carries it: the :class:`Transport` interface and its result.

Both SSH clients implement :class:`Transport` (paramiko in :mod:`fleet.transport`, the
system's OpenSSH client in :mod:`fleet.openssh`). This module imports neither, so the core
(runner, facts, audit) can name the interface without paying for an SSH library.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left behind."""

    command: str
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Transport(Protocol):
    """A connection to one host that runs commands."""

    @property
    def host(self) -> str: ...

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult: ...

    def stream(
        self,
        argv: Sequence[str],
        chunks: Iterable[bytes],
        *,
        timeout: float | None = None,
        check: bool = True,
        stall_timeout: float | None = None,
    ) -> CommandResult: ...

    def close(self) -> None: ...


def fix_for(stderr: str) -> str | None:
    """A fix for well-known remote failures, recognised from their messages."""
    text = stderr.lower()
    if "permission denied" in text and "docker" in text and ".sock" in text:
        return "add the SSH user to the host's 'docker' group, or set ansible_become: true"
    if "cannot connect to the docker daemon" in text or "is the docker daemon running" in text:
        return "start the host's Docker engine (e.g. 'systemctl start docker')"
    if "sudo: a password is required" in text or "sudo: a terminal is required" in text:
        return "allow passwordless sudo for the SSH user (NOPASSWD), or unset ansible_become"
    return None

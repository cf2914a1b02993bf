"""A command on a host, whatever carries it: the :class:`Transport` interface and its result.

Both SSH clients implement :class:`Transport` (paramiko in :mod:`fleet.ssh.paramiko_client`, the
system's OpenSSH client in :mod:`fleet.ssh.openssh`). This module imports neither, so the core
(runner, facts, audit) can name the interface without paying for an SSH library.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from fleet.errors import HostError
from fleet.hostoutput import clipped

# The most a command may print on each of stdout and stderr before the host fails. Nothing
# fleet runs prints a tenth of it; a host that does is broken or hostile, and the output is
# held in the controller's memory, once per host of a run.
MAX_OUTPUT = 64 * 1024 * 1024


def too_much_output(host: str, command: str) -> HostError:
    """The error of a host whose command printed more than :data:`MAX_OUTPUT`."""
    return HostError(
        host,
        f"printed more than {MAX_OUTPUT // (1024 * 1024)} MiB running "
        f"{clipped(' '.join(command.split()), 120)!r}; "
        "fleet stopped reading it",
        fix="look at the host (its tools may be replaced or broken); a command of yours that "
        "prints this much should write to a file on the host instead",
    )


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
    ) -> CommandResult:
        """Run ``argv``; output past :data:`MAX_OUTPUT` per stream fails the host."""
        ...

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


# Well-known remote failures: (words that must all be in the message, the fix). The one
# table fleet reads a remote error's fix from; the first row that matches wins.
DOCKER_GROUP_FIX = "add the SSH user to the host's 'docker' group, or set ansible_become: true"
ENGINE_START_FIX = "start the host's Docker engine (e.g. 'systemctl start docker')"
_SUDO_FIX = (
    "give sudo's password with -K/--ask-become-pass or ansible_become_password, "
    "allow passwordless sudo for the SSH user (NOPASSWD), or unset ansible_become"
)
_FIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("permission denied", "docker", ".sock"), DOCKER_GROUP_FIX),
    (("cannot connect to the docker daemon",), ENGINE_START_FIX),
    (("is the docker daemon running",), ENGINE_START_FIX),
    (("sudo: a password is required",), _SUDO_FIX),
    (("sudo: a terminal is required",), _SUDO_FIX),
)


def fix_for(stderr: str) -> str | None:
    """A fix for well-known remote failures, recognised from their messages."""
    text = stderr.lower()
    for words, fix in _FIXES:
        if all(word in text for word in words):
            return fix
    return None

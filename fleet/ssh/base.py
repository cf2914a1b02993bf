"""A command on a host, whatever carries it: the :class:`Transport` interface and its result.

Both SSH clients implement :class:`Transport` (paramiko in :mod:`fleet.ssh.paramiko_client`, the
system's OpenSSH client in :mod:`fleet.ssh.openssh`). This module imports neither, so the core
(runner, facts, audit) can name the interface without paying for an SSH library.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

from fleet.errors import HostError, HostOutputError

# The most a command may print on each of stdout and stderr before the host fails. Nothing
# fleet runs prints a tenth of it; a host that does is broken or hostile, and the output is
# held in the controller's memory, once per host of a run.
MAX_OUTPUT = 64 * 1024 * 1024


def too_much_output(host: str, command: str) -> HostError:
    """The error of a host whose command printed more than :data:`MAX_OUTPUT`."""
    return HostError(
        host,
        f"printed more than {MAX_OUTPUT // (1024 * 1024)} MiB running "
        f"{_clipped(' '.join(command.split()), 120)!r}; "
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


# What fleet's own gather scripts print is a few KiB per host (a few hundred KiB for a host
# with hundreds of images): past these limits the output is not parsed at all.
MAX_GATHER = 16 * 1024 * 1024
MAX_GATHER_LINES = 200_000


def gathered(text: str, what: str) -> str:
    """A gather script's output, checked against :data:`MAX_GATHER` and the line cap."""
    if len(text) > MAX_GATHER:
        raise HostOutputError(
            f"{what}: the host printed {len(text) // 1024} KiB, more than the "
            f"{MAX_GATHER // (1024 * 1024)} MiB fleet reads"
        )
    lines = text.count("\n")
    if lines > MAX_GATHER_LINES:
        raise HostOutputError(
            f"{what}: the host printed {lines} lines, more than the {MAX_GATHER_LINES} fleet reads"
        )
    return text


def host_json(text: str, what: str) -> Any:
    """One JSON document a host printed, or :class:`HostOutputError` naming ``what``.

    Nesting is bounded by the decoder itself: past the interpreter's recursion limit (about
    a thousand levels) it raises ``RecursionError`` at once, without using memory.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise HostOutputError(f"{what}: JSON nested too deep ({_clipped(text)!r})") from None
    except json.JSONDecodeError as exc:
        raise HostOutputError(f"{what}: not JSON ({_clipped(text)!r}: {exc})") from None


_P = ParamSpec("_P")
_R = TypeVar("_R")

# What a parser raises when a host's output has another shape than fleet's script prints
# (a list where a mapping was, text where a number was, ...).
_SHAPE_ERRORS = (AttributeError, TypeError, ValueError, KeyError, IndexError, RecursionError)


def parses_host_output(what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Mark a parser of one host's output: any error of shape becomes HostOutputError.

    A hostile or broken host then fails alone with a reason that names ``what`` and the
    evidence, instead of an "internal error" traceback or a crashed view.
    """

    def decorate(parse: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(parse)
        def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return parse(*args, **kwargs)
            except HostOutputError:
                raise
            except _SHAPE_ERRORS as exc:
                raise HostOutputError(
                    f"{what}: the host printed something of another shape than expected "
                    f"({type(exc).__name__}: {_clipped(str(exc), 160)})"
                ) from None

        return guarded

    return decorate


def _clipped(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


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

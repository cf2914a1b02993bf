"""Become with a password: sudo's prompt answered over the channel, never on a command line.

The remote command runs as ``sudo -S -p PROMPT -- /bin/sh -c 'printf ... >&2; exec "$@"'
MARKER argv...``: sudo prints PROMPT on stderr when it wants the password; once it let the
command through, the shell prints MARKER on stderr before it becomes ``argv``. The controller
reads stderr one byte at a time up to one of the two (so none of the command's own output is
consumed), answers a prompt with the password and waits for the marker. A second prompt means
sudo rejected the password: the channel is closed at once (no retries that hang the run).
PROMPT and MARKER are random per command, so the command's own output cannot fake them, and
nothing of the password reaches argv, the environment or a log. Ansible does the same with
its ``BECOME-SUCCESS-`` marker.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fleet.errors import HostError

# Long enough for sudo to look the user up and read a password file; short enough that a
# host whose sudo waits for something else fails the host instead of hanging the run.
HANDSHAKE_TIMEOUT = 30.0
# sudo's lecture and its "Sorry, try again." are short; a host printing more before either
# token is not running sudo as expected.
_MAX_PREAMBLE = 8192


@dataclass(frozen=True)
class Become:
    """One command's sudo wrapping: the argv to run and the tokens that frame the answer."""

    argv: list[str]
    prompt: bytes
    marker: bytes


def wrap(argv: Sequence[str], user: str | None) -> Become:
    """``argv`` under ``sudo -S`` with a random prompt, announcing itself with a random marker."""
    token = secrets.token_hex(8)
    prompt = f"[fleet-become-{token}] password: "
    marker = f"fleet-become-ok-{token}"
    words = ["sudo", "-S", "-H", "-p", prompt]
    if user:
        words += ["-u", user]
    # $0 is the marker: the script itself holds nothing that comes from outside.
    words += ["--", "/bin/sh", "-c", 'printf "%s\\n" "$0" >&2; exec "$@"', marker, *argv]
    return Become(words, prompt.encode(), marker.encode() + b"\n")


def handshake(
    host: str,
    become: Become,
    password: str,
    *,
    read: Callable[[], bytes],
    send: Callable[[bytes], None],
    timeout: float = HANDSHAKE_TIMEOUT,
) -> None:
    """Answer sudo's prompt on the channel until the command starts.

    ``read`` returns the next byte of the remote stderr (b"" at its end), ``send`` writes
    to the remote stdin. Raises HostError when the password is rejected, sudo refuses, or
    neither token comes within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    seen = bytearray()
    answered = False
    while True:
        if time.monotonic() > deadline:
            raise HostError(
                host,
                f"sudo did not answer within {timeout:g}s",
                fix="check that sudo works for the SSH user on that host",
            )
        byte = read()
        if not byte:
            raise HostError(host, _refusal(seen), fix=_FIX_REFUSED)
        seen += byte
        if seen.endswith(become.marker):
            return
        if seen.endswith(become.prompt):
            if answered:
                raise HostError(host, "become password rejected by sudo", fix=_FIX_REJECTED)
            send(password.encode() + b"\n")
            answered = True
            seen.clear()
        elif len(seen) > _MAX_PREAMBLE:
            raise HostError(host, _refusal(seen[-400:]), fix=_FIX_REFUSED)


_FIX_REJECTED = (
    "give the SSH user's sudo password: -K/--ask-become-pass, or ansible_become_password "
    "in the inventory (e.g. in a host_vars file only root can read)"
)
_FIX_REFUSED = "check that the SSH user may run commands with sudo on that host (sudoers)"


def _refusal(seen: bytes | bytearray) -> str:
    text = bytes(seen).decode("utf-8", "replace").strip()
    # Only the last line: sudo's lecture is not evidence.
    last = text.splitlines()[-1] if text else "no output"
    return f"sudo refused to run the command: {last}"

"""A fake of fleet's own Transport interface, for unit tests (never of paramiko or docker)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fleet.errors import CommandError
from fleet.ssh.base import CommandResult


class FakeTransport:
    """A host that answers each command with :meth:`answer`, and remembers what it was asked.

    Like the real transports, ``run(..., check=True)`` raises :class:`CommandError` for a
    non-zero exit. Nothing streams to it unless a subclass says how.
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self.commands: list[list[str]] = []

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        """What ``argv`` printed (override); by default it succeeds silently."""
        return CommandResult(" ".join(argv), 0, "", "", 0.0)

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        self.commands.append(list(argv))
        result = self.answer(list(argv), stdin)
        if check and result.exit_code != 0:
            raise CommandError(
                self.host, result.command, result.exit_code, result.stdout, result.stderr
            )
        return result

    def stream(
        self, argv: Sequence[str], chunks: Iterable[bytes], **options: object
    ) -> CommandResult:
        raise AssertionError(f"{self.host}: nothing is streamed to this fake")

    def close(self) -> None:
        return None

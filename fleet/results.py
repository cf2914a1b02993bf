"""What happened on each host, as values.

A step on a host ends in exactly one :class:`Outcome`. :class:`HostResult` carries the
outcome with its evidence (the reason, the time it took, what the step reports);
:class:`FleetResult` is the whole run, and knows its exit code (Ansible's: 0 all ok,
2 some host failed, 3 some host unreachable) and its JSON form.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from fleet.errors import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE

JSON_SCHEMA_VERSION = 1
_P = TypeVar("_P")


class Payload(Protocol):
    """What an operation reports of one host, typed (a push's ``Shipment``, a deploy's
    ``Switch``, ...); its JSON form is the result's ``details``."""

    def to_json(self) -> dict[str, Any]: ...


class Outcome(enum.StrEnum):
    """How a host ended; the order is the order of severity."""

    OK = "ok"
    CHANGED = "changed"
    SKIPPED = "skipped"
    FAILED = "failed"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class HostResult:
    """The outcome of one command (or step) on one host, with its evidence."""

    host: str
    outcome: Outcome
    reason: str | None = None
    fix: str | None = None
    seconds: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    # What the operation reported, typed, for other operations to read (:meth:`typed`);
    # ``details`` is its JSON when it was given (:meth:`with_payload`). Only ``details`` is
    # ever shown: it is what secrets are redacted from.
    payload: Payload | None = None

    def with_payload(self, payload: Payload) -> HostResult:
        """This result reporting ``payload``, its details the payload's JSON."""
        return replace(self, payload=payload, details=payload.to_json())

    def typed(self, kind: type[_P]) -> _P | None:
        """The payload when it is a ``kind`` (None for another operation's result)."""
        return self.payload if isinstance(self.payload, kind) else None

    @property
    def succeeded(self) -> bool:
        return self.outcome in (Outcome.OK, Outcome.CHANGED, Outcome.SKIPPED)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "outcome": str(self.outcome),
            "reason": self.reason,
            "fix": self.fix,
            "seconds": round(self.seconds, 3),
            "details": dict(self.details),
            "stdout": self.stdout,
            "stderr": self.stderr,
        }


@dataclass(frozen=True)
class FleetResult:
    """Every host's result of one command, in inventory order."""

    command: str
    results: tuple[HostResult, ...]
    seconds: float = 0.0

    @classmethod
    def of(cls, command: str, results: Iterable[HostResult], seconds: float = 0.0) -> FleetResult:
        return cls(command, tuple(results), seconds)

    def counts(self) -> dict[Outcome, int]:
        """How many hosts ended in each outcome (every outcome present, zero or not)."""
        found = Counter(r.outcome for r in self.results)
        return {outcome: found.get(outcome, 0) for outcome in Outcome}

    @property
    def failed(self) -> tuple[HostResult, ...]:
        return tuple(r for r in self.results if r.outcome is Outcome.FAILED)

    @property
    def unreachable(self) -> tuple[HostResult, ...]:
        return tuple(r for r in self.results if r.outcome is Outcome.UNREACHABLE)

    @property
    def exit_code(self) -> int:
        """Ansible's: unreachable wins over failed, which wins over ok."""
        if self.unreachable:
            return EXIT_UNREACHABLE
        if self.failed:
            return EXIT_FAILED
        return EXIT_OK

    def retry_hosts(self) -> list[str]:
        """The hosts to run again: failed and unreachable ones."""
        return [r.host for r in self.results if not r.succeeded]

    def to_json(self) -> dict[str, Any]:
        """The documented ``--json`` document (see README, 'JSON output')."""
        return {
            "schema": JSON_SCHEMA_VERSION,
            "command": self.command,
            "seconds": round(self.seconds, 3),
            "summary": {str(k): v for k, v in self.counts().items()},
            "exit_code": self.exit_code,
            "hosts": {r.host: r.to_json() for r in self.results},
        }

"""Secret variables: values that never reach output, ``--json``, image labels or host history.

A playbook run marks variables secret (``fleet play --secret NAME``, or ``--secret @FILE``
for a file of them). Their values may be used where a host needs them (``exec``,
``copy``, ``cron``, ``dir``); every result is redacted before anyone sees it, and steps
whose arguments are recorded (in image labels, the hosts' history) refuse them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.errors import FleetError
from fleet.results import FleetResult, HostResult

REDACTED = "********"


@dataclass(frozen=True)
class Secrets:
    """The marked names and every value they carry (longest first, so none leaks in part)."""

    names: frozenset[str] = frozenset()
    values: tuple[str, ...] = ()

    @classmethod
    def of(cls, names: Iterable[str], sources: Iterable[Mapping[str, Any]]) -> Secrets:
        """The values of ``names`` wherever they are defined in ``sources``."""
        marked = frozenset(names)
        found: set[str] = set()
        for source in sources:
            for name in marked & source.keys():
                found.update(text for text in _leaves(source[name]) if text)
        return cls(marked, tuple(sorted(found, key=lambda text: (-len(text), text))))

    def __bool__(self) -> bool:
        return bool(self.values)

    def found_in(self, value: Any) -> bool:
        """Whether any secret value appears anywhere in ``value`` (strings, nested)."""
        return any(secret in text for text in _leaves(value) for secret in self.values)

    def redact(self, value: Any) -> Any:
        """``value`` with every secret replaced by :data:`REDACTED`, at any depth."""
        if not self.values:
            return value
        if isinstance(value, str):
            for secret in self.values:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, Mapping):
            return {key: self.redact(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact(item) for item in value)
        return value

    def result(self, result: FleetResult) -> FleetResult:
        """A fleet result whose every host row is redacted."""
        if not self.values:
            return result
        rows = tuple(self._row(row) for row in result.results)
        return dataclasses.replace(result, results=rows)

    def _row(self, row: HostResult) -> HostResult:
        return dataclasses.replace(
            row,
            reason=self.redact(row.reason),
            fix=self.redact(row.fix),
            details=self.redact(dict(row.details)),
            stdout=self.redact(row.stdout),
            stderr=self.redact(row.stderr),
        )

    def error(self, exc: FleetError) -> FleetError:
        """``exc`` with its message and fix redacted (the same object, for its exit code)."""
        if self.values:
            exc.message = self.redact(exc.message)
            exc.fix = self.redact(exc.fix)
            exc.args = (exc.message,)
        return exc


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, bool) or value is None:
        return
    else:
        yield str(value)

"""What fleet writes on a host and reads back: a history line (:class:`HistoryEntry`) and the
deploy lock's document (:class:`LockDocument`), each read by one tolerant parser.

A host's files are the host's word: any shape is survived (a missing key is None, a value of
another type is not trusted as one), and ``--json`` shows what the host holds, as it holds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

LockShape = Literal["object", "other", "garbage"]


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class LockDocument:
    """The lock file's content: what fleet wrote (a JSON object), or what else is there."""

    raw: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    # "object": fleet's JSON object; "other": JSON, not an object; "garbage": not JSON.
    shape: LockShape = "object"

    @classmethod
    def parse(cls, text: str) -> LockDocument:
        try:
            parsed = json.loads(text.strip() or "{}")
        except (json.JSONDecodeError, RecursionError):
            return cls(text, {}, "garbage")
        if not isinstance(parsed, dict):
            return cls(text, {}, "other")
        return cls(text, parsed, "object")

    @property
    def holder(self) -> str:
        """Who holds it (``user@controller``); a garbage file's first 200 characters."""
        if self.shape == "garbage":
            return self.raw.strip()[:200] or "?"
        return str(self.fields.get("holder", "?"))

    def get(self, key: str) -> Any:
        """A field as the host wrote it (None when absent): for ``--json``, untouched."""
        return self.fields.get(key)

    def said(self, key: str) -> str:
        """A field as text for a message, ``?`` when absent."""
        return str(self.fields.get(key, "?"))

    @property
    def expires(self) -> str:
        return str(self.fields.get("expires", ""))

    @property
    def ttl(self) -> float | None:
        """The lease's TTL, None for a lock of an older fleet (a fixed expiry) or garbage."""
        ttl = self.fields.get("ttl")
        if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0:
            return float(ttl)
        return None

    @property
    def pid(self) -> int | None:
        pid = self.fields.get("pid")
        return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None

    def to_json(self) -> dict[str, Any]:
        """What ``fleet audit --json`` shows: the object, or the raw text of anything else."""
        return dict(self.fields) if self.shape == "object" else {"raw": self.raw}


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a host's history: a switch (deploy, rollback, a failed try) or a change
    of someone else's lock (``outcome`` ``lock``)."""

    fields: Mapping[str, Any]

    @classmethod
    def parse(cls, line: str) -> HistoryEntry | None:
        """The line's entry; None for a line that is not a JSON object."""
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            return None
        return cls(value) if isinstance(value, dict) else None

    @property
    def is_switch(self) -> bool:
        """A line of a switch, not of a lock's change."""
        return self.fields.get("outcome") != "lock"

    @property
    def time(self) -> str | None:
        return _text(self.fields.get("time"))

    @property
    def action(self) -> str | None:
        return _text(self.fields.get("action"))

    @property
    def by(self) -> str | None:
        return _text(self.fields.get("by"))

    @property
    def outcome(self) -> str | None:
        return _text(self.fields.get("outcome"))

    @property
    def from_version(self) -> str | None:
        """The version it switched from (None, or "", when nothing ran)."""
        return _text(self.fields.get("from"))

    @property
    def to_version(self) -> str | None:
        return _text(self.fields.get("to"))

    def get(self, key: str) -> Any:
        """A field as the host wrote it (None when absent)."""
        return self.fields.get(key)

    def to_json(self) -> dict[str, Any]:
        return dict(self.fields)


def last_switch(history: Iterable[HistoryEntry]) -> HistoryEntry | None:
    """The history's last switch (a lock's take-over or release is none)."""
    return next((e for e in reversed(list(history)) if e.is_switch), None)

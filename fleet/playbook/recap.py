"""The account of a playbook run: each task's result, and per host the counts of Ansible's
PLAY RECAP and the framework version before and after."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.errors import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE
from fleet.ops.deploy import Switch
from fleet.playbook import loop, steps
from fleet.results import FleetResult, HostResult, Outcome


@dataclass
class Tally:
    """One host's counts over a whole playbook, and its framework version before and after."""

    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored"), 0
        )
    )
    version_before: str | None = None
    version_after: str | None = None

    def add(self, result: HostResult, ignored: bool, rescued: bool = False) -> None:
        """Count a task's row as Ansible's recap does: once per task (a loop's items
        together); ``ok`` for every task that ran without failing, ``changed`` as well when
        it changed something; a failure that ``ignore_errors`` lets pass counts ok and
        ignored, one a block's rescue takes over counts rescued."""
        items = loop.item_outcomes(result) or [str(result.outcome)]
        changed = Outcome.CHANGED in items or steps.changed(result)
        counted: list[str] = []
        if result.outcome is Outcome.FAILED:
            counted = ["ok", "ignored"] if ignored else ["rescued" if rescued else "failed"]
        elif result.outcome is Outcome.UNREACHABLE:
            counted = ["unreachable"]
        elif result.outcome is Outcome.SKIPPED:
            counted = ["skipped"]
        else:
            counted = ["ok"]
        if changed and "ok" in counted:
            counted.append("changed")
        for key in counted:
            self.counts[key] += 1
        switched = result.typed(Switch)
        if switched is None:
            return
        if switched.version_before is not None and self.version_before is None:
            self.version_before = switched.version_before
        self.version_after = switched.version_after


@dataclass(frozen=True)
class TaskRun:
    play: str
    task: str
    step: str
    result: FleetResult


@dataclass
class PlaybookRun:
    """Everything a playbook run did."""

    tasks: list[TaskRun] = field(default_factory=list)
    tallies: dict[str, Tally] = field(default_factory=dict)
    stopped: str = ""
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if any(t.counts["unreachable"] for t in self.tallies.values()):
            return EXIT_UNREACHABLE
        if any(t.counts["failed"] for t in self.tallies.values()):
            return EXIT_FAILED
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            # 2: the recap counts as Ansible's does (ok includes changed; rescued).
            "schema": 2,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
            "stopped": self.stopped or None,
            "tasks": [
                {"play": t.play, "task": t.task, "step": t.step, **t.result.to_json()}
                for t in self.tasks
            ],
            "recap": {
                host: {
                    **tally.counts,
                    "version_before": tally.version_before,
                    "version_after": tally.version_after,
                }
                for host, tally in self.tallies.items()
            },
        }

"""Loops: a task run once per item of a list, each item's outcome kept (the recap counts the task once).

Ansible's ``loop``: the list is a literal or a template rendered per host; each item runs
the step with ``item`` (or ``loop_control.loop_var``) and, if asked, ``index_var`` set;
``when``, ``changed_when`` and ``failed_when`` are judged per item. A host's items run in
order, hosts side by side; a failed item does not stop the items after it (an unreachable
host does). The host's result for the task is one row whose ``details["loop"]`` lists the
items; a registered loop holds ``results`` (each item's registered value with ``item``),
as Ansible's does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleet.errors import PlaybookError
from fleet.playbook.schema import Task
from fleet.playbook.template import render
from fleet.results import HostResult, Outcome

# A label longer than this is cut: a loop over large mappings would bury the output.
LABEL_CHARS = 80


@dataclass(frozen=True)
class ItemRun:
    """One item's run on one host: the item, its label, its result and registered value."""

    item: Any
    label: str
    row: HostResult
    value: Mapping[str, Any]


def items(task: Task, variables: Mapping[str, Any]) -> list[Any]:
    """The task's list for a host with these variables (PlaybookError unless a list)."""
    value = render(task.loop, variables)
    if isinstance(value, list | tuple):
        return list(value)
    hint = " (a mapping: '| dict2items')" if isinstance(value, Mapping) else ""
    raise PlaybookError(
        f"{task.where}.loop: expected a list, got {type(value).__name__}{hint}",
        line=task.line,
        fix="loop over a list, e.g. loop: [a, b] or loop: \"{{ names | split(',') }}\"",
    )


def variables(task: Task, item: Any, index: int) -> dict[str, Any]:
    """What an item adds to the host's variables."""
    added = {task.loop_var: item, "ansible_loop_var": task.loop_var}
    if task.index_var:
        added[task.index_var] = index
    return added


def label(task: Task, item_variables: Mapping[str, Any]) -> str:
    """How an item is named in output: ``loop_control.label`` rendered, or the item."""
    value = render(task.label, item_variables) if task.label else item_variables[task.loop_var]
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 3] + "..."


def gone(runs: Sequence[ItemRun]) -> bool:
    """Whether a host's loop ends here: it was unreachable, its later items cannot run."""
    return bool(runs) and runs[-1].row.outcome is Outcome.UNREACHABLE


def combined(
    host: str, runs: Sequence[ItemRun], loop_var: str
) -> tuple[HostResult, dict[str, Any]]:
    """A host's one row for the whole loop, and the value ``register`` keeps.

    The row is the worst of its items (unreachable, failed, changed, ok; skipped when every
    item was), its reason the first failing item's, and ``details["loop"]`` every item.
    """
    outcomes = [r.row.outcome for r in runs]
    if not runs:
        outcome = Outcome.SKIPPED
    elif Outcome.UNREACHABLE in outcomes:
        outcome = Outcome.UNREACHABLE
    elif Outcome.FAILED in outcomes:
        outcome = Outcome.FAILED
    elif Outcome.CHANGED in outcomes:
        outcome = Outcome.CHANGED
    elif all(o is Outcome.SKIPPED for o in outcomes):
        outcome = Outcome.SKIPPED
    else:
        outcome = Outcome.OK
    bad = next((r for r in runs if not r.row.succeeded), None)
    if bad is not None:
        reason, fix = f"item {bad.label}: {bad.row.reason or bad.row.outcome}", bad.row.fix
    else:
        counts = {str(o): outcomes.count(o) for o in Outcome if outcomes.count(o)}
        detail = ", ".join(f"{n} {name}" for name, n in counts.items())
        reason, fix = f"{len(runs)} items ({detail})" if runs else "no items in the loop", None
    row = HostResult(
        host,
        outcome,
        reason,
        fix,
        seconds=sum(r.row.seconds for r in runs),
        details={
            "loop": [
                {"item": r.label, **{k: v for k, v in r.row.to_json().items() if k != "host"}}
                for r in runs
            ]
        },
    )
    value = {
        "results": [{**r.value, loop_var: r.item, "ansible_loop_var": loop_var} for r in runs],
        "changed": outcome is Outcome.CHANGED,
        "failed": outcome in (Outcome.FAILED, Outcome.UNREACHABLE),
        "skipped": outcome is Outcome.SKIPPED,
        "msg": "One or more items failed" if bad else "All items completed",
    }
    return row, value


def item_outcomes(row: HostResult) -> list[str] | None:
    """The outcome of each item of a looped task's row; None for a task without a loop."""
    entries = row.details.get("loop")
    if not isinstance(entries, list):
        return None
    return [str(e.get("outcome")) for e in entries if isinstance(e, Mapping)]

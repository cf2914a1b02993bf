"""A host's history: one JSON line per switch (deploy, rollback, failure) and per change of
someone else's deploy lock, appended to ``/var/lib/fleet/history.jsonl`` on the host."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fleet.ops.containers import HISTORY_FILE
from fleet.ops.records import HistoryEntry, last_switch
from fleet.programs import program
from fleet.ssh.base import Transport
from fleet.units import utc_now

if TYPE_CHECKING:
    from fleet.ops.deploy import Target
    from fleet.ops.gpu import GPUProcess

APPEND_SCRIPT = program("history_append.sh")


def record(transport: Transport, entry: Mapping[str, Any]) -> dict[str, str]:
    """Append one JSON line to the host's history; best effort, never hiding the outcome,
    but not silent: a line that could not be written is said in the result's details."""
    line = json.dumps(dict(entry), sort_keys=True, separators=(",", ":")) + "\n"
    ran = transport.run(["sh", "-c", APPEND_SCRIPT], stdin=line.encode(), check=False)
    if ran.exit_code == 0:
        return {}
    said = (ran.stderr or ran.stdout).strip().splitlines()[-3:]
    why = " / ".join(said) or f"exit {ran.exit_code}"
    return {"history_not_recorded": f"{HISTORY_FILE}: {why}"}


def switch_entry(
    action: str,
    by: str,
    previous: str | None,
    target: Target,
    started: float,
    interrupted: Sequence[GPUProcess] = (),
) -> dict[str, Any]:
    """The history line of a switch, without its outcome (``started``: its monotonic start)."""
    entry: dict[str, Any] = {
        "time": utc_now(),
        "by": by,
        "action": action,
        "from": previous,
        "to": target.tag,
        "image": target.reference,
        "seconds": round(time.monotonic() - started, 1),
    }
    if interrupted:
        # --force stopped GPU jobs: whoever ran them finds out why in the host's history.
        entry["interrupted"] = [str(p) for p in interrupted]
    return entry


def last_switched_to(history: Iterable[HistoryEntry], tag: str) -> bool:
    """Whether the history's last switch changed the host to ``tag``."""
    last = last_switch(history)
    return last is not None and last.to_version == tag and last.outcome == "changed"

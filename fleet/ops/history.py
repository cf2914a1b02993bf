"""A host's history: one JSON line per switch (deploy, rollback, failure) and per change of
someone else's deploy lock, appended to ``/var/lib/fleet/history.jsonl`` on the host."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fleet.ops.containers import HISTORY_FILE
from fleet.programs import program
from fleet.ssh.base import Transport

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

"""A host's history file: lines appended whole or not at all (the real script, run here
against a temporary directory standing in for the host's state directory)."""

from __future__ import annotations

import json
from pathlib import Path

from fleet.ops import history
from fleet.ops.containers import STATE_DIR
from tests.test_lock import LocalHost


def test_a_line_cut_on_its_way_appends_nothing_and_the_next_is_whole(tmp_path: Path) -> None:
    host = LocalHost("gpu1", tmp_path)
    assert history.record(host, {"action": "deploy", "to": "0.2.1"}) == {}
    line = json.dumps({"action": "deploy", "to": "0.2.2"}) + "\n"
    for cut in (0, 1, len(line) // 2, len(line) - 1):
        ran = host.run(["sh", "-c", history.APPEND_SCRIPT], stdin=line[:cut].encode(), check=False)
        assert ran.exit_code == 8 and "cut short" in ran.stderr, ran
    assert history.record(host, {"action": "rollback", "to": "0.2.1"}) == {}
    written = (tmp_path / Path(history.HISTORY_FILE).relative_to(STATE_DIR)).read_text()
    assert [json.loads(text)["action"] for text in written.splitlines()] == ["deploy", "rollback"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.jsonl"], (
        "a temporary file was left"
    )

"""bench/faults: every fault of issue #10 injected into a real rollout, and what survived.

Runs the faults suite (``tests/test_faults_e2e.py``, marker ``faults``) in its own pytest
process; the suite starts and removes its own four-host mixed lab (two classic, two
containerd engines). Each fault is injected into a rollout of a new version to all four
hosts, then one checker decides: the outcome reported per host (and whether it was the
right one), whether every host still runs a healthy framework, whether any tag points at
a half-loaded image, whether the history has its lines, and whether a rerun converges the
fleet. Prints the table, the suite's wall time, and as its last line
``faults survived: N/N``.

    python bench/faults.py [-- PYTEST ARGS...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import FaultRow, FaultTable  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-faults-") as tmp:
        table_file = Path(tmp) / "faults.json"
        started = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-m",
                "faults",
                "-p",
                "no:cacheprovider",
                "tests/test_faults_e2e.py",
                *args.pytest_args,
            ],
            cwd=ROOT,
            env={**os.environ, "FLEET_FAULTS_JSON": str(table_file)},
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        if not table_file.is_file():
            print(proc.stdout[-5000:], proc.stderr[-3000:], sep="\n")
            print("faults survived: 0/0 (the suite did not run)")
            return 1
        document = json.loads(table_file.read_text())
    rows = {}
    for row in document["rows"]:
        row.pop("survived", None)
        rows[row["fault"]] = FaultRow(**row)
    table = FaultTable(document["expected"], rows)
    lines = table.render()
    summary = [line for line in proc.stdout.splitlines() if " passed" in line or " failed" in line]
    print(f"pytest: {summary[-1] if summary else proc.returncode} (wall time {seconds:.0f}s)")
    if proc.returncode != 0:
        failures = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
        print("\n".join(failures))
    print("\n".join(lines))  # its last line: faults survived: N/N
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""bench/chaos: a seeded chaos soak of rollouts, many rounds, and whether each converged.

Runs the chaos suite (``tests/test_chaos_e2e.py``) in its own pytest process with
``FLEET_CHAOS_ROUNDS`` rounds (default 50) and ``FLEET_CHAOS_SEED``; the suite starts and
removes its own three-host mixed lab. Each round builds a version, rolls it out in a
process of its own, hits it at a seeded moment with one seeded fault (controller SIGKILL,
host frozen past the command timeout, host restarted, SSH sessions killed, engine
restarted, disk full mid-load), lifts the fault, reruns once and checks the invariants.
Prints the rounds' table, the wall time, the faults seen, and as its last line
``chaos: N/N rounds converged``.

    python bench/chaos.py [--rounds 50] [--seed 7] [-- PYTEST ARGS...]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import ChaosRound, ChaosTable  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-chaos-") as tmp:
        table_file = Path(tmp) / "chaos.json"
        started = time.perf_counter()
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
                "tests/test_chaos_e2e.py",
                *args.pytest_args,
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "FLEET_CHAOS_JSON": str(table_file),
                "FLEET_CHAOS_ROUNDS": str(args.rounds),
                "FLEET_CHAOS_SEED": str(args.seed),
            },
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        if not table_file.is_file():
            print(proc.stdout[-5000:], proc.stderr[-3000:], sep="\n")
            print(f"chaos: 0/{args.rounds} rounds converged (the suite did not run)")
            return 1
        data = json.loads(table_file.read_text())
    table = ChaosTable(data["seed"], [], data.get("rollout_seconds", 0.0))
    for row in data["rounds"]:
        row.pop("converged", None)
        table.rounds.append(ChaosRound(**row))
    lines = table.render()
    for line in lines[:-1]:
        print(line)
    seen = collections.Counter(r.fault for r in table.rounds)
    print(f"faults drawn: {', '.join(f'{fault} x{n}' for fault, n in sorted(seen.items()))}")
    print(f"wall time: {seconds:.0f}s for {len(table.rounds)} rounds")
    print(lines[-1])
    return 0 if all(r.converged for r in table.rounds) else 1


if __name__ == "__main__":
    sys.exit(main())

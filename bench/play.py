"""bench/play: the shipped Ansible-vocabulary playbook (``playbooks/prepare.yml``), run by
``fleet play`` and by ``ansible-playbook`` on the same 8 lab hosts, side by side.

Starts (or reuses) an 8-host lab named ``fleet-bench``. Each round, alternating the tools
so that machine noise hits both alike, runs the playbook twice per tool into a fresh
directory of its own (``data_root``): a first run (everything to do) and a second (nothing
to do). It checks that both tools left the same recap, then prints the wall times, their
medians and, as its last line, one JSON object with ``fleet_over_ansible`` for each (the
target: at most 0.5).

    .venv/bin/python bench/play.py [--rounds 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from fleet.lab import nodes as lab

HOSTS = 8
PLAYBOOK = Path(__file__).resolve().parents[1] / "playbooks" / "prepare.yml"
RECAP = re.compile(r"^(\S+)\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return seconds, proc.stdout


def fleet_recap(stdout: str) -> dict[str, tuple[int, ...]]:
    recap: dict[str, Any] = json.loads(stdout)["recap"]
    keys = ("ok", "changed", "unreachable", "failed")
    return {host: tuple(counts[k] for k in keys) for host, counts in recap.items()}


def ansible_recap(stdout: str) -> dict[str, tuple[int, ...]]:
    return {m[1]: tuple(int(x) for x in m.groups()[1:]) for m in RECAP.finditer(stdout)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the bench lab running")
    args = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "fleet-bench-play"
    work.mkdir(parents=True, exist_ok=True)
    inventory = work / "lab.yml"
    started = lab.up(HOSTS, "mixed", name="fleet-bench", inventory=inventory)
    bin_dir = Path(sys.executable).parent
    fleet = str(bin_dir / "fleet")
    ansible = shutil.which("ansible-playbook", path=str(bin_dir)) or shutil.which(
        "ansible-playbook"
    )
    if ansible is None:
        raise SystemExit("ansible-playbook is not installed: pip install ansible-core")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    python = json.dumps({"ansible_python_interpreter": "/usr/bin/python3"})
    times: dict[str, list[float]] = {
        key: [] for key in ("fleet first", "fleet second", "ansible first", "ansible second")
    }
    base = f"/tmp/fleet-bench-play-{uuid.uuid4().hex[:8]}"
    try:
        for round_index in range(args.rounds):
            order = ("fleet", "ansible") if round_index % 2 == 0 else ("ansible", "fleet")
            recaps: dict[str, list[dict[str, tuple[int, ...]]]] = {}
            for tool in order:
                root = f"data_root={base}/{tool}-{round_index}"
                for run in ("first", "second"):
                    if tool == "fleet":
                        argv = [fleet, "play", str(PLAYBOOK), "-i", str(inventory), "-e", root]
                        seconds, out = timed([*argv, "--json"], env)
                        recap = fleet_recap(out)
                    else:
                        argv = [ansible, "-i", str(inventory), str(PLAYBOOK), "-e", root]
                        seconds, out = timed([*argv, "-e", python], env)
                        recap = ansible_recap(out)
                    times[f"{tool} {run}"].append(seconds)
                    recaps.setdefault(tool, []).append(recap)
            if recaps["fleet"] != recaps["ansible"]:
                raise SystemExit(f"the tools' recaps differ: {recaps}")
    finally:
        for host in started.hosts:
            subprocess.run(
                ["docker", "exec", host.container, "rm", "-rf", base],
                capture_output=True,
                check=False,
            )
        if not args.keep:
            lab.down(name="fleet-bench", inventory=inventory)
    medians = {key: statistics.median(values) for key, values in times.items()}
    print(f"playbooks/prepare.yml on {HOSTS} lab hosts, {args.rounds} rounds (median seconds)")
    print(f"{'run':<8} {'fleet':>8} {'ansible':>8} {'fleet/ansible':>14}")
    result: dict[str, Any] = {"hosts": HOSTS, "rounds": args.rounds, "same_recap": True}
    for run in ("first", "second"):
        ratio = medians[f"fleet {run}"] / medians[f"ansible {run}"]
        print(
            f"{run:<8} {medians[f'fleet {run}']:>8.2f} {medians[f'ansible {run}']:>8.2f} "
            f"{ratio:>14.2f}"
        )
        result[f"fleet_over_ansible_{run}"] = round(ratio, 3)
        result[f"seconds_{run}"] = {
            "fleet": round(medians[f"fleet {run}"], 2),
            "ansible": round(medians[f"ansible {run}"], 2),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

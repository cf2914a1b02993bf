"""bench/fanout: fleet's fan-out against Ansible's on the same lab hosts, side by side.

Starts (or reuses) an 8-host lab named ``fleet-bench``, then times, alternating runs so
that machine noise hits both alike:

- ``fleet exec all -- docker ps`` and ``fleet facts all`` on 8 hosts,
- ``ansible all -m raw -a 'docker ps' --forks 8`` on the same inventory,
- ``fleet exec`` on 1 host.

Prints a table, and as its last line one JSON object with ``fleet_over_ansible`` (target
at most 0.7) and ``hosts8_over_hosts1`` (target at most 1.5).

    .venv/bin/python bench/fanout.py [--rounds 5] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fleet.lab import nodes as lab

HOSTS = 8


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the bench lab running")
    args = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "fleet-bench-fanout"
    work.mkdir(parents=True, exist_ok=True)
    inventory = work / "lab.yml"
    lab.up(HOSTS, "mixed", name="fleet-bench", inventory=inventory)
    one = work / "one.yml"
    bin_dir = Path(sys.executable).parent
    fleet = (
        [str(bin_dir / "fleet")]
        if (bin_dir / "fleet").exists()
        else [sys.executable, "-m", "fleet"]
    )
    ansible = shutil.which("ansible", path=str(bin_dir)) or shutil.which("ansible")
    if ansible is None:
        raise SystemExit("ansible is not installed: pip install ansible-core")
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_STDOUT_CALLBACK="minimal")
    one.write_text(inventory.read_text())
    commands = {
        "fleet exec (8)": [
            *fleet,
            "exec",
            "all",
            "-i",
            str(inventory),
            "--json",
            "--",
            "docker",
            "ps",
        ],
        "fleet facts (8)": [*fleet, "facts", "all", "-i", str(inventory), "--json"],
        "ansible raw (8)": [
            ansible,
            "all",
            "-i",
            str(inventory),
            "-m",
            "raw",
            "-a",
            "docker ps",
            "--forks",
            "8",
        ],
        "fleet exec (1)": [
            *fleet,
            "exec",
            "lab1",
            "-i",
            str(inventory),
            "--json",
            "--",
            "docker",
            "ps",
        ],
    }
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for argv in commands.values():  # warm-up: caches, first connections
        timed(argv, env)
    for _ in range(args.rounds):
        for name, argv in commands.items():
            samples[name].append(timed(argv, env))
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"{'command':<18} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, values in samples.items():
        print(f"{name:<18} {median[name]:>9.3f} {min(values):>7.3f} {max(values):>7.3f}")
    figures = {
        "hosts": HOSTS,
        "rounds": args.rounds,
        "fleet_over_ansible": round(median["fleet exec (8)"] / median["ansible raw (8)"], 3),
        "facts_over_ansible": round(median["fleet facts (8)"] / median["ansible raw (8)"], 3),
        "hosts8_over_hosts1": round(median["fleet exec (8)"] / median["fleet exec (1)"], 3),
    }
    if not args.keep:
        lab.down(name="fleet-bench", inventory=inventory)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

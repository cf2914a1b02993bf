"""bench/scale: fleet's fan-out at 100 to 1,000 hosts, against ansible-core's and pyinfra's.

Starts a light lab (``fleet.lab.light``: N SSH hosts, one port each, an engine stand-in)
per size, then times, alternating the tools so that machine noise hits all alike:

- ``fleet exec all -- true`` (``--forks F``), cold (no shared connection open: paramiko)
  and warm (after the audits below, over the connections they keep),
- ``fleet facts all`` and ``fleet ps all``, cold as exec (each prints a table of every host),
- ``fleet deploy all IMAGE --check``: a deploy's control path up to where it would act (each
  host's image store, framework and lock read from the engine stand-in; nothing shipped),
  with a version of the demo framework the bench builds (``tests.framework``),
- ``ansible all -m raw -a true --forks F`` on the same inventory,
- ``fleet audit all`` (a read-only command; every host's engine stand-in reports a running
  framework that this controller never built: each host is drift), with the default
  client (the system's ssh) cold, then warm (its shared connections kept
  from the run before), and with paramiko;
- ``fleet top -n 1`` and ``-n 6`` (a refresh's cost: the difference over five refreshes,
  the light hosts being GPU servers of 8 GPUs with the lab's nvidia-smi), at sizes up to
  ``--top-up-to``.

For each it prints the wall time, the controller's CPU per host (the tool's process and
everything it started, OpenSSH's daemonized masters included: a cgroup of its own), its
peak RSS, and the hosts' sshd CPU per host, and beside the wall time
the machine's floor: both sides' CPU over its cores; then how many characters audit's and
exec's plain output spends besides the hosts' own rows. The last line is one JSON object.
pyinfra (``pyinfra INVENTORY exec -- true --parallel F``) runs from a virtualenv of its
own that the bench makes once (``~/.cache/fleet/bench/pyinfra``), with the same hosts,
key and pinned host keys.

    .venv/bin/python bench/scale.py [--hosts 100,500] [--forks 100] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet.lab import light  # noqa: E402
from fleet.lab import nodes as lab  # noqa: E402
from tests.framework import FrameworkProject  # noqa: E402

BIN = Path(sys.executable).parent


def sshd_cpu(container: Any) -> float:
    """CPU seconds the light lab's sshd processes have used: their container's cgroup,
    read on this machine (cgroup v1's cpuacct, or v2's cpu.stat)."""
    root = Path("/sys/fs/cgroup")
    for path, scale in (
        (root / "cpuacct" / "docker" / container.id / "cpuacct.usage", 1e9),
        (root / "system.slice" / f"docker-{container.id}.scope" / "cpu.stat", 1e6),
        (root / "docker" / container.id / "cpu.stat", 1e6),
    ):
        if path.exists():
            text = path.read_text()
            if path.name == "cpuacct.usage":
                return int(text) / scale
            for line in text.splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / scale
    raise SystemExit(f"cannot find the cgroup of {container.name} under {root}")


class Accounted:
    """A cgroup of its own for the tool's process and everything it starts, daemons
    included (OpenSSH's shared-connection masters leave the process tree, not the cgroup):
    its CPU is the controller's whole cost of the run."""

    def __init__(self, name: str) -> None:
        v1 = Path("/sys/fs/cgroup/cpuacct")
        self.v1 = v1.is_dir()
        self.path = (v1 if self.v1 else Path("/sys/fs/cgroup")) / name
        self.path.mkdir(exist_ok=True)

    def enter(self) -> None:
        """Move the calling process in (run in the child before it execs)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def cpu(self) -> float:
        if self.v1:
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        for line in (self.path / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
        raise SystemExit(f"no usage_usec in {self.path}/cpu.stat")


def measured(
    argv: list[str], container: Any, env: dict[str, str], group: Accounted
) -> dict[str, float]:
    """Wall seconds, the controller's CPU seconds (the tool and all it started, in its
    cgroup), the tool's peak RSS MiB, and the sshd processes' CPU seconds."""
    sshd_before, cpu_before = sshd_cpu(container), group.cpu()
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=group.enter,  # noqa: PLW1509 - only writes its own pid to a file
    )
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    sshd, cpu = sshd_cpu(container) - sshd_before, group.cpu() - cpu_before
    # audit exits 2 (every host drifted: no engine); ansible 4 when some host timed out,
    # which is part of what is measured (the exit is printed beside the figures).
    if proc.returncode not in (0, 2, 3, 4):
        raise SystemExit(f"{' '.join(argv[:3])} failed ({proc.returncode}):\n{errors[-2000:]}")
    return {
        "wall": wall,
        "cpu": cpu,
        "rss_mib": usage.ru_maxrss / 1024,
        "sshd": sshd,
        "exit": float(proc.returncode),
    }


PYINFRA_VERSION = "3.10.0"


def pyinfra_bin() -> Path:
    """pyinfra's command, installed once into a virtualenv of the bench's own (its
    dependencies, gevent among them, stay out of fleet's)."""
    home = Path.home() / ".cache" / "fleet" / "bench" / "pyinfra"
    tool = home / "bin" / "pyinfra"
    if not tool.exists():
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
        pip = [str(home / "bin" / "pip"), "install", "-q", f"pyinfra=={PYINFRA_VERSION}"]
        subprocess.run(pip, check=True)
    return tool


def pyinfra_inventory(inventory: Path) -> Path:
    """The light lab's hosts as a pyinfra inventory (a Python file), host keys pinned."""
    document = yaml.safe_load(inventory.read_text())
    group = document["all"]["children"]["light"]
    shared = group["vars"]
    hosts = [
        (
            name,
            {
                "ssh_hostname": values["ansible_host"],
                "ssh_port": values["ansible_port"],
                "ssh_user": shared["ansible_user"],
                "ssh_key": shared["ansible_ssh_private_key_file"],
                "ssh_known_hosts_file": shared["fleet_known_hosts"],
                "ssh_strict_host_key_checking": "yes",
            },
        )
        for name, values in group["hosts"].items()
    ]
    path = inventory.with_name("pyinfra_inventory.py")
    path.write_text(f"hosts = {hosts!r}\n")
    return path


def plain(fleet: list[str], common: list[str]) -> list[tuple[str, list[str]]]:
    """The commands whose plain output is measured for what it prints besides host rows."""
    return [
        ("audit", [*fleet, "audit", "all", *common]),
        ("exec", [*fleet, "exec", "all", *common, "--", "true"]),
    ]


def non_row_characters(argv: list[str], inventory: Path) -> int:
    """What a command prints (stdout and stderr, piped) on lines that are not one host's
    own: a line starting with a host's name (after exec's ``--- ``) is a row."""
    document = yaml.safe_load(inventory.read_text())
    hosts = set(document["all"]["children"]["light"]["hosts"])
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    count = 0
    for line in (done.stdout + done.stderr).splitlines():
        first = line.removeprefix("--- ").split(" ", 1)[0].rstrip(":")
        if first not in hosts:
            count += len(line) + 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="100,500", help="sizes, comma separated")
    parser.add_argument("--forks", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--top-up-to",
        type=int,
        default=100,
        metavar="N",
        help="measure fleet top at sizes up to N hosts (its views read every host's GPUs "
        "through the lab's nvidia-smi: six of them at 1,000 hosts take this machine ~12 min)",
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_FORKS": str(args.forks)}
    client = lab.engine_client()
    group = Accounted("fleet-bench-scale")
    summary: dict[str, Any] = {"cores": cores, "forks": args.forks, "sizes": {}}
    pyinfra = pyinfra_bin()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-scale-"))
    project = FrameworkProject.create(work / "cauchy", f"fleet-bench-scale-{uuid.uuid4().hex[:6]}")
    try:
        image = f"{project.repository}:{project.commit_and_build('bench')}"
        for size in (int(n) for n in args.hosts.split(",")):
            summary["sizes"][str(size)] = one_size(size, image, args, env, client, group, pyinfra)
    finally:
        project.remove_images()
        shutil.rmtree(work, ignore_errors=True)
    light.down(name="fleet-bench-light")
    print(json.dumps(summary))
    return 0


def one_size(
    size: int,
    image: str,
    args: argparse.Namespace,
    env: dict[str, str],
    client: Any,
    group: Accounted,
    pyinfra: Path,
) -> dict[str, Any]:
    """Every tool at one size, side by side; the size's figures (printed, and returned)."""
    inventory = light.up(size, name="fleet-bench-light")
    container = client.containers.get(light.container_name("fleet-bench-light"))
    fleet = [str(BIN / "fleet")]
    common = ["-i", str(inventory), "--forks", str(args.forks), "--retry-file", "/dev/null"]
    audit = [*fleet, "audit", "all", *common, "--json"]
    tools = {
        # No shared connection open: paramiko's handshake (exec opens none).
        "fleet exec": [*fleet, "exec", "all", *common, "--", "true"],
        "ansible raw": [
            *(str(BIN / "ansible"), "all", "-i", str(inventory), "-m", "raw"),
            *("-a", "true", "--forks", str(args.forks)),
        ],
        "pyinfra exec": [
            *(str(pyinfra), str(pyinfra_inventory(inventory)), "exec", "-y"),
            *("--parallel", str(args.forks), "--", "true"),
        ],
        # Read-only commands with a table each, cold as exec is (paramiko's handshakes).
        "fleet facts": [*fleet, "facts", "all", *common],
        "fleet ps": [*fleet, "ps", "all", *common],
        # A deploy's control path, as cold: every host read, nothing shipped or started.
        "deploy check": [*fleet, "deploy", "all", image, *common, "--check"],
        # The default client (the system's ssh) cold (no shared connection yet), then
        # warm (right after); paramiko, which keeps nothing between runs.
        "audit pmk": ["env", "FLEET_SSH_CLIENT=paramiko", *audit],
        "audit dflt": audit,
        "audit dflt 2": audit,
        # Over the shared connections audit opened: no handshake.
        "fleet exec 2": [*fleet, "exec", "all", *common, "--", "true"],
    }
    if size <= args.top_up_to:
        # fleet top: one view, then six over the same connections (a refresh's cost is
        # the difference, over five refreshes).
        tools["top 1"] = [*fleet, "top", "all", *common[:4], "-n", "1"]
        tools["top 6"] = [*fleet, "top", "all", *common[:4], "-n", "6", "--interval", "0.5"]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in tools}
    for _ in range(args.rounds):
        for name, argv in tools.items():
            if name in ("fleet exec", "audit dflt"):
                # Cold: no shared connection left from an earlier run.
                subprocess.run(["pkill", "-f", r"\[mux\]"], check=False)
                time.sleep(1)
            runs[name].append(measured(argv, container, env, group))
    return reported(size, args.forks, runs, inventory, fleet, common)


def reported(
    size: int,
    forks: int,
    runs: dict[str, list[dict[str, float]]],
    inventory: Path,
    fleet: list[str],
    common: list[str],
) -> dict[str, Any]:
    """One size's figures printed as a table and the target lines; returned for the JSON."""
    cores = os.cpu_count() or 1
    print(f"\n{size} hosts, forks {forks}, {cores} cores")
    print(
        f"{'':12} {'wall s':>8} {'floor s':>8} {'ctl ms/host':>12} {'sshd ms/host':>13} {'RSS MiB':>8}"
        f" {'exit':>5}"
    )
    figures: dict[str, dict[str, float]] = {}
    for name, results in runs.items():
        median = {k: statistics.median(r[k] for r in results) for k in results[0]}
        floor = (median["cpu"] + median["sshd"]) / cores
        figures[name] = {**median, "floor": floor}
        print(
            f"{name:12} {median['wall']:8.1f} {floor:8.1f} {median['cpu'] / size * 1000:12.1f}"
            f" {median['sshd'] / size * 1000:13.1f} {median['rss_mib']:8.0f}"
            f" {int(median['exit']):5d}"
        )
    ratio = figures["fleet exec"]["wall"] / figures["ansible raw"]["wall"]
    print(f"fleet exec / ansible raw: {ratio:.2f} cold (target at 1,000 hosts: 0.4)")
    refresh = None
    print(
        "read-only commands, controller CPU per host: "
        + ", ".join(
            f"{name} {figures[key]['cpu'] / size * 1000:.1f} ms"
            for name, key in (
                ("exec", "fleet exec"),
                ("facts", "fleet facts"),
                ("ps", "fleet ps"),
                ("deploy --check", "deploy check"),
                ("audit", "audit dflt"),
                ("audit again", "audit dflt 2"),
            )
        )
        + " (target 20)"
    )
    if "top 6" in figures:
        refresh = round((figures["top 6"]["cpu"] - figures["top 1"]["cpu"]) / 5 / size * 1000, 1)
        print(f"fleet top: a refresh costs {refresh} ms of controller CPU per host (target 20)")
    versus = figures["fleet exec"]["wall"] / figures["pyinfra exec"]["wall"]
    warm = figures["fleet exec 2"]["wall"] / figures["pyinfra exec"]["wall"]
    print(
        f"fleet exec / pyinfra exec: {versus:.2f} cold, {warm:.2f} warm (over the connections "
        "audit kept; target at 1,000 hosts: 0.7)"
    )
    first, second = figures["audit dflt"], figures["audit dflt 2"]
    print(
        f"a second audit within 5 minutes: {second['wall'] / first['wall']:.2f} of the first's "
        f"wall, {second['cpu'] / first['cpu']:.2f} of its controller CPU (target 0.5; the hosts' "
        f"side, {second['sshd'] / size * 1000:.0f} ms per host both times, shares these cores)"
    )
    folded = {name: non_row_characters(argv, inventory) for name, argv in plain(fleet, common)}
    print(
        "output besides the hosts' rows: "
        + ", ".join(f"{name} {count} characters" for name, count in folded.items())
        + " (target at 500 hosts: 600)"
    )
    return {
        "fleet_exec_over_ansible": round(ratio, 3),
        "fleet_exec_over_pyinfra": round(versus, 3),
        **{
            f"{name.replace(' ', '_')}_{key}": round(value, 3)
            for name, values in figures.items()
            for key, value in values.items()
        },
        "fleet_exec_warm_over_pyinfra": round(warm, 3),
        "fleet_exec_ctl_ms_per_host": round(figures["fleet exec"]["cpu"] / size * 1000, 1),
        "fleet_exec_warm_ctl_ms_per_host": round(figures["fleet exec 2"]["cpu"] / size * 1000, 1),
        "non_row_characters": folded,
        "fleet_audit_ctl_ms_per_host": round(figures["audit dflt"]["cpu"] / size * 1000, 1),
        "fleet_facts_ctl_ms_per_host": round(figures["fleet facts"]["cpu"] / size * 1000, 1),
        "fleet_ps_ctl_ms_per_host": round(figures["fleet ps"]["cpu"] / size * 1000, 1),
        "deploy_check_ctl_ms_per_host": round(figures["deploy check"]["cpu"] / size * 1000, 1),
        "top_refresh_ctl_ms_per_host": refresh,
        "second_audit_over_first": round(second["wall"] / first["wall"], 3),
        "second_audit_cpu_over_first": round(second["cpu"] / first["cpu"], 3),
    }


if __name__ == "__main__":
    sys.exit(main())

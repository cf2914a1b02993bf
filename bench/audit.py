"""bench/audit: ``fleet audit all --json`` against its nearest Ansible equivalent, side by side.

Starts (or reuses) an 8-host lab named ``fleet-bench-audit`` (as bench/fanout.py starts
``fleet-bench``, with a name of its own so the two never take each other's hosts), builds a
version of the demo framework (``tests.framework.FrameworkProject``, its own repository)
and deploys it to every host, so that there is a framework to audit (``--no-deploy``
audits hosts without one). Then times, alternating runs so that machine noise hits both
alike:

- ``fleet audit all --json`` on 8 hosts (one round trip per host, then the comparison with
  the controller's builds and each host's run command),
- ``ansible all -m raw --forks 8`` on the same inventory, three ways:
  ``ps+inspect``: ``docker ps --format ...; docker inspect ...`` of the framework's
  containers (less than fleet learns: no images, lock, history or store); ``CLI script``:
  ``fleet.ops.containers.SCRIPT`` as the docker CLI runs it (the same facts); ``same script``:
  the script exactly as fleet runs it, with its python3 fast path (the same remote work:
  what is left is the tools' own cost),
- ``fleet audit lab1 --json`` on 1 host.

Both tools keep their SSH connections between runs, so a timed run pays no handshake:
Ansible through OpenSSH's ``ControlPersist=60s`` (its default), fleet audit through the
same (its OpenSSH client transport, ``fleet.ssh.openssh``); the warm-up run opens them and
each tool runs again well within 60 s. fleet's own modules are byte-compiled first, as
pip does on install (ansible's are): this machine sets ``PYTHONDONTWRITEBYTECODE=1``,
which would leave an editable checkout compiling every module on every run.

Prints a table, and as its last line one JSON object with ``fleet_over_ansible`` (against
``ps+inspect``, the equivalent the issue names; target at most 0.5), the ratios against
the two scripts, and ``hosts8_over_hosts1``.

    python bench/audit.py [--rounds 5] [--keep] [--no-deploy]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet.lab import nodes as lab  # noqa: E402
from fleet.ops import containers  # noqa: E402
from tests.framework import FrameworkProject  # noqa: E402

HOSTS = 8
# Its own lab: bench/fanout.py takes "fleet-bench" down when it ends, whoever else uses it.
LAB_NAME = "fleet-bench-audit"
# 'fleet audit' until fleet.cli lists it: the same entry point, with the command added.
_FLEET = (
    "import sys, fleet.cli as c\n"
    "if 'audit' not in c._COMMAND_MODULES: c._COMMAND_MODULES = (*c._COMMAND_MODULES, 'audit')\n"
    "sys.exit(c.main(sys.argv[1:]))"
)


def timed(argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode not in ok:
        raise SystemExit(
            f"{' '.join(argv[:6])} ... failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return seconds


def fleet_command() -> list[str]:
    return [sys.executable, "-c", _FLEET]


def deploy(inventory: Path, work: Path, env: dict[str, str]) -> tuple[FrameworkProject, str]:
    """Build one version of the demo framework and deploy it to every host."""
    # A lab kept from an earlier run still runs that run's framework under the same name.
    clean = "docker ps -aq --filter label=io.fleet.framework | xargs -r docker rm -f"
    subprocess.run(
        [*fleet_command(), "exec", "all", "-i", str(inventory), "--shell", "--", clean],
        capture_output=True,
        env=env,
        check=True,
    )
    repository = f"fleet-bench-audit-{uuid.uuid4().hex[:6]}"
    project = FrameworkProject.create(Path(tempfile.mkdtemp(dir=work)) / "cauchy", repository)
    tag = project.commit_and_build("bench")
    started = time.perf_counter()
    proc = subprocess.run(
        [
            *fleet_command(),
            "deploy",
            "all",
            tag,
            "-i",
            str(inventory),
            "--project",
            str(project.root),
            "--json",
            "--retry-file",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        try:
            hosts = json.loads(proc.stdout)["hosts"]
        except (ValueError, KeyError):
            raise SystemExit(f"deploy failed ({proc.returncode}):\n{proc.stderr[-3000:]}") from None
        failed = {h: r["reason"] for h, r in hosts.items() if r["outcome"] not in ("ok", "changed")}
        print(f"deploy failed on {len(failed)} hosts (audited as they are): {failed}")
    print(f"deployed {repository}:{tag} to {HOSTS} hosts in {time.perf_counter() - started:.1f}s")
    return project, tag


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the bench lab running")
    parser.add_argument(
        "--no-deploy", action="store_true", help="audit hosts without any framework"
    )
    args = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "fleet-bench-audit"
    work.mkdir(parents=True, exist_ok=True)
    inventory = work / "lab.yml"
    lab.up(HOSTS, "mixed", name=LAB_NAME, inventory=inventory)
    # As installed by pip (see the module docstring); the stale ones are simply recompiled.
    compileall.compile_dir(ROOT / "fleet", quiet=1)
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or shutil.which(
        "ansible"
    )
    if ansible is None:
        raise SystemExit("ansible is not installed: pip install ansible-core")
    env = dict(
        os.environ,
        ANSIBLE_HOST_KEY_CHECKING="True",
        ANSIBLE_STDOUT_CALLBACK="minimal",
        PYTHONPATH=str(ROOT),
    )
    project: FrameworkProject | None = None
    tag = None
    if args.no_deploy:
        repository = "fleet-bench-audit-none"
    else:
        project, tag = deploy(inventory, work, env)
        repository = project.repository

    def audit(pattern: str) -> list[str]:
        return [
            *fleet_command(),
            "audit",
            pattern,
            "--repository",
            repository,
            "-i",
            str(inventory),
            "--json",
            "--retry-file",
            "/dev/null",
        ]

    def ansible_raw(command: str) -> tuple[list[str], tuple[int, ...]]:
        argv = [ansible, "all", "-i", str(inventory), "-m", "raw", "-a", command]
        return [*argv, "--forks", "8"], (0,)

    # Shell commands as Ansible runs them: {% raw %} keeps Jinja off Docker's templates.
    label = shlex.quote(f"label=io.fleet.framework={repository}")
    ps_inspect = (
        f"docker ps -a --filter {label} --format "
        "'{% raw %}{{.Names}} {{.Image}} {{.Status}}{% endraw %}'; "
        f"docker inspect $(docker ps -aq --filter {label})"
    )
    script = "sh -c {% raw %}" + shlex.quote(containers.SCRIPT) + "{% endraw %} "
    script += shlex.join(["fleet-framework", repository, "1"])
    same = script + " {% raw %}" + shlex.quote(containers.FAST_GATHER) + "{% endraw %}"
    commands = {
        "fleet audit (8)": (audit("all"), (0, 2)),
        # Without any framework 'docker inspect' of nothing fails (exit 2 from Ansible).
        "ansible ps+inspect (8)": (ansible_raw(ps_inspect)[0], (0, 2) if args.no_deploy else (0,)),
        "ansible CLI script (8)": ansible_raw(script),
        "ansible same script (8)": ansible_raw(same),
        "fleet audit (1)": (audit("lab1"), (0, 2)),
    }
    try:
        proc = subprocess.run(
            commands["fleet audit (8)"][0], capture_output=True, text=True, env=env, check=False
        )
        if not proc.stdout.strip():
            raise SystemExit(f"fleet audit printed nothing ({proc.returncode}):\n{proc.stderr}")
        document = json.loads(proc.stdout)
        statuses = {h: r["details"]["status"] for h, r in document["hosts"].items()}
        versions = document["audit"]["versions"]
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for argv, ok in commands.values():  # warm-up: caches, first connections
            timed(argv, env, ok)
        for _ in range(args.rounds):
            for name, (argv, ok) in commands.items():
                samples[name].append(timed(argv, env, ok))
    finally:
        if project is not None:
            project.remove_images()
        if not args.keep:
            lab.down(name=LAB_NAME, inventory=inventory)
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"audited: {versions} ({sum(s == 'ok' for s in statuses.values())}/{HOSTS} ok)")
    print(f"{'command':<24} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, values in samples.items():
        print(f"{name:<24} {median[name]:>9.3f} {min(values):>7.3f} {max(values):>7.3f}")
    fleet8 = median["fleet audit (8)"]
    figures = {
        "hosts": HOSTS,
        "rounds": args.rounds,
        "framework": tag,
        "fleet_over_ansible": round(fleet8 / median["ansible ps+inspect (8)"], 3),
        "fleet_over_ansible_cli_script": round(fleet8 / median["ansible CLI script (8)"], 3),
        "fleet_over_ansible_same_script": round(fleet8 / median["ansible same script (8)"], 3),
        "hosts8_over_hosts1": round(fleet8 / median["fleet audit (1)"], 3),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

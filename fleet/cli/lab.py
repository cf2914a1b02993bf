"""``fleet lab up | down | status``: the local lab of real hosts."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fleet import report
from fleet.lab import light
from fleet.lab import nodes as lab
from fleet.report.untrusted import safe_text

DEFAULT_INVENTORY = Path("inventory") / "lab.yml"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lab", help="start, stop or show the local lab of real SSH + Docker hosts"
    )
    actions = parser.add_subparsers(dest="lab_action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start N lab hosts (sshd + own Docker engine + cron each)")
    up.add_argument("--hosts", type=int, default=3, metavar="N", help="number of hosts (default 3)")
    up.add_argument(
        "--engine",
        choices=("classic", "containerd", "mixed", lab.BARE),
        default="mixed",
        help="image store of the hosts' engines; mixed alternates (default); bare: no engine",
    )
    up.add_argument(
        "--bare",
        dest="engine",
        action="store_const",
        const=lab.BARE,
        help="bare hosts, as a server leaves a reinstall: sshd and Debian's base system, no "
        "engine, no NVIDIA toolkit, no cron (fleet provision installs them); the lab serves "
        "a signed apt repository holding a stand-in NVIDIA Container Toolkit",
    )
    up.add_argument(
        "--gpus",
        type=_gpus,
        default=1,
        metavar="N|HOST=N,...",
        help="simulated GPUs per host (an nvidia runtime, nvidia-smi, GPU state): N for every "
        "host, or per host, e.g. lab1=2,lab2=0 (unnamed hosts: none); default 1",
    )
    up.add_argument(
        "--light",
        type=int,
        metavar="N",
        help="instead: a light lab of N SSH hosts (one port each, several sshd in one "
        "container, no engine) for measuring fan-out at 100-1,000 hosts; its inventory is "
        "written to --write-inventory's directory as light.yml",
    )
    up.add_argument(
        "--users",
        action="store_true",
        help=f"also give every host a sudoer whose sudo asks for a password "
        f"({lab.SUDO_USER}) and a user in the docker group ({lab.DOCKER_USER}), each with "
        "its own inventory beside --write-inventory's",
    )
    _common(up)
    up.set_defaults(handler=_up)
    down = actions.add_parser("down", help="remove the lab's hosts and their volumes")
    _common(down)
    down.set_defaults(handler=_down)
    status = actions.add_parser("status", help="host, address, engine version, image store, state")
    _common(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name",
        default=lab.DEFAULT_LAB,
        help=f"lab name, a prefix of its containers (default {lab.DEFAULT_LAB})",
    )
    parser.add_argument(
        "--write-inventory",
        type=Path,
        default=DEFAULT_INVENTORY,
        metavar="PATH",
        help=f"the lab's inventory file (default {DEFAULT_INVENTORY})",
    )


def _gpus(text: str) -> int | dict[str, int]:
    """``--gpus``: one count, or HOST=N pairs."""
    try:
        if "=" not in text:
            count = int(text)
            if not 0 <= count <= 16:
                raise ValueError
            return count
        pairs = dict(part.split("=", 1) for part in text.split(","))
        counts = {host.strip(): int(n) for host, n in pairs.items()}
        if not all(0 <= n <= 16 for n in counts.values()):
            raise ValueError
        return counts
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give 0 to 16 GPUs, for every host (2) or per host (lab1=2,lab2=0)"
        ) from None


def _up(args: argparse.Namespace) -> int:
    out = report.console()
    if args.light is not None:
        written = light.up(
            args.light,
            name=f"{args.name}-light",
            inventory=Path(args.write_inventory).with_name("light.yml"),
        )
        out.print(safe_text(f"{args.light} light hosts; inventory: {written}"), soft_wrap=True)
        return 0
    lab_ = lab.up(
        args.hosts,
        args.engine,
        name=args.name,
        inventory=args.write_inventory,
        log=lambda line: out.print(safe_text("lab: ", style="dim") + safe_text(line, lines=True)),
        gpus=args.gpus,
        users=args.users,
    )
    out.print(report.lab_table(lab_.hosts))
    _say_overrides(out, lab_.hosts)
    # Paths are printed unwrapped: an operator copies them.
    out.print(
        safe_text(f"inventory: {args.write_inventory}   known_hosts: {lab_.known_hosts}"),
        soft_wrap=True,
    )
    if args.users:
        sudoer = lab.user_inventory(args.write_inventory, lab.SUDO_USER)
        docker_user = lab.user_inventory(args.write_inventory, lab.DOCKER_USER)
        password = lab.become_password_file(args.name)
        for line in (
            f"as {lab.SUDO_USER} (sudo asks for a password): -i {sudoer} "
            f"--become-password-file {password} (or -K)",
            f"as {lab.DOCKER_USER} (docker group only): -i {docker_user}",
        ):
            out.print(safe_text(line), soft_wrap=True)
    return 0


def _down(args: argparse.Namespace) -> int:
    owner = lab.inventory_lab(args.write_inventory)
    removed = lab.down(name=args.name, inventory=args.write_inventory)
    light.down(name=f"{args.name}-light")
    out = report.console()
    out.print(safe_text(f"removed {len(removed)} lab hosts: {', '.join(removed) or '-'}"))
    if owner is not None and owner != args.name:
        out.print(
            safe_text(f"kept {args.write_inventory}: it is the inventory of the lab {owner!r}"),
            soft_wrap=True,
        )
    return 0


def _say_overrides(out: Any, hosts: Any) -> None:
    """What the lab turns off in the run command, and why (fleet_run_overrides)."""
    for host in hosts:
        overrides = lab.run_overrides(host.gpus)
        if "ulimits" in overrides:
            out.print(
                safe_text(
                    f"{host.name}: --ulimit memlock=-1 is dropped (this machine's bounding set "
                    "lacks CAP_SYS_RESOURCE)"
                    + ("; --runtime nvidia too (no GPUs)" if "runtime" in overrides else "")
                )
            )
        elif "runtime" in overrides:
            out.print(safe_text(f"{host.name}: --runtime nvidia is dropped (no GPUs)"))


def _status(args: argparse.Namespace) -> int:
    hosts = lab.status(name=args.name)
    if args.json:
        json.dump([asdict(h) for h in hosts], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        out = report.console(sys.stdout)
        if hosts:
            out.print(report.lab_table(hosts))
            _say_overrides(out, hosts)
        else:
            out.print(safe_text(f"no lab {args.name!r} is running; start one with 'fleet lab up'"))
    return 0

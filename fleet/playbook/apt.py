"""Ansible's ``apt`` module in a fleet playbook: packages present, latest or absent, and
apt's cache updated, with Ansible's arguments, results and check mode. The work is done
on the host by a program of fleet's (``apt.py``): the same apt-get runs Ansible's module
makes, without the ``python3-apt`` bindings it needs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fleet.errors import PlaybookError
from fleet.hostoutput import json_answer
from fleet.hosts.model import Host
from fleet.playbook.schema import Play, Task
from fleet.programs import program
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext

if TYPE_CHECKING:
    from fleet.playbook.run import Player

STATES = ("present", "latest", "absent")
# A Debian package name (policy 5.6.1), with an architecture qualifier.
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?")
# Ansible's default dpkg lock wait, in seconds.
LOCK_TIMEOUT = 60


def packages_of(task: Task, value: Any) -> list[str]:
    """``name``: a list, or a string of comma-separated names (Ansible's list type)."""
    if value is None:
        return []
    names = value if isinstance(value, list) else str(value).split(",")
    found = [str(name).strip() for name in names if str(name).strip()]
    for name in found:
        if "=" in name or "*" in name:
            raise PlaybookError(
                f"{task.where}.apt.name: {name!r}: versions and patterns are not supported",
                line=task.line,
                fix="name the package alone (apt installs its candidate version)",
            )
        if not _PACKAGE.fullmatch(name):
            raise PlaybookError(
                f"{task.where}.apt.name: {name!r} is not a package name", line=task.line
            )
    return found


def _flag(value: Any) -> str:
    return "yes" if value else "no"


def apt(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    """Ansible's apt: ``name``, ``state``, ``update_cache``, ``cache_valid_time``,
    ``install_recommends``, ``purge``, ``autoremove``, ``lock_timeout``."""
    packages = packages_of(task, args.get("name"))
    state = str(args.get("state") or "present")
    if state not in STATES:
        raise PlaybookError(
            f"{task.where}.apt.state: {state!r} is not one of {', '.join(STATES)}",
            line=task.line,
        )
    if not packages and not args.get("update_cache") and not args.get("autoremove"):
        raise PlaybookError(
            f"{task.where}.apt: give name, update_cache or autoremove", line=task.line
        )
    recommends = args.get("install_recommends")
    lock = int(args.get("lock_timeout", LOCK_TIMEOUT))
    options = [
        state,
        _flag(args.get("update_cache")),
        str(int(args.get("cache_valid_time") or 0)),
        "-" if recommends is None else _flag(recommends),
        _flag(args.get("purge")),
        _flag(args.get("autoremove")),
    ]

    def body(ctx: HostContext) -> HostResult:
        check = _flag(player.check(task))
        argv = ["python3", "-I", "-c", program("apt.py"), *options, check, str(lock), *packages]
        # apt's download and install of a large package take minutes on a slow mirror.
        ran = ctx.transport.run(argv, check=False, timeout=lock + 1800)
        said = json_answer(ctx.name, "apt", ran.stdout, ran.stderr)
        details = {k: v for k, v in said.items() if k not in ("changed", "failed")}
        if said.get("failed"):
            return ctx.result(Outcome.FAILED, str(said.get("msg")), details=details)
        changed = bool(said.get("changed"))
        verb = {"absent": "removed", "latest": "upgraded"}.get(state, "installed")
        reason = (
            f"{verb} {', '.join(packages)}"
            if changed and packages
            else "cache updated"
            if changed
            else "nothing to change"
        )
        return ctx.result(Outcome.CHANGED if changed else Outcome.OK, reason, details=details)

    return player.runner.run("apt", hosts, body)

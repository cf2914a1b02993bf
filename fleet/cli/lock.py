"""``fleet lock status [PATTERN]`` and ``fleet lock release [PATTERN] [--yes]``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fleet.cli import common
from fleet.errors import UsageError
from fleet.escape import visible
from fleet.ops import lock
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lock",
        help="who holds each host's deploy lock, and releasing a dead run's",
        description="Each host's deploy lock is a lease its run renews: a dead run's lapses "
        "within a minute by itself. 'status' shows who holds it (user@controller, pid, run), "
        "since when and until when (the host's clock); 'release' removes exactly the locks "
        "it shows, after asking (or with --yes), and the hosts' history records it.",
    )
    actions = parser.add_subparsers(dest="lock_action", metavar="status|release")
    actions.required = True
    status = actions.add_parser("status", help="each host's deploy lock")
    common.add_host_options(status)
    status.set_defaults(handler=_status, **{common.SHARED_CONNECTIONS: common.REUSES_SHARED})
    release = actions.add_parser("release", help="remove the deploy locks shown, after asking")
    common.add_host_options(release)
    release.add_argument("--yes", "-y", action="store_true", help="release without asking")
    release.set_defaults(handler=_release)


def _status(args: argparse.Namespace) -> int:
    return common.run_on_hosts(args, "lock status", lock.status)


def _release(args: argparse.Namespace) -> int:
    _, hosts = common.select_hosts(args)
    runner = common.make_runner(args, None)
    try:
        shown = runner.run("lock status", hosts, lock.status)
    finally:
        runner.close()
    held = {
        row.host: str(row.details["checksum"])
        for row in shown.results
        if row.outcome is Outcome.OK and row.details.get("lock")
    }
    unread = [row for row in shown.results if row.outcome is not Outcome.OK]
    for row in shown.results:
        if row.host in held:
            print(f"{visible(row.host)}: {visible(row.reason)}", file=sys.stderr)
    for row in unread:
        print(f"{visible(row.host)}: cannot tell: {visible(row.reason)}", file=sys.stderr)
    if held and not args.yes and not _confirmed(len(held)):
        print("nothing released", file=sys.stderr)
        return 0
    controller = lock.controller_identity()

    def task(ctx: HostContext) -> HostResult:
        if ctx.name not in held:
            return ctx.result(Outcome.OK, "no lock to release")
        return lock.release(ctx, held[ctx.name], controller)

    def operation(runner: Any, selected: Any) -> FleetResult:
        chosen = [h for h in selected if h.name in held]
        released = runner.run("lock release", chosen, task) if chosen else None
        rows = {r.host: r for r in (released.results if released else ())}
        rows.update({r.host: r for r in unread})
        return FleetResult.of(
            "lock release",
            (
                rows.get(h.name) or HostResult(h.name, Outcome.OK, "no lock to release")
                for h in selected
            ),
            (released.seconds if released else 0.0) + shown.seconds,
        )

    return common.run_fleet(args, operation, title="lock release")


def _confirmed(count: int) -> bool:
    if not sys.stdin.isatty():
        raise UsageError(
            f"fleet lock release would remove {count} lock(s) and cannot ask here (no terminal)",
            fix="check them with 'fleet lock status', then rerun with --yes",
        )
    answer = input(f"release {count} lock(s)? A run still holding one loses it. [y/N] ")
    return answer.strip().lower() in ("y", "yes")

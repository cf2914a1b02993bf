"""``fleet ping``, ``fleet exec`` and ``fleet facts``: the ad-hoc commands on many hosts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fleet import report
from fleet.cli import common
from fleet.errors import UsageError
from fleet.ops import facts as facts_mod
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext


def register(subparsers: Any) -> None:
    # ping checks the hosts' keys: paramiko's refusal names the recorded key and the offered one.
    ping = subparsers.add_parser("ping", help="connect to hosts and run a no-op")
    common.add_host_options(ping)
    ping.set_defaults(handler=_ping)

    exec_ = subparsers.add_parser(
        "exec",
        help="run a command on hosts: fleet exec [PATTERN] -- CMD ARGS...",
        description="Run CMD ARGS... on every selected host (arguments are passed as they "
        "are, quoted; use --shell to have a shell interpret one command string).",
    )
    common.add_host_options(exec_)
    exec_.add_argument(
        "--shell", action="store_true", help="run CMD as one 'sh -c' string (pipes, globs)"
    )
    exec_.set_defaults(
        handler=_exec,
        takes_remote_command=True,
        **{common.SHARED_CONNECTIONS: common.REUSES_SHARED},
    )

    facts = subparsers.add_parser(
        "facts", help="hostname, kernel, engine, image store, runtimes, GPUs, disk, framework"
    )
    common.add_host_options(facts)
    facts.set_defaults(handler=_facts, **{common.SHARED_CONNECTIONS: common.REUSES_SHARED})


def _ping(args: argparse.Namespace) -> int:
    def task(ctx: HostContext) -> HostResult:
        ctx.transport.run(["true"])
        return ctx.result(Outcome.OK, "pong")

    return common.run_on_hosts(args, "ping", task)


def _exec(args: argparse.Namespace) -> int:
    argv: list[str] = list(getattr(args, "remote_command", None) or [])
    if not argv:
        raise UsageError("fleet exec needs a command after '--'", fix="fleet exec all -- docker ps")
    if args.shell:
        if len(argv) != 1:
            raise UsageError(
                "with --shell, give the command as one quoted string",
                fix="fleet exec all --shell -- 'docker ps | wc -l'",
            )
        argv = ["sh", "-c", argv[0]]

    def task(ctx: HostContext) -> HostResult:
        return ctx.run_command(argv)

    def render(result: FleetResult) -> Any:
        # On a terminal the output is passed as it came, as ssh passes it; captured (a
        # file, a pipe, a CI log read later on a terminal) its controls are escaped.
        # --json carries the exact text either way.
        return report.command_output(result, raw=sys.stdout.isatty())

    return common.run_on_hosts(args, "exec", task, render=render, detail_columns=("exit_code",))


def _facts(args: argparse.Namespace) -> int:
    def render(result: FleetResult) -> Any:
        return report.facts_table((r.host, r.details.get("facts")) for r in result.results)

    return common.run_on_hosts(args, "facts", facts_mod.facts_of, render=render)

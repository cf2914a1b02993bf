"""``fleet top``: a live fleet-wide GPU view (which GPUs are free, which hosts run what)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import Any

from fleet import report
from fleet.cli import common
from fleet.errors import UsageError
from fleet.ops import top
from fleet.report import top as top_report
from fleet.runner import NoEvents


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "top",
        help="a live fleet-wide GPU view: GPUs busy of total, memory, utilisation, the "
        "framework's version and health, and the jobs with their age (q quits, s sorts)",
    )
    common.add_host_options(parser)
    parser.add_argument(
        "--interval",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="refresh every SECONDS, over the kept connections (default 3)",
    )
    parser.add_argument(
        "--sort",
        choices=top_report.SORTS,
        default="free",
        help="hosts with the most free GPUs first (default), the most busy, or by name",
    )
    parser.add_argument(
        "--once", action="store_true", help="show one view and exit (what a pipe gets)"
    )
    parser.add_argument(
        "-n",
        "--iterations",
        type=int,
        metavar="N",
        help="show N views, --interval apart, over the same connections, then exit (as top -n)",
    )
    parser.set_defaults(handler=_top)


def _top(args: argparse.Namespace) -> int:
    if args.interval < 0.5:
        raise UsageError(
            f"--interval {args.interval:g}: at least 0.5 seconds", fix="e.g. --interval 3"
        )
    if args.iterations is not None and args.iterations < 1:
        raise UsageError(f"--iterations {args.iterations}: at least 1", fix="e.g. -n 5")
    _, hosts = common.select_hosts(args)
    runner = common.make_runner(args, NoEvents())
    try:

        def fetch() -> list[Any]:
            return list(top.snapshot(runner, hosts, args.timeout).results)

        if args.json:
            result = top.snapshot(runner, hosts, args.timeout)
            json.dump(result.to_json(), sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
            return result.exit_code
        out = report.console(sys.stdout)
        # Views printed one after another: -n N of them, else one (--once, or a pipe).
        if args.iterations is not None or args.once or not (out.is_terminal and sys.stdin.isatty()):
            for index in range(args.iterations or 1):
                if index:
                    time.sleep(args.interval)
                out.print(top_report.top_view(fetch(), args.sort))
            return 0
        with _keys() as read_key, contextlib.suppress(KeyboardInterrupt):
            top_report.watch(out, fetch, read_key, interval=args.interval, sort=args.sort)
        return 0
    finally:
        runner.close()


@contextlib.contextmanager
def _keys() -> Iterator[Any]:
    """Single key presses from the terminal (no Enter, no echo) while the view runs."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read_key(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode("utf-8", "replace") if ready else None

    try:
        yield read_key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

"""``fleet audit``: which framework version each host runs, and which hosts drifted.

    fleet audit [PATTERN] [--expect VERSION|latest] [--history [N]] [--json | --csv]
                [--project DIR | --repository NAME] [host options]

Read-only: one round trip per host, no deploy lock, no history line. Exit codes: 0 every
host as expected, 2 some host drifted, 3 some host unreachable. Hosts are reached through
the system's ssh where it is installed, its connections kept for 5 minutes so that the next
audit needs no handshake (:mod:`fleet.ssh.openssh`; ``fleet_ssh_client: paramiko`` or
``FLEET_SSH_CLIENT=paramiko`` choose paramiko).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from fleet import report
from fleet.cli import common
from fleet.errors import AuditInterrupted, UsageError
from fleet.ops import audit
from fleet.report import audit as audit_report
from fleet.report.untrusted import safe_text, visible
from fleet.runner import Events, NoEvents

DEFAULT_HISTORY = 5
WIDE = 220


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="which framework version each host runs, since when, and which hosts drifted",
        description="Ask every host (one round trip, read-only, no lock) which framework "
        "version it runs: its image's labels (version, commit, branch, build date, dirty), "
        "the container's state, health, start time and restarts, whether its image is the "
        "controller's build of that version, the other versions it holds and its last "
        "history line. A host drifted when it runs no framework, a version the controller "
        "never built or another build of it, a dirty build, a container that differs from "
        "its image's run command (after the host's overrides), or not the --expect version.",
        epilog="Exit codes: 0 every host as expected, 2 some host drifted, "
        "3 some host unreachable, 5 bad options.",
    )
    common.add_host_options(parser)
    parser.add_argument(
        "--expect",
        metavar="VERSION",
        help="the version every host should run: a tag (0.2.7), IMAGE:TAG, or 'latest' "
        "(the newest build on this machine, what 'fleet deploy' deploys by default)",
    )
    parser.add_argument(
        "--history",
        nargs="?",
        const=DEFAULT_HISTORY,
        type=common._positive_int,
        metavar="N",
        help=f"show each host's last N history lines (default N: {DEFAULT_HISTORY})",
    )
    parser.add_argument(
        "--csv", action="store_true", help="print one CSV row per host on stdout, nothing else"
    )
    parser.add_argument(
        "--project",
        default=".",
        metavar="DIR",
        help="framework project, for its repository name (default .)",
    )
    parser.add_argument(
        "--repository",
        metavar="NAME",
        help="the framework image's repository (default: the project's fleet_image.repository)",
    )
    parser.set_defaults(handler=_audit, **{common.SHARED_CONNECTIONS: common.OPENS_SHARED})


def _audit(args: argparse.Namespace) -> int:
    if args.json and args.csv:
        raise UsageError("--json and --csv exclude each other", fix="choose one output format")
    repository = common.repository(args)
    options = audit.AuditOptions(
        repository=repository, history=args.history or 1, timeout=args.timeout
    )
    # The controller's builds are listed on a thread of their own, started first, while
    # the hosts answer (an engine other than the local socket costs docker-py's import).
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="controller")
    controller = pool.submit(
        audit.controller_options,
        repository,
        expect=args.expect,
        history=options.history,
        timeout=options.timeout,
    )
    try:
        result = _run(args, options, controller)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return _print(args, result)


def _run(
    args: argparse.Namespace, options: audit.AuditOptions, controller: Future[audit.AuditOptions]
) -> audit.AuditReport:
    _, hosts = common.select_hosts(args)
    err = report.console()
    live = err.is_terminal and not (args.json or args.csv)
    events: Events = (
        report.LiveReporter([h.name for h in hosts], err, live=True) if live else NoEvents()
    )
    runner = common.make_runner(args, events)
    try:
        with events if isinstance(events, report.LiveReporter) else contextlib.nullcontext():
            try:
                return audit.audit(runner, hosts, options, controller=controller)
            except AuditInterrupted as exc:
                return exc.report
    finally:
        runner.close()


def _print(args: argparse.Namespace, result: audit.AuditReport) -> int:
    err = report.console()
    retry = common.write_retry_file(args, result.result)
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif args.csv:
        writer = csv.DictWriter(
            sys.stdout, fieldnames=audit_report.CSV_COLUMNS, lineterminator="\n"
        )
        writer.writeheader()
        for row in result.rows:
            # A CSV is read with cat and less too: terminal controls in a cell are shown
            # escaped (newlines as well: a cell keeps its row on one line).
            record = audit_report.csv_record(row)
            writer.writerow({key: visible(value) for key, value in record.items()})
    else:
        # Piped, one line per host however wide: the table is for reading and for grep.
        out = report.console(sys.stdout, width=None if sys.stdout.isatty() else WIDE)
        with out.capture() as captured:
            out.print(audit_report.audit_view(result))
            if args.history:
                out.print()
                out.print(audit_report.history_view(result.rows))
        # Table cells are padded to their column's width; lines end at their last word.
        sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
        if retry is not None:
            err.print(safe_text(f"drifted and unreachable hosts: --limit @{retry}"))
    return result.exit_code

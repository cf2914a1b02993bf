"""``fleet play PLAYBOOK``: run a playbook (see :mod:`fleet.playbook.schema`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fleet import report
from fleet.cli import common
from fleet.errors import EXIT_INTERRUPTED, FleetError, Interrupted
from fleet.escape import visible
from fleet.playbook import run as play_mod
from fleet.playbook import schema as playbook_mod
from fleet.report import play as play_report


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "play",
        help="run a playbook: plays of tasks (build, push, provision, deploy, audit, ...)",
        description="Validate PLAYBOOK (nothing runs when it has an error), then run its plays "
        "in order and end with a PLAY RECAP: per host ok/changed/failed/unreachable/skipped "
        "counts and the framework version before -> after.",
    )
    parser.add_argument("playbook", metavar="PLAYBOOK", help="e.g. playbooks/rollout.yml")
    common.add_host_options(parser, pattern=False)
    parser.add_argument(
        "--check", action="store_true", help="report what would change, change nothing"
    )
    parser.add_argument("--diff", action="store_true", help="show file differences")
    parser.add_argument(
        "-t",
        "--tags",
        default="",
        metavar="TAGS",
        help="only tasks with these tags (comma-separated)",
    )
    parser.add_argument(
        "--skip-tags", default="", metavar="TAGS", help="skip tasks with these tags"
    )
    parser.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="KEY=VALUE|@FILE",
        help="extra variables (highest precedence)",
    )
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME|@FILE",
        help="mark variable NAME secret (or load @FILE's variables as secrets): its value "
        "never appears in the output, --json, image labels or host history (quoted, escaped "
        "or line by line neither); a task using it shows no diff and no command line",
    )
    parser.add_argument(
        "--project",
        default=".",
        metavar="DIR",
        help="framework project for build/deploy steps (default .)",
    )
    parser.add_argument("--syntax-check", action="store_true", help="only validate the playbook")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show each host's result: stdout, stderr, rc, msg (-vv: the command too)",
    )
    parser.set_defaults(handler=_play)


def _play(args: argparse.Namespace) -> int:
    book = playbook_mod.load(args.playbook)
    extra = playbook_mod.extra_vars(args.extra_vars)
    secret_names: set[str] = set()
    for item in args.secret:
        if item.startswith("@"):
            loaded = playbook_mod.vars_file(item, secret=True)
            extra.update(loaded)
            secret_names.update(loaded)
        else:
            secret_names.add(item)
    if args.syntax_check:
        print(
            f"playbook: {book.path} ({len(book.plays)} plays, {sum(len(p.every_task()) for p in book.plays)} tasks): ok"
        )
        return 0
    inventory = common.load_inventory(args)
    for warning in inventory.warnings:
        print(f"fleet: warning: {visible(warning, lines=True)}", file=sys.stderr)
    # As in Ansible, extra vars (-e, --secret @FILE) win over the inventory's, connection
    # variables included: a become password can come from a secrets file.
    inventory = inventory.with_vars(extra)
    options = play_mod.PlayOptions(
        check=args.check,
        diff=args.diff,
        tags=frozenset(t for t in args.tags.split(",") if t),
        skip_tags=frozenset(t for t in args.skip_tags.split(",") if t),
        limit=args.limit,
        extra=extra,
        project=args.project,
        secret_names=frozenset(secret_names),
    )
    out = report.console()
    events = play_report.PlayReporter(
        out, verbosity=args.verbose, live=out.is_terminal and not args.json
    )
    runner = common.make_runner(args, events)
    player = play_mod.Player(book, inventory, runner, options, events)
    try:
        player.prepare()  # every pattern resolves before any host is touched
        try:
            run = player.play_all()
        except Interrupted as exc:
            run = player.run
            for row in exc.partial.results:
                run.tallies.setdefault(row.host, play_mod.Tally()).add(row, False)
            run.stopped = "interrupted (Ctrl-C)"
    except FleetError as exc:
        raise player.secrets.error(exc) from None
    finally:
        runner.close()
    if args.json:
        json.dump(player.secrets.redact(run.to_json()), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    out.print(play_report.recap(run))
    return EXIT_INTERRUPTED if run.stopped.startswith("interrupted") else run.exit_code

"""``fleet provision [PATTERN]``: make fresh GPU servers ready (see :mod:`fleet.ops.provision`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from fleet.cli import common
from fleet.escape import visible
from fleet.hosts.model import Host
from fleet.ops.provision.run import BaseImage, ProvisionOptions, provision, resolve_base_images
from fleet.ops.provision.settings import settings_for_hosts
from fleet.results import FleetResult
from fleet.runner import Runner
from fleet.ship.codec import COMPRESSIONS, compression


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "provision",
        help="prepare fresh GPU servers: /data, aicron.sh and its cron entry, engine and GPU "
        "preflight, the base image",
        description="Bring every selected host to the state its fleet_provision settings "
        "describe: the data tree (created, owner and mode fixed; content never touched), "
        "aicron.sh (root's, in /usr/local/lib/fleet; a copy to read in the data root) and its "
        "block in the crontab, the pretrained-weights service answering, "
        "and the base image (layers 1-2). First a preflight: the engine answers, can run "
        "what the run spec asks (nvidia runtime, GPUs, ulimits), and there is enough free "
        "disk; a data root that others than its owner may write is refused unless "
        "fleet_provision.allow_writable_data_root; a host that fails it is left alone. Only "
        "what is missing is changed: a second run reports every host ok.",
    )
    common.add_host_options(parser)
    parser.add_argument(
        "--check", action="store_true", help="report what would change, change nothing"
    )
    parser.add_argument(
        "--diff",
        action="store_true",
        help="show the differences of aicron.sh and the crontab (unified diff)",
    )
    parser.add_argument(
        "--skip-base", action="store_true", help="do not ship the base image (layers 1-2)"
    )
    parser.add_argument(
        "--project",
        default=".",
        metavar="DIR",
        help="framework project, for the default base image (default .)",
    )
    parser.add_argument(
        "--compress",
        choices=COMPRESSIONS,
        default="auto",
        help="the base image on the wire (default auto: zstd to Docker 23+ hosts, gzip "
        "to the others)",
    )
    parser.set_defaults(handler=_provision)


def render_warnings(result: FleetResult) -> str:
    """Each host's warnings, one line each."""
    return "".join(
        f"{visible(row.host)}: warning: {visible(warning)}\n"
        for row in result.results
        for warning in row.details.get("warnings") or ()
    )


def render_diffs(result: FleetResult) -> str:
    """Each host's file differences (``--diff``), under the host's name."""
    parts: list[str] = []
    for row in result.results:
        text = str(row.details.get("diff") or "")
        if text:
            parts.append(f"=== {row.host} ({row.outcome})\n{text}")
    return "".join(parts)


def _provision(args: argparse.Namespace) -> int:
    options = ProvisionOptions(
        check=args.check,
        diff=args.diff,
        ship_base=not args.skip_base,
        compress=compression(args.compress),
        timeout=args.timeout,
    )
    finished: list[FleetResult] = []

    def operation(runner: Runner, hosts: list[Host]) -> FleetResult:
        # Settings and base images are checked before any host is touched (the runner
        # connects lazily): a bad setting exits 4, a missing base image 5.
        settings = settings_for_hosts(hosts)
        bases: Mapping[str, BaseImage] = {}
        if options.ship_base:
            settings, bases = resolve_base_images(settings, args.project)
        result = provision(runner, hosts, settings, bases, options)
        finished.append(result)
        return result

    title = "provision --check" if args.check else "provision"
    code = common.run_fleet(args, operation, detail_columns=("engine", "store"), title=title)
    if finished and not args.json:
        # After the recap (run_fleet prints it): warnings beside it on stderr, diffs (data)
        # on stdout.
        sys.stderr.write(render_warnings(finished[0]))
        if args.diff:
            sys.stdout.write(render_diffs(finished[0]))
    return code

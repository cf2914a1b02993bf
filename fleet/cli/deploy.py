"""``fleet deploy``, ``fleet rollback`` and ``fleet prune``."""

from __future__ import annotations

import argparse
from typing import Any

from fleet import units
from fleet.cli import common
from fleet.cli import push as push_cli
from fleet.cli import views as cli_views
from fleet.cli.push import default_image
from fleet.images import daemon
from fleet.images.project import load_project
from fleet.ops import deploy, prune
from fleet.results import FleetResult
from fleet.ship.plan import PushOptions, check_options


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="roll a framework version out: ship, stop the old, start the new, health-gate",
        description="Per host: ship the image (only missing layers), take the deploy lock, "
        "stop the other framework versions (kept for rollback), start VERSION with its "
        "image's recommended run command, and wait until it is healthy; if it is not, "
        "start the previous version again.",
    )
    common.add_host_options(parser)
    parser.add_argument(
        "version",
        nargs="?",
        metavar="VERSION",
        help="a tag (0.2.7) or IMAGE:TAG; default: pick from the built versions on a "
        "terminal, else the newest built",
    )
    _common(parser)
    parser.add_argument(
        "--serial",
        metavar="N",
        help="deploy in batches of N hosts, or of a share of them (25%%)",
    )
    parser.add_argument(
        "--max-fail",
        type=_percent,
        # No % in a metavar: argparse formats the usage it prints for --help with %.
        metavar="PERCENT",
        help="stop the rollout when more than PERCENT%% of a batch failed (10%% or 10)",
    )
    _gpu_options(parser)
    push_cli.add_path_options(parser)
    parser.set_defaults(handler=_deploy)

    back = subparsers.add_parser(
        "rollback", help="back to the previous version recorded on each host"
    )
    common.add_host_options(back)
    back.add_argument(
        "--to",
        metavar="VERSION",
        help="roll back to this version (a tag) instead; on a terminal, without it, "
        "pick from the versions on the hosts",
    )
    _common(back)
    _gpu_options(back)
    back.set_defaults(handler=_rollback)

    prune = subparsers.add_parser(
        "prune", help="remove old framework images and stopped containers"
    )
    common.add_host_options(prune)
    prune.add_argument(
        "--keep",
        type=int,
        default=3,
        metavar="K",
        help="versions to keep besides the running one and the rollback target (default 3)",
    )
    _common(prune)
    prune.set_defaults(handler=_prune)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project", default=".", metavar="DIR", help="framework project (default .)"
    )
    parser.add_argument(
        "--check", action="store_true", help="show what would change, change nothing"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another deploy's lock (default: fail at once)",
    )


def _gpu_options(parser: argparse.ArgumentParser) -> None:
    """What to do when a GPU job runs in the container a switch would stop."""
    parser.add_argument(
        "--wait-idle",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="when GPU jobs run in the framework's container, wait up to this long "
        "(90s, 30m, 2h) for them to end; default: skip that host at once",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="stop the framework even while GPU jobs run in it (recorded in the history)",
    )


def _duration(text: str) -> float:
    try:
        return units.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _percent(text: str) -> float:
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage like 25%") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not between 0% and 100%")
    return value


def _options(args: argparse.Namespace, repository: str) -> deploy.DeployOptions:
    paths = push_cli.path_options(args) if hasattr(args, "via") else {}
    return deploy.DeployOptions(
        repository=repository,
        serial=getattr(args, "serial", None),
        max_fail_percent=getattr(args, "max_fail", None),
        check=args.check,
        wait_lock=args.wait,
        wait_idle=getattr(args, "wait_idle", 0.0),
        force=getattr(args, "force", False),
        shipping=PushOptions(state_timeout=args.timeout, **paths),
    )


COLUMNS = ("version_before", "version_after", "bytes_sent")


def _deploy(args: argparse.Namespace) -> int:
    client = daemon.connect()
    project = load_project(args.project)
    if args.version is None:
        reference = (
            cli_views.pick_deploy_reference(args, client, project.repository)
            if cli_views.picker_wanted()
            else default_image(client, args.project)
        )
    elif ":" in args.version:
        reference = args.version
    else:
        reference = f"{project.repository}:{args.version}"
    image = daemon.shippable(client, reference)
    repository = reference.rpartition(":")[0]
    if args.serial is not None:
        deploy.batches([], args.serial)  # validate before touching any host
    options = _options(args, repository)
    check_options(options.push_options())  # bad options exit 5 before any host

    def operation(runner: Any, hosts: Any) -> FleetResult:
        return deploy.deploy(runner, hosts, image, options)

    return common.run_fleet(args, operation, detail_columns=COLUMNS, title=f"deploy {reference}")


def _rollback(args: argparse.Namespace) -> int:
    options = _options(args, common.repository(args))
    to = args.to
    if to is None and cli_views.picker_wanted():
        to = cli_views.pick_rollback_target(args, options.repository)
    return common.run_fleet(
        args,
        lambda runner, hosts: deploy.rollback(runner, hosts, to, options),
        detail_columns=COLUMNS[:2],
        title="rollback",
    )


def _prune(args: argparse.Namespace) -> int:
    options = _options(args, common.repository(args))
    return common.run_fleet(
        args,
        lambda runner, hosts: prune.prune(runner, hosts, args.keep, options),
        detail_columns=("bytes_freed",),
        title="prune",
    )

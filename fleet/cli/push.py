"""``fleet push [PATTERN] [IMAGE:TAG]``: ship only the layers each host lacks."""

from __future__ import annotations

import argparse
from typing import Any

from fleet import units
from fleet.cli import common
from fleet.errors import UsageError
from fleet.images import daemon
from fleet.images.project import load_project
from fleet.results import FleetResult
from fleet.ship.codec import COMPRESSIONS, compression
from fleet.ship.plan import VIAS, PushOptions, check_options, via_of
from fleet.ship.push import push


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "push",
        help="ship an image to hosts, sending each only the layers it lacks",
        description="Ship IMAGE:TAG (default: the newest framework version built) to every "
        "selected host over its SSH connection. Each host says which layers it has; one "
        "pass over 'docker save' sends each host only the rest, compressed once; the image "
        "is verified on the host afterwards. With --via registry the image is pushed once "
        "to a registry and every host pulls it.",
    )
    common.add_host_options(parser)
    parser.add_argument(
        "image", nargs="?", metavar="IMAGE:TAG", help="default: the newest version built"
    )
    parser.add_argument(
        "--project",
        default=".",
        metavar="DIR",
        help="framework project, for the default image (default .)",
    )
    add_path_options(parser)
    parser.add_argument(
        "--check", action="store_true", help="say per host what would be sent, send nothing"
    )
    parser.add_argument(
        "--min-free",
        type=_size,
        default=0,
        metavar="SIZE",
        help="free disk to keep at the Docker root after loading (e.g. 10G)",
    )
    parser.set_defaults(handler=_push)


def add_path_options(parser: argparse.ArgumentParser) -> None:
    """--via, --registry, --compress and the bandwidth limits (push and deploy)."""
    parser.add_argument(
        "--via",
        choices=VIAS,
        default="ssh",
        help="ssh: stream each host its missing layers (default); registry: push once to "
        "a registry, every host pulls",
    )
    parser.add_argument(
        "--registry",
        metavar="URL",
        help="with --via registry: an existing registry the hosts reach (host[:port][/prefix]; "
        "credentials from 'docker login', never in the URL); default: a registry on the "
        "controller, tunnelled to each host over SSH",
    )
    parser.add_argument(
        "--compress",
        choices=COMPRESSIONS,
        default=None,
        help="on the wire with --via ssh (default auto: zstd to Docker 23+ hosts when the "
        "controller has zstd, gzip to the others); incompressible blocks are stored",
    )
    parser.add_argument(
        "--max-rate",
        type=_rate,
        metavar="RATE",
        help="bytes per second to all hosts together (e.g. 20M); --via ssh, or the "
        "controller's tunnelled registry",
    )
    parser.add_argument(
        "--max-rate-per-host",
        type=_rate,
        metavar="RATE",
        help="bytes per second to each host (e.g. 5M)",
    )


def path_options(args: argparse.Namespace) -> dict[str, Any]:
    """The PushOptions fields of --via/--registry/--compress/--max-rate*, checked together."""
    if args.compress is not None and args.via == "registry":
        raise UsageError(
            "--compress applies to --via ssh",
            fix="drop --compress: a registry holds the layers as the controller's engine "
            "pushed them (gzip)",
        )
    return {
        "via": via_of(args.via),
        "registry": args.registry,
        "compress": compression(args.compress or "auto"),
        "max_rate": args.max_rate,
        "max_rate_per_host": args.max_rate_per_host,
    }


def _size(text: str) -> int:
    try:
        return units.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate(text: str) -> int:
    """A rate in bytes per second: ``20M``, ``20M/s``, ``500KB/s``."""
    cleaned = text.strip()
    if cleaned.lower().endswith("/s"):
        cleaned = cleaned[:-2]
    try:
        value = units.parse_size(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate like 20M (bytes per second)"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a rate must be more than 0")
    return value


def default_image(client: Any, project: str) -> str:
    """The newest framework version built for the project."""
    repository = load_project(project).repository
    for version in daemon.list_versions(client, repository):
        if version.tagged:
            return version.reference
    raise UsageError(
        f"no version of {repository} is built on this machine",
        fix="run 'fleet build' first, or name IMAGE:TAG",
    )


def _push(args: argparse.Namespace) -> int:
    client = daemon.connect()
    if args.image is None and ":" in args.pattern and daemon.has_image(client, args.pattern):
        # 'fleet push cauchy:0.2.7' names an image, not the union of two host patterns.
        args.image, args.pattern = args.pattern, "all"
    reference = args.image or default_image(client, args.project)
    options = PushOptions(
        check=args.check,
        min_free_bytes=args.min_free,
        state_timeout=args.timeout,
        **path_options(args),
    )
    check_options(options)  # before reading the image: bad options exit 5 at once
    image = daemon.shippable(client, reference)

    def task(runner: Any, hosts: Any) -> FleetResult:
        return push(runner, hosts, image, options)

    return common.run_fleet(args, task, detail_columns=columns_for(args), title=f"push {reference}")


def columns_for(args: argparse.Namespace) -> tuple[str, ...]:
    """The recap's detail columns for the path and mode chosen."""
    if args.via == "registry":
        if args.check:
            return ("store", "layers_present", "layers_to_pull")
        return ("store", "layers_pulled", "bytes_pulled")
    if args.check:
        return ("store", "layers_present", "layers_to_send")
    return ("store", "layers_sent", "bytes_sent", "compress", "source")

"""``fleet push [PATTERN] [IMAGE:TAG]``: ship only the layers each host lacks."""

from __future__ import annotations

import argparse
from typing import Any

from fleet import images, transfer
from fleet.cli import common
from fleet.errors import UsageError
from fleet.results import FleetResult


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "push",
        help="ship an image to hosts, sending each only the layers it lacks",
        description="Ship IMAGE:TAG (default: the newest framework version built) to every "
        "selected host over its SSH connection. Each host says which layers it has; one "
        "pass over 'docker save' sends each host only the rest, compressed once; the image "
        "is verified on the host afterwards.",
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
    parser.add_argument(
        "--compress", choices=("gzip", "none"), default="gzip", help="on the wire (default gzip)"
    )
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


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = number[-1:] if number[-1:] in units else ""
    try:
        return int(float(number[: len(number) - len(unit)]) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 500M or 10G") from None


def default_image(client: Any, project: str) -> str:
    """The newest framework version built for the project."""
    repository = images.load_project(project).repository
    for version in images.list_versions(client, repository):
        if version.tagged:
            return version.reference
    raise UsageError(
        f"no version of {repository} is built on this machine",
        fix="run 'fleet build' first, or name IMAGE:TAG",
    )


def _push(args: argparse.Namespace) -> int:
    client = images.connect()
    if args.image is None and ":" in args.pattern and images.has_image(client, args.pattern):
        # 'fleet push cauchy:0.2.7' names an image, not the union of two host patterns.
        args.image, args.pattern = args.pattern, "all"
    reference = args.image or default_image(client, args.project)
    image = images.shippable(client, reference)
    options = transfer.PushOptions(
        compress=args.compress,
        check=args.check,
        min_free_bytes=args.min_free,
        state_timeout=args.timeout,
    )

    def task(runner: Any, hosts: Any) -> FleetResult:
        return transfer.push(runner, hosts, image, options)

    columns = (
        ("store", "layers_present", "layers_to_send")
        if args.check
        else ("store", "layers_sent", "bytes_sent")
    )
    return common.run_fleet(args, task, detail_columns=columns, title=f"push {reference}")

"""``fleet build`` and ``fleet images``: the framework's images on the local engine.

    fleet build [--project DIR] [--rebuild-base] [--rebuild] [--tag-prefix P] [-v] [--json]
    fleet images [--project DIR | --repository NAME] [--on PATTERN [host options]] [--json]

The project (default: the current directory) holds ``Dockerfile.base``, ``Dockerfile`` and
its settings (``fleet.yml``, else ``inventory/group_vars/all.yml``; see ``fleet.images``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fleet import gitinfo, images
from fleet import report as report_mod
from fleet.cli import common
from fleet.cli import views as cli_views
from fleet.report import build as build_report


def register(subparsers: Any) -> None:
    build = subparsers.add_parser(
        "build",
        help="build the framework image (layer 3), and its base (layer 2) when needed",
        description="Build the framework image <repository>:<tag_prefix>.<commit count> "
        "from Dockerfile, on its base image from Dockerfile.base, which is rebuilt only "
        "when it is missing or its inputs changed. Labels record the git facts and the "
        "recommended run command.",
    )
    _project_option(build)
    build.add_argument(
        "--rebuild-base",
        action="store_true",
        help="rebuild the base image (layer 2) without the build cache",
    )
    build.add_argument(
        "--rebuild",
        action="store_true",
        help="build the framework image even when this commit is already built",
    )
    build.add_argument(
        "--tag-prefix",
        metavar="PREFIX",
        help="tag prefix, e.g. 0.3 gives 0.3.<commit count> (default: fleet_image.tag_prefix)",
    )
    build.add_argument("-v", "--verbose", action="store_true", help="stream the whole build output")
    build.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout, nothing else"
    )
    build.set_defaults(handler=_build)

    versions = subparsers.add_parser(
        "images",
        help="list the local framework versions, newest first",
        description="The framework images in the local engine: tag, image ID, build date, "
        "commit, branch, dirty flag and size, newest (highest commit count) first.",
    )
    _project_option(versions)
    versions.add_argument(
        "--repository",
        metavar="NAME",
        help="the framework repository to list (default: the project's fleet_image.repository)",
    )
    versions.add_argument(
        "--on",
        metavar="PATTERN",
        help="also the framework images on these hosts: which runs, which is the rollback "
        "target (the host options below apply to it)",
    )
    common.add_host_options(versions, pattern=False)
    versions.set_defaults(handler=_images)


def _project_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project",
        metavar="DIR",
        default=".",
        help="the framework repository (default: the current directory)",
    )


def _build(args: argparse.Namespace) -> int:
    project = images.load_project(args.project, tag_prefix=args.tag_prefix)
    git = gitinfo.read(project.root)
    client = images.connect()
    progress = build_report.BuildProgress(report_mod.console(), verbose=args.verbose)
    try:
        result = images.build(
            client,
            project,
            git=git,
            rebuild_base=args.rebuild_base,
            rebuild=args.rebuild,
            on_step=progress.step,
            on_output=progress.output,
        )
    except images.BuildError as exc:
        progress.failed(exc)
        raise
    finally:
        client.close()
    if args.json:
        _print_json(result.to_json())
    else:
        report_mod.console(sys.stdout).print(build_report.build_view(result))
    return 0


def _images(args: argparse.Namespace) -> int:
    repository = args.repository or images.load_project(args.project).repository
    if args.on is not None:
        return cli_views.images_on(args, repository)
    client = images.connect()
    try:
        versions = images.list_versions(client, repository)
    finally:
        client.close()
    if args.json:
        _print_json(
            {"repository": repository, "versions": [version.to_json() for version in versions]}
        )
    else:
        report_mod.console(sys.stdout).print(build_report.versions_table(repository, versions))
    return 0


def _print_json(document: dict[str, Any]) -> None:
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")

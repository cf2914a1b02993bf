"""``fleet build`` and ``fleet images``: the framework's images on the local engine.

    fleet build [--project DIR] [--rebuild-base] [--rebuild] [--tag-prefix P] [-v] [--json]
                [--build-host HOST [-i INVENTORY] [-T SECONDS] [--accept-new-host-keys]]
    fleet images [--project DIR | --repository NAME] [--on PATTERN [host options]] [--json]

The project (default: the current directory) holds ``Dockerfile.base``, ``Dockerfile`` and
its settings (``fleet.yml``, else ``inventory/group_vars/all.yml``; see ``fleet.images.build``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fleet import report as report_mod
from fleet.cli import common
from fleet.cli import views as cli_views
from fleet.errors import BuildError, PatternError, UsageError
from fleet.hosts.model import Host
from fleet.images import build as images
from fleet.images import daemon, gitinfo
from fleet.images.project import Project, load_project
from fleet.ops import buildhost
from fleet.report import build as build_report
from fleet.runner import Runner, SSHConnector
from fleet.ssh.known_hosts import KnownHosts


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
    build.add_argument(
        "--retag",
        action="store_true",
        help="move the version tag even when it names another commit's image (a branch or a "
        "rebase with the same commit count); recorded in the image's io.fleet.moved-from label",
    )
    build.add_argument("-v", "--verbose", action="store_true", help="stream the whole build output")
    build.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout, nothing else"
    )
    build.add_argument(
        "--build-host",
        metavar="HOST",
        help="build on this inventory host's Docker engine over SSH, then pull back into "
        "this machine's engine only the layers it lacks",
    )
    common.add_inventory_option(build)
    build.add_argument(
        "-T",
        "--timeout",
        type=float,
        default=common.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"with --build-host: connect and per-command timeout (default "
        f"{common.DEFAULT_TIMEOUT:g}); the build itself has none",
    )
    build.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="with --build-host: record an unknown host key (like OpenSSH's accept-new); "
        "changed keys are always refused",
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


def _options(args: argparse.Namespace, progress: build_report.BuildProgress) -> images.BuildOptions:
    return images.BuildOptions(
        rebuild_base=args.rebuild_base,
        rebuild=args.rebuild,
        retag=args.retag,
        on_step=progress.step,
        on_output=progress.output,
    )


def _build(args: argparse.Namespace) -> int:
    project = load_project(args.project, tag_prefix=args.tag_prefix)
    git = gitinfo.read(project.root)
    if args.build_host is not None:
        return _build_on_host(args, project, git)
    client = daemon.connect()
    progress = build_report.BuildProgress(report_mod.console(), verbose=args.verbose)
    try:
        result = images.build(client, project, _options(args, progress), git=git)
    except BuildError as exc:
        progress.failed(exc)
        raise
    finally:
        client.close()
    if args.json:
        _print_json({**result.to_json(), "build_host": None})
    else:
        report_mod.console(sys.stdout).print(build_report.build_view(result))
    return 0


def _build_on_host(args: argparse.Namespace, project: Project, git: gitinfo.GitFacts) -> int:
    """``fleet build --build-host HOST``: build there, pull back what this engine lacks."""
    common.require(args.timeout > 0, f"--timeout {args.timeout:g} must be more than 0")
    host = _one_host(args)
    connector = SSHConnector(
        known_hosts=KnownHosts(accept_new=args.accept_new_host_keys),
        connect_timeout=args.timeout,
        command_timeout=args.timeout,
        become_password=common.become_password(args),
    )
    runner = Runner(connector, forks=1)
    progress = build_report.BuildProgress(report_mod.console(), verbose=args.verbose)
    try:
        runner.transport(host)  # unreachable: exit 3 before the local engine is asked
        local = daemon.connect()
        try:
            remote = buildhost.build_on(
                runner, host, local, project, _options(args, progress), git=git
            )
        finally:
            local.close()
    except BuildError as exc:
        progress.failed(exc)
        raise
    finally:
        runner.close()
    if args.json:
        _print_json(remote.to_json())
    else:
        report_mod.console(sys.stdout).print(build_report.build_host_view(remote))
    return 0


def _one_host(args: argparse.Namespace) -> Host:
    """The inventory host ``--build-host`` names; exactly one, or a UsageError."""
    args.pattern, args.limit = args.build_host, None
    try:
        _, hosts = common.select_hosts(args)
    except PatternError as exc:
        raise UsageError(f"--build-host {args.build_host!r}: {exc.message}", fix=exc.fix) from exc
    if len(hosts) != 1:
        chosen = ", ".join(h.name for h in hosts[:5]) + (", ..." if len(hosts) > 5 else "")
        raise UsageError(
            f"--build-host {args.build_host!r} selects {len(hosts)} hosts of the inventory"
            f"{f' ({chosen})' if hosts else ''}; a build runs on exactly one",
            fix="name one inventory host (fleet inventory --list-hosts all), or pass its "
            "inventory with -i",
        )
    return hosts[0]


def _images(args: argparse.Namespace) -> int:
    repository = args.repository or load_project(args.project).repository
    if args.on is not None:
        return cli_views.images_on(args, repository)
    client = daemon.connect()
    try:
        versions = daemon.list_versions(client, repository)
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

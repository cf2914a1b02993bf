"""``fleet ps``, ``fleet logs`` and ``fleet shell``; ``fleet images --on`` and the version
picker of ``fleet deploy``/``fleet rollback`` are wired here too.

    fleet ps [PATTERN] [--all] [--json]
    fleet logs [PATTERN] [--follow] [--tail N] [--since T] [--timestamps] [--json]
    fleet shell HOST [-- CMD ARGS...]

Each finds the framework's containers by their ``io.fleet.framework`` label; the
repository is the project's (``--project DIR``, default .) unless ``--repository`` names it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from fleet import report
from fleet.cli import common
from fleet.errors import EXIT_INTERRUPTED, HostError, Interrupted, UsageError
from fleet.images import daemon, labels
from fleet.ops import containers, views
from fleet.ops.containers import HostFramework
from fleet.report import build as build_report
from fleet.report import views as report_views
from fleet.report.untrusted import safe_text, visible
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, NoEvents, Runner, SSHConnector, Task
from fleet.ssh.known_hosts import KnownHosts


def register(subparsers: Any) -> None:
    ps = subparsers.add_parser(
        "ps",
        help="the framework containers on every host: version, state, health, uptime",
        description="One table for the fleet, grouped by host: each framework container's "
        "name, image, version label, state, health (the image's health endpoint, as a "
        "deploy checks it) and since when it is up, with its restart count.",
    )
    common.add_host_options(ps)
    ps.add_argument(
        "-a", "--all", action="store_true", help="every container, not only the framework's"
    )
    _repository_options(ps)
    ps.set_defaults(handler=_ps, **{common.SHARED_CONNECTIONS: common.REUSES_SHARED})

    logs = subparsers.add_parser(
        "logs",
        help="the framework container's log from every host, each line prefixed with its host",
        description="The log of the framework container (the running one, else the last "
        "started) of every selected host. With --follow, new lines from all hosts as they "
        "arrive, until Ctrl-C; a host that goes away is reported and the others go on.",
    )
    common.add_host_options(logs)
    logs.add_argument(
        "--follow",
        action="store_true",
        help="keep printing new lines until Ctrl-C (with --json: one JSON object per line)",
    )
    logs.add_argument(
        "--tail", default="all", metavar="N", help="only the last N lines of each (default all)"
    )
    logs.add_argument(
        "--since", metavar="T", help="only lines since T: 10m, 1h30m, a date or a Unix time"
    )
    logs.add_argument("--timestamps", action="store_true", help="show each line's time")
    _repository_options(logs)
    logs.set_defaults(handler=_logs)

    shell = subparsers.add_parser(
        "shell",
        usage="fleet shell HOST [options] [-- CMD ARGS...]",
        help="a shell (or one command) in the framework container of one host: fleet shell HOST [-- CMD]",
        description="Like 'docker exec -it' over SSH: an interactive shell, or CMD ARGS..., in "
        "the running framework container of HOST, with a terminal when fleet has one. The "
        "exit code is the command's.",
    )
    shell.add_argument("host", metavar="HOST", help="the host (a pattern matching exactly one)")
    common.add_inventory_option(shell)
    shell.add_argument(
        "-T",
        "--timeout",
        type=float,
        default=common.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"connect timeout (default {common.DEFAULT_TIMEOUT:g}); the session has none",
    )
    shell.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="record unknown host keys (like OpenSSH's accept-new); changed keys are always refused",
    )
    shell.add_argument(
        "-K", "--ask-become-pass", action="store_true", help="ask once for sudo's password"
    )
    _repository_options(shell)
    shell.set_defaults(handler=_shell, takes_remote_command=True)


def _repository_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project", default=".", metavar="DIR", help="framework project (default .)"
    )
    parser.add_argument(
        "--repository",
        metavar="NAME",
        help="the framework's image repository (default: the project's fleet_image.repository)",
    )


def _stdout() -> Any:
    return report.console(sys.stdout)


def _print_json(document: dict[str, Any]) -> None:
    json.dump(document, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def run_view(args: argparse.Namespace, command: str, task: Task) -> tuple[FleetResult, bool]:
    """Run a view's task on the selected hosts; (result, interrupted)."""
    _, hosts = common.select_hosts(args)
    err = report.console()
    live = err.is_terminal and not args.json
    events: Any = report.LiveReporter([h.name for h in hosts], err, live=True) if live else None
    runner = common.make_runner(args, events or NoEvents())
    try:
        if events is not None:
            with events:
                return _run(runner, command, hosts, task)
        return _run(runner, command, hosts, task)
    finally:
        runner.close()


def _run(runner: Runner, command: str, hosts: Any, task: Task) -> tuple[FleetResult, bool]:
    try:
        return runner.run(command, hosts, task), False
    except Interrupted as exc:
        return exc.partial, True


def _finish(args: argparse.Namespace, result: FleetResult, interrupted: bool) -> int:
    common.write_retry_file(args, result)
    problems = report_views.host_problems(result)
    if problems is not None and not args.json:
        report.console().print(problems)
    if interrupted:
        return EXIT_INTERRUPTED
    return result.exit_code


# -- ps -----------------------------------------------------------------------------------
def _ps(args: argparse.Namespace) -> int:
    options = views.ViewOptions(
        common.repository(args), all_containers=args.all, timeout=args.timeout
    )
    result, interrupted = run_view(args, "ps", views.ps_task(options))
    if args.json:
        _print_json({**result.to_json(), "repository": options.repository})
    else:
        _stdout().print(report_views.ps_table(result))
    return _finish(args, result, interrupted)


# -- images --on (called by ``fleet images``) ---------------------------------------------
def images_on(args: argparse.Namespace, repository_name: str) -> int:
    """``fleet images --on PATTERN``: the controller's versions, then each host's images."""
    args.pattern = args.on
    controller_error = ""
    versions: list[labels.ImageVersion] = []
    try:
        client = daemon.connect()
        try:
            versions = daemon.list_versions(client, repository_name)
        finally:
            client.close()
    except Exception as exc:  # the hosts are worth showing without the controller's list
        controller_error = str(exc)
    options = views.ViewOptions(repository_name, timeout=args.timeout)
    result, interrupted = run_view(args, "images", views.images_task(options))
    if args.json:
        _print_json(
            {
                **result.to_json(),
                "repository": repository_name,
                "versions": [v.to_json() for v in versions],
                "controller_error": controller_error or None,
            }
        )
    else:
        out = _stdout()
        if controller_error:
            report.console().print(
                safe_text(f"fleet: warning: the controller's images: {controller_error}")
            )
        else:
            out.print("on this controller:", style="bold")
            out.print(build_report.versions_table(repository_name, versions))
        out.print(report_views.images_on_table(result))
    return _finish(args, result, interrupted)


# -- logs ---------------------------------------------------------------------------------
def _logs(args: argparse.Namespace) -> int:
    options = views.ViewOptions(common.repository(args), timeout=args.timeout)
    log = views.LogOptions(tail=args.tail, since=args.since, timestamps=args.timestamps)
    if args.follow:
        return _follow(args, options, log)
    result, interrupted = run_view(args, "logs", views.logs_task(options, log))
    if args.json:
        _print_json({**result.to_json(), "repository": options.repository})
    else:
        printer = report_views.LogPrinter([r.host for r in result.results], _stdout())
        err = report.console()
        for row in result.results:
            printer.host_log(row)
            if row.outcome is Outcome.SKIPPED:
                err.print(report_views.log_end(row), soft_wrap=True)
    return _finish(args, result, interrupted)


def _follow(args: argparse.Namespace, options: views.ViewOptions, log: views.LogOptions) -> int:
    _, hosts = common.select_hosts(args)
    names = [h.name for h in hosts]
    printer = report_views.LogPrinter(names, _stdout())
    err = report.console()
    following = set(names)

    runner = common.make_runner(args, NoEvents())

    def on_line(host: str, line: str) -> None:
        try:
            if args.json:
                _json_line({"host": host, "line": line})
            else:
                printer.line(host, line)
        except BrokenPipeError:  # the reader is gone (| head): stop as on Ctrl-C
            runner.stopping.set()

    def on_end(row: HostResult) -> None:
        following.discard(row.host)
        if args.json:
            _json_line({"host": row.host, "outcome": str(row.outcome), "reason": row.reason})
        else:
            err.print(report_views.log_end(row, following=sorted(following)), soft_wrap=True)

    try:
        result = views.follow_logs(runner, hosts, options, log, on_line, on_end)
    except Interrupted as exc:  # Ctrl-C before the streams started
        return _finish(args, exc.partial, True)
    finally:
        runner.close()
    # Every host that stopped was reported when it did; Ctrl-C is the normal end.
    common.write_retry_file(args, result)
    return result.exit_code


def _json_line(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


# -- shell --------------------------------------------------------------------------------
def _shell(args: argparse.Namespace) -> int:
    args.pattern, args.limit = args.host, None
    _, hosts = common.select_hosts(args)
    if len(hosts) != 1:
        raise UsageError(
            f"{args.host!r} selects {len(hosts)} hosts ({', '.join(h.name for h in hosts[:5])}"
            f"{', ...' if len(hosts) > 5 else ''}); fleet shell opens one",
            fix="name one host",
        )
    common.require(args.timeout > 0, f"--timeout {args.timeout:g} must be more than 0")
    host = hosts[0]
    name = common.repository(args)
    connect = SSHConnector(
        known_hosts=KnownHosts(accept_new=args.accept_new_host_keys),
        connect_timeout=args.timeout,
        command_timeout=args.timeout,
        become_password=common.become_password(args),
    )
    transport = connect(host)
    try:
        state = containers.gather(transport, name, timeout=args.timeout)
        if not state.engine_ok:
            raise HostError(host.name, f"Docker engine not usable: {state.engine_error}")
        container = views.shell_container(host.name, state, name)
        tty_mode = sys.stdin.isatty() and sys.stdout.isatty()
        command = getattr(args, "remote_command", None) or ()
        argv = views.shell_argv(container, command, tty=tty_mode)
        sys.stdout.flush()
        sys.stderr.flush()
        return views.run_shell(
            transport, argv, tty_mode=tty_mode, term=os.environ.get("TERM") or "xterm"
        )
    finally:
        transport.close()


# -- the version picker (fleet deploy / fleet rollback without a version) ------------------
def picker_wanted() -> bool:
    """Whether someone is there to pick: stdin and stderr are a terminal."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def host_states(args: argparse.Namespace, repository_name: str) -> dict[str, HostFramework | None]:
    """Each selected host's framework (None where it did not answer); problems on stderr."""
    _, hosts = common.select_hosts(args)
    options = views.ViewOptions(repository_name, timeout=args.timeout)
    states: dict[str, HostFramework | None] = {h.name: None for h in hosts}

    def task(ctx: HostContext) -> HostResult:
        states[ctx.name] = views.gather_state(ctx, options)
        return ctx.result(Outcome.OK)

    runner = common.make_runner(args, NoEvents())
    try:
        result = runner.run("versions", hosts, task)
    finally:
        runner.close()
    err = report.console()
    for row in (*result.failed, *result.unreachable):
        err.print(safe_text(f"{row.host}: {row.outcome}: {row.reason} (not shown below)"))
    return states


def _ask(rows: list[views.MenuRow], title: str, question: str) -> views.MenuRow:
    report.console().print(report_views.version_menu(rows, title))

    def write(text: str) -> None:
        # The question names the preselected version: a label, from an image or a host.
        sys.stderr.write(visible(text, lines=True))
        sys.stderr.flush()

    return views.prompt(rows, sys.stdin.readline, write, question=question)


def pick_deploy_reference(args: argparse.Namespace, client: Any, repository_name: str) -> str:
    """Show the built versions with the hosts running each; the IMAGE:TAG picked."""
    versions = daemon.list_versions(client, repository_name)
    rows = views.deploy_menu(versions, host_states(args, repository_name))
    if not rows:
        raise UsageError(
            f"no version of {repository_name} is built on this machine",
            fix="run 'fleet build' first, or name IMAGE:TAG",
        )
    row = _ask(rows, f"built versions of {repository_name}, newest first", "deploy which version")
    return f"{repository_name}:{row.tag}"


def pick_rollback_target(args: argparse.Namespace, repository_name: str) -> str | None:
    """Show the versions on the hosts; the one picked (None: each host's previous one)."""
    rows = views.rollback_menu(host_states(args, repository_name))
    row = _ask(rows, f"roll {repository_name} back to", "roll back to")
    return row.tag

"""Options and plumbing shared by the subcommands that act on hosts."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet import report
from fleet.errors import EXIT_INTERRUPTED, InputError, Interrupted, UsageError
from fleet.hosts import inventory as inventory_mod
from fleet.hosts.model import Host, Inventory
from fleet.report.untrusted import safe_text, visible
from fleet.results import FleetResult
from fleet.runner import (
    DEFAULT_FORKS,
    DEFAULT_MAX_STARTS,
    ClientConnector,
    Connect,
    Runner,
    SSHConnector,
    Task,
)

DEFAULT_TIMEOUT = 30.0


def add_inventory_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        "--inventory",
        action="append",
        metavar="PATH",
        help="inventory file or directory (repeatable; default $FLEET_INVENTORY or ./inventory/)",
    )


def add_host_options(parser: argparse.ArgumentParser, *, pattern: bool = True) -> None:
    """PATTERN, --limit, inventory, connection and output options."""
    if pattern:
        parser.add_argument(
            "pattern",
            nargs="?",
            default="all",
            metavar="PATTERN",
            help="host pattern (default: all)",
        )
    add_inventory_option(parser)
    parser.add_argument(
        "-l", "--limit", metavar="PATTERN", help="further limit the hosts (e.g. @retry-file)"
    )
    parser.add_argument(
        "-f",
        "--forks",
        type=_positive_int,
        default=DEFAULT_FORKS,
        help=f"hosts at once (default {DEFAULT_FORKS})",
    )
    parser.add_argument(
        "--max-starts",
        type=_positive_int,
        default=DEFAULT_MAX_STARTS,
        metavar="N",
        help="new SSH handshakes at once, whatever the forks (a bastion's sshd drops "
        f"connections past its MaxStartups; default {DEFAULT_MAX_STARTS})",
    )
    parser.add_argument(
        "-T",
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"per host: connect timeout and per-command timeout (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="record unknown host keys (like OpenSSH's accept-new); changed keys are always refused",
    )
    parser.add_argument(
        "-K",
        "--ask-become-pass",
        action="store_true",
        help="ask once for sudo's password, for hosts that become (ansible_become) and whose "
        "inventory gives no ansible_become_password",
    )
    parser.add_argument(
        "--become-password-file",
        "--become-pass-file",
        metavar="FILE",
        help="sudo's password from the first line of FILE (readable by its owner only), as "
        "-K's answer: for runs without a terminal",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout, nothing else"
    )
    parser.add_argument(
        "--retry-file",
        metavar="PATH",
        help="where to write failed+unreachable hosts (default ~/.cache/fleet/last.retry)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0")
    return value


def load_inventory(args: argparse.Namespace) -> Inventory:
    paths = args.inventory or []
    return inventory_mod.load(paths)


def select_hosts(
    args: argparse.Namespace, inv: Inventory | None = None
) -> tuple[Inventory, list[Host]]:
    """The inventory and the hosts that PATTERN and --limit select."""
    inv = inv or load_inventory(args)
    for warning in inv.warnings:
        print(f"fleet: warning: {visible(warning, lines=True)}", file=sys.stderr)
    hosts = inv.select(getattr(args, "pattern", "all") or "all", getattr(args, "limit", None))
    return inv, hosts


def become_password(args: argparse.Namespace) -> str | None:
    """-K's answer, asked once per run without echo, or --become-password-file's; None
    without either (the inventory's ansible_become_password wins over both, per host)."""
    path = getattr(args, "become_password_file", None)
    if path is not None:
        if getattr(args, "ask_become_pass", False):
            raise UsageError(
                "-K and --become-password-file both give sudo's password", fix="keep one"
            )
        return read_password_file(Path(path))
    if not getattr(args, "ask_become_pass", False):
        return None
    cached: str | None = getattr(args, "_become_password", None)
    if cached is None:
        try:
            cached = getpass.getpass("BECOME password: ")
        except EOFError:
            raise UsageError(
                "-K: no password was given (end of input)",
                fix="run it on a terminal, or set ansible_become_password in the inventory",
            ) from None
        args._become_password = cached
    return cached


def read_password_file(path: Path) -> str:
    """The first line of ``path``, refused when others than its owner may read it."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise InputError(
            f"cannot read the become password file: {exc}",
            path=str(path),
            fix="give a readable UTF-8 file whose first line is sudo's password",
        ) from exc
    if mode & 0o077:
        raise InputError(
            f"the become password file is readable or writable by others (mode {mode & 0o777:04o})",
            path=str(path),
            fix=f"chmod 600 {shlex.quote(str(path))}",
        )
    password = text.split("\n", 1)[0].removesuffix("\r")
    if not password:
        raise InputError(
            "the become password file's first line is empty",
            path=str(path),
            fix="write sudo's password on its first line",
        )
    return password


# A command whose parser sets this default runs short commands on many hosts (no image
# streams, no output followed): OPENS_SHARED reaches its hosts through the system's ssh and
# keeps the connections for the next command; REUSES_SHARED uses such a connection where
# one is open and connects with paramiko where none is (the cheaper handshake).
SHARED_CONNECTIONS = "shared_connections"
OPENS_SHARED, REUSES_SHARED = "open", "reuse"


def make_runner(args: argparse.Namespace, events: Any) -> Runner:
    """The command's runner: over shared connections as its parser's ``shared_connections``
    default says (audit opens them, exec, facts, ps and lock status use those open; a
    host's ``fleet_ssh_client`` or ``$FLEET_SSH_CLIENT`` chooses otherwise); the other
    commands over paramiko, which streams images faster and keeps its connections for
    the run.
    """
    connector: Connect
    shared = getattr(args, SHARED_CONNECTIONS, None)
    if shared in (OPENS_SHARED, REUSES_SHARED):
        connector = ClientConnector(
            accept_new=args.accept_new_host_keys,
            connect_timeout=args.timeout,
            command_timeout=args.timeout,
            default="openssh" if shared == OPENS_SHARED else "paramiko",
            reuse=shared == REUSES_SHARED,
            become_password=become_password(args),
        )
    else:
        # Imported here: fleet.ssh.paramiko_client imports paramiko, which the shared
        # client's commands do without.
        from fleet.ssh.known_hosts import KnownHosts

        connector = SSHConnector(
            known_hosts=KnownHosts(accept_new=args.accept_new_host_keys),
            connect_timeout=args.timeout,
            command_timeout=args.timeout,
            become_password=become_password(args),
        )
    return Runner(connector, forks=args.forks, events=events, max_starts=args.max_starts)


def default_retry_file() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "fleet" / "last.retry"


def write_retry_file(args: argparse.Namespace, result: FleetResult) -> Path | None:
    """Write failed+unreachable hosts for ``--limit @FILE``; None when all went well."""
    hosts = result.retry_hosts()
    path = Path(args.retry_file) if args.retry_file else default_retry_file()
    if not hosts:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(h + "\n" for h in hosts))
    return path


def run_on_hosts(
    args: argparse.Namespace,
    command: str,
    task: Task,
    *,
    render: Callable[[FleetResult], Any] | None = None,
    json_extra: Callable[[FleetResult], dict[str, Any]] | None = None,
    detail_columns: tuple[str, ...] = (),
) -> int:
    """Select hosts, run ``task`` on them with live progress, show the recap; the exit code."""
    return run_fleet(
        args,
        lambda runner, hosts: runner.run(command, hosts, task),
        render=render,
        json_extra=json_extra,
        detail_columns=detail_columns,
    )


def run_fleet(
    args: argparse.Namespace,
    operation: Callable[[Runner, list[Host]], FleetResult],
    *,
    detail_columns: tuple[str, ...] = (),
    title: str | None = None,
    render: Callable[[FleetResult], Any] | None = None,
    json_extra: Callable[[FleetResult], dict[str, Any]] | None = None,
) -> int:
    """Select hosts, run an operation (one or several steps) with live progress, recap."""
    _, hosts = select_hosts(args)
    out = report.console()
    reporter = report.LiveReporter([h.name for h in hosts], out, live=False if args.json else None)
    runner = make_runner(args, reporter)
    interrupted = False
    try:
        with reporter:
            try:
                result = operation(runner, hosts)
            except Interrupted as exc:
                result, interrupted = exc.partial, True
    finally:
        runner.close()
    return _finish(
        args, result, interrupted, detail_columns, title=title, render=render, json_extra=json_extra
    )


def _finish(
    args: argparse.Namespace,
    result: FleetResult,
    interrupted: bool,
    detail_columns: tuple[str, ...],
    *,
    render: Callable[[FleetResult], Any] | None = None,
    json_extra: Callable[[FleetResult], dict[str, Any]] | None = None,
    title: str | None = None,
) -> int:
    retry = write_retry_file(args, result)
    out = report.console()
    if args.json:
        document = result.to_json()
        if json_extra is not None:
            document.update(json_extra(result))
        json.dump(document, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        if render is not None:
            report.console(sys.stdout).print(render(result))
        out.print(report.recap(result, detail_columns, title=title))
        if retry is not None:
            out.print(safe_text(f"retry with: --limit @{retry}"))
    if interrupted:
        return EXIT_INTERRUPTED
    return result.exit_code


def repository(args: argparse.Namespace) -> str:
    """The framework's image repository: ``--repository``, else the project's settings.

    A project that cannot be read is a bad file: its ProjectError exits 4 with the fix.
    """
    given = getattr(args, "repository", None)
    if given:
        return str(given)
    from fleet.images.project import load_project

    return load_project(args.project).repository


def require(condition: bool, message: str, fix: str | None = None) -> None:
    if not condition:
        raise UsageError(message, fix=fix)

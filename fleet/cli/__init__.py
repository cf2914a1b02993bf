"""The command line: argument parsing and exit codes only.

Each subcommand lives in its own module with a ``register(subparsers)`` function that adds
its parser and sets ``handler`` (``args -> exit code``). Everything else is done by the
core modules, which never parse arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from fleet import __version__
from fleet.errors import EXIT_BAD_OPTIONS, EXIT_INTERRUPTED, FleetError, UsageError

# The order in which subcommands appear in ``fleet --help``.
_COMMAND_MODULES = (
    "lab",
    "inventory",
    "hosts",
    "build",
    "push",
    "provision",
    "deploy",
    "lock",
    "audit",
    "views",
    "play",
    "top",
)

# The module that registers each command. Running a command imports only its module, so
# it does not pay for the others' imports (docker-py alone costs 0.15 s).
_COMMANDS = {
    "lab": "lab",
    "inventory": "inventory",
    "ping": "hosts",
    "exec": "hosts",
    "facts": "hosts",
    "build": "build",
    "images": "build",
    "push": "push",
    "provision": "provision",
    "deploy": "deploy",
    "rollback": "deploy",
    "prune": "deploy",
    "lock": "lock",
    "audit": "audit",
    "ps": "views",
    "logs": "views",
    "shell": "views",
    "play": "play",
    "top": "top",
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits 5 (bad options) with the usage, as every fleet command does."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}", fix=f"see '{self.prog} --help'")


def build_parser(command: str | None = None) -> ArgumentParser:
    """The parser: with only ``command``'s module when it is known, else every command."""
    import importlib

    parser = ArgumentParser(
        prog="fleet",
        description="Roll a layered GPU framework image out to a lab's machines over SSH.",
        epilog="Exit codes: 0 all hosts ok, 1 error, 2 some host failed, "
        "3 some host unreachable, 4 bad inventory/playbook/config file, 5 bad options.",
    )
    parser.add_argument("--version", action="version", version=f"fleet {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=ArgumentParser
    )
    known = command in _COMMANDS and _COMMANDS[command] in _COMMAND_MODULES
    for name in (_COMMANDS[command],) if known and command else _COMMAND_MODULES:
        module = importlib.import_module(f"fleet.cli.{name}")
        module.register(subparsers)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    # argparse has no public way to reach a parser's subcommands: its actions are read.
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse with options before, between or after positionals, as Ansible users type them.

    ``fleet push all -i inv cauchy:0.2.67`` and ``fleet push -i inv all cauchy:0.2.67``
    mean the same. Subcommands are followed down to the parser that has no more of them,
    which parses its words intermixed.
    """
    words = list(argv)
    commands = _subcommands(parser)
    if commands is None:
        return parser.parse_intermixed_args(words)
    index = next((i for i, word in enumerate(words) if word in commands.choices), None)
    if index is None or index > 0:
        # No subcommand, or options of this parser before it (--version, --help): argparse's
        # own handling says what is wrong or prints what was asked.
        return parser.parse_args(words)
    namespace = parse(commands.choices[words[0]], words[1:])
    setattr(namespace, commands.dest, words[0])
    return namespace


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fleet`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # A remote command follows '--' and is never parsed as options.
    remote: list[str] | None = None
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, remote = args_list[:cut], args_list[cut + 1 :]
    try:
        command = next((word for word in args_list if not word.startswith("-")), None)
        parser = build_parser(command)
        args = parse(parser, args_list)
        if remote is not None:
            if not getattr(args, "takes_remote_command", False):
                parser.error(f"unexpected arguments after '--': {' '.join(remote)}")
            args.remote_command = remote
        if getattr(args, "handler", None) is None:
            parser.print_help(sys.stderr)
            return EXIT_BAD_OPTIONS
        code: int = args.handler(args)
        return code
    except FleetError as exc:
        # Messages carry host output and label text: shown escaped, never obeyed. Imported
        # here so that a command's start does not pay for rich.
        from fleet.report.untrusted import visible

        print(f"fleet: error: {visible(str(exc), lines=True)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fleet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run() -> NoReturn:
    """Console-script wrapper."""
    sys.exit(main())

"""The command line's contract: help, version and exit codes."""

import argparse
from pathlib import Path

import pytest

from fleet import __version__
from fleet.cli import build_parser, common
from fleet.errors import UnreachableError
from fleet.hosts.model import Host
from fleet.runner import Runner
from fleet.ssh.base import CommandResult
from tests import fakes
from tests.conftest import run_cli, run_json


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        run_cli(capsys, "--version")
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"fleet {__version__}"


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli(capsys, "--help")
    out = capsys.readouterr().out
    for command in ("lab", "inventory", "ping", "exec", "facts"):
        assert command in out


def _commands() -> list[str]:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(commands.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_commands_help_prints(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        run_cli(capsys, command, "--help")
    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: fleet {command}")


@pytest.mark.parametrize(
    "argv",
    [
        ["no-such-command"],
        ["ping", "--no-such-flag"],
        ["ping", "--forks", "0"],
        ["ping", "--timeout", "soon"],
        ["lab", "up", "--engine", "vmware"],
        ["ping", "all", "--", "echo", "hi"],
    ],
)
def test_bad_options_exit_5_with_usage(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 5
    assert "usage:" in err or "fix:" in err


def test_exec_without_command_is_bad_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    a:\n")
    code, _, err = run_cli(capsys, "exec", "all", "-i", str(inventory))
    assert code == 5
    assert "needs a command after '--'" in err


def test_no_subcommand_prints_help_and_exits_5(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys)
    assert code == 5
    assert "usage: fleet" in err


# What a hostile host prints: an OSC title, a CSI clear, rich markup.
HOSTILE_OUT = "\x1b]0;pwned\x07\x1b[2Jred [/] x[/red]\n"


class HostileHost(fakes.FakeTransport):
    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        return CommandResult(" ".join(argv), 3, HOSTILE_OUT, f"err {HOSTILE_OUT}", 0.0)


@pytest.mark.hostile
def test_exec_piped_shows_hostile_output_escaped_and_json_has_it_exactly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    main]:\n    gone:\n")

    def connect(host: Host) -> HostileHost:
        if host.name == "gone":
            raise UnreachableError(host.name, f"connection lost: {HOSTILE_OUT}more")
        return HostileHost(host.name)

    monkeypatch.setattr(common, "make_runner", lambda args, events: Runner(connect, events=events))
    argv = ["exec", "all", "-i", str(inventory), "--retry-file", "/dev/null"]
    code, out, err = run_cli(capsys, *argv, "--", "cat", "f")
    assert code == 3
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert out.splitlines() == [
        "--- main] failed rc=3",
        "\\x1b]0;pwned\\x07\\x1b[2Jred [/] x[/red]",
        "err \\x1b]0;pwned\\x07\\x1b[2Jred [/] x[/red]",
    ]
    said = err.splitlines()
    assert "gone unreachable: connection lost: \\x1b]0;pwned\\x07\\x1b[2Jred [/] x[/red]" in said
    assert "    more" in said  # the host's next line, under its reason
    code, document = run_json(capsys, *argv, "--", "cat", "f")
    hosts = document["hosts"]
    assert hosts["main]"]["stdout"] == HOSTILE_OUT  # type: ignore[index]
    assert hosts["gone"]["reason"] == f"connection lost: {HOSTILE_OUT}more"  # type: ignore[index]


@pytest.mark.parametrize(
    ("argv", "default", "reuse"),
    [
        (["audit", "all"], "openssh", False),
        (["exec", "all"], "paramiko", True),
        (["facts", "all"], "paramiko", True),
        (["ps", "all"], "paramiko", True),
        (["lock", "status", "all"], "paramiko", True),
        (["ping", "all"], None, False),  # the host key check: paramiko names both keys
        (["push", "all", "cauchy:0.2.1"], None, False),
        (["deploy", "all"], None, False),
        (["provision", "all"], None, False),
        (["top", "all"], None, False),
        (["logs", "all"], None, False),
        (["lock", "release", "all"], None, False),
    ],
)
def test_short_commands_on_many_hosts_use_shared_connections(
    argv: list[str], default: str | None, reuse: bool
) -> None:
    """audit opens shared connections that outlive the run; exec, facts, ps and lock status
    take one where it is open, else connect with paramiko; the commands that stream images
    or follow output keep paramiko's own."""
    from fleet.cli import build_parser, parse
    from fleet.runner import ClientConnector

    args = parse(build_parser(argv[0]), argv)
    runner = common.make_runner(args, None)
    connector = runner.connect
    if default is None:
        assert not isinstance(connector, ClientConnector), argv
    else:
        assert isinstance(connector, ClientConnector), argv
        assert (connector.default, connector.reuse) == (default, reuse), argv
    runner.close()

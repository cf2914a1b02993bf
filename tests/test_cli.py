"""The command line's contract: help, version and exit codes."""

import pytest

from fleet import __version__
from tests.conftest import run_cli


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


def test_exec_without_command_is_bad_options(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    a:\n")
    code, _, err = run_cli(capsys, "exec", "all", "-i", str(inventory))
    assert code == 5
    assert "needs a command after '--'" in err


def test_no_subcommand_prints_help_and_exits_5(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys)
    assert code == 5
    assert "usage: fleet" in err

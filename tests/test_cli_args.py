"""Options before, between or after positionals: every subcommand, as Ansible users type them."""

from __future__ import annotations

import argparse

import pytest

from fleet.cli import build_parser, main, parse
from fleet.errors import UsageError


def _parsed(*argv: str) -> dict[str, object]:
    command = next(word for word in argv if not word.startswith("-"))
    namespace: argparse.Namespace = parse(build_parser(command), argv)
    return {k: v for k, v in vars(namespace).items() if k != "handler"}


# Each row: the order argparse alone accepted, then the orders people also type.
ORDERS = [
    (
        ("push", "-i", "inv.yml", "all", "cauchy:0.2.67"),
        ("push", "all", "-i", "inv.yml", "cauchy:0.2.67"),
        ("push", "all", "cauchy:0.2.67", "-i", "inv.yml"),
    ),
    (
        ("deploy", "--serial", "1", "-i", "inv.yml", "gpu", "0.2.67"),
        ("deploy", "gpu", "--serial", "1", "0.2.67", "-i", "inv.yml"),
        ("deploy", "gpu", "0.2.67", "-i", "inv.yml", "--serial", "1"),
    ),
    (
        ("rollback", "-i", "inv.yml", "--to", "0.2.60", "lab1"),
        ("rollback", "lab1", "-i", "inv.yml", "--to", "0.2.60"),
    ),
    (
        ("prune", "-i", "inv.yml", "--keep", "2", "all"),
        ("prune", "all", "--keep", "2", "-i", "inv.yml"),
    ),
    (
        ("exec", "-i", "inv.yml", "--shell", "lab1"),
        ("exec", "lab1", "-i", "inv.yml", "--shell"),
    ),
    (("ping", "-i", "inv.yml", "lab"), ("ping", "lab", "-i", "inv.yml")),
    (("facts", "-i", "inv.yml", "--json", "lab"), ("facts", "lab", "--json", "-i", "inv.yml")),
    (
        ("provision", "-i", "inv.yml", "--check", "gpu"),
        ("provision", "gpu", "--check", "-i", "inv.yml"),
    ),
    (
        ("audit", "-i", "inv.yml", "--expect", "latest", "lab"),
        ("audit", "lab", "--expect", "latest", "-i", "inv.yml"),
    ),
    (("ps", "-i", "inv.yml", "--all", "lab"), ("ps", "lab", "--all", "-i", "inv.yml")),
    (
        ("logs", "-i", "inv.yml", "--tail", "5", "lab"),
        ("logs", "lab", "--tail", "5", "-i", "inv.yml"),
    ),
    (("shell", "-i", "inv.yml", "lab1"), ("shell", "lab1", "-i", "inv.yml")),
    (
        ("play", "-i", "inv.yml", "-e", "version=0.2.67", "playbooks/rollout.yml"),
        ("play", "playbooks/rollout.yml", "-i", "inv.yml", "-e", "version=0.2.67"),
    ),
    (
        ("images", "--on", "lab", "-i", "inv.yml"),
        ("images", "-i", "inv.yml", "--on", "lab"),
    ),
    (
        ("inventory", "-i", "inv.yml", "--list-hosts", "lab"),
        ("inventory", "--list-hosts", "lab", "-i", "inv.yml"),
    ),
    (
        ("lab", "up", "--hosts", "2", "--engine", "classic"),
        ("lab", "up", "--engine", "classic", "--hosts", "2"),
    ),
]


@pytest.mark.parametrize("orders", ORDERS, ids=lambda orders: orders[0][0])
def test_every_order_means_the_same(orders: tuple[tuple[str, ...], ...]) -> None:
    canonical = _parsed(*orders[0])
    for argv in orders[1:]:
        assert _parsed(*argv) == canonical, " ".join(argv)


def test_the_issue_s_own_example_parses() -> None:
    parsed = _parsed("push", "all", "-i", "inventory/lab.yml", "cauchy:0.2.67")
    assert (parsed["pattern"], parsed["image"]) == ("all", "cauchy:0.2.67")
    assert parsed["inventory"] == ["inventory/lab.yml"]


def test_a_remote_command_after_the_double_dash_is_never_parsed(capsys) -> None:
    # '--' ends fleet's options: '-i' after it belongs to the remote command (a bad inventory
    # path would have exited 4 before; a missing inventory makes this exit non-zero anyway).
    namespace = parse(build_parser("exec"), ["exec", "lab1", "-i", "inv.yml"])
    assert namespace.pattern == "lab1"
    code = main(["exec", "lab1", "-i", "/nonexistent/inv.yml", "--", "ls", "-i", "--bogus"])
    assert code == 4
    assert "--bogus" not in capsys.readouterr().err


def test_an_extra_positional_is_still_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unrecognized arguments: extra"):
        parse(build_parser("push"), ["push", "all", "cauchy:0.2.67", "extra", "-i", "inv.yml"])


@pytest.mark.hostile
def test_an_error_message_shows_terminal_controls_escaped(capsys, tmp_path) -> None:
    # An error names what it read (a path here; host output and labels elsewhere).
    hostile = tmp_path / "inv\x1b]0;owned\x07\x1b[2J.yml"
    hostile.write_text("all: [not, a, mapping\n")
    code = main(["inventory", "--list", "-i", str(hostile)])
    err = capsys.readouterr().err
    assert code == 4
    assert "\x1b" not in err and "\x07" not in err
    assert "inv\\x1b]0;owned\\x07\\x1b[2J.yml" in err


@pytest.mark.parametrize("command", ["ps", "logs", "audit", "rollback", "prune", "images"])
def test_every_command_names_an_unreadable_project_the_same_way(
    command: str, tmp_path, capsys
) -> None:
    # One resolver of the framework's repository: a bad project is a bad file (exit 4).
    inventory = tmp_path / "inv.yml"
    inventory.write_text("all: {hosts: {lab1: {ansible_host: 127.0.0.1, ansible_port: 9}}}\n")
    args = [command, "-i", str(inventory), "--project", str(tmp_path / "missing")]
    if command == "images":
        args = [
            "images",
            "--on",
            "all",
            "-i",
            str(inventory),
            "--project",
            str(tmp_path / "missing"),
        ]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 4, err
    assert "does not exist" in err and "--project DIR" in err

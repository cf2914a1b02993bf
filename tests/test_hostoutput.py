"""The one reader of what fleet's host programs print: sections, engine, store, Fact."""

from __future__ import annotations

import pytest

from fleet import hostoutput
from fleet.errors import HostError, HostOutputError
from fleet.hostoutput import (
    MAX_GATHER_LINES,
    Fact,
    engine_answered,
    engine_error,
    gathered,
    sections,
    store_in,
)
from fleet.ssh.base import CommandResult
from tests.fakes import FakeTransport

OUTPUT = (
    "@@engine\n27.5.1 \n@@engine_rc 0\n@@store\n\n  [driver-type io.containerd.snapshotter.v1]\n"
)


def test_sections_split_at_markers_and_keep_a_marker_s_value() -> None:
    parts = sections(OUTPUT)
    assert parts["engine"] == ["27.5.1 "]
    assert parts["engine_rc"] == ["0"]
    assert parts["store"] == ["", "  [driver-type io.containerd.snapshotter.v1]"]
    assert sections(OUTPUT, keep_blank=False, strip=True)["store"] == [
        "[driver-type io.containerd.snapshotter.v1]"
    ]


def test_the_engine_answered_only_with_a_zero_exit_and_a_version() -> None:
    assert engine_answered(sections(OUTPUT)) == "27.5.1"
    refused = sections("@@engine\npermission denied on docker.sock\n@@engine_rc 0\n")
    assert engine_answered(refused) is None
    assert engine_error(refused) == "permission denied on docker.sock"
    assert engine_answered(sections("@@engine\n27.5.1\n@@engine_rc 1\n")) is None
    assert engine_error({}) == "docker did not answer"


def test_the_store_is_read_from_driver_status_lines() -> None:
    assert store_in(sections(OUTPUT)["store"]) == "containerd"
    assert store_in(["[Backing Filesystem extfs]"]) == "classic"
    assert store_in([]) == ""


class _Host(FakeTransport):
    def __init__(self, printed: str) -> None:
        super().__init__("gpu1")
        self.printed = printed

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        return CommandResult(" ".join(argv), 3, self.printed, "", 0.0)


def test_a_fact_runs_its_program_with_arguments_and_parses_what_it_printed() -> None:
    host = _Host(OUTPUT)
    fact = Fact("the engine", "echo", engine_answered_of, "fleet-engine")
    # A non-zero exit is the parser's to read: the program prints its own exit codes.
    assert fact.gather(host, "a b", "--x") == "27.5.1"
    assert host.commands == [["sh", "-c", "echo", "fleet-engine", "a b", "--x"]]
    assert Fact("x", "true", len).argv() == ["sh", "-c", "true"]


def test_a_fact_refuses_output_past_the_line_cap_before_parsing() -> None:
    fact = Fact("the engine", "echo", engine_answered_of)
    with pytest.raises(HostOutputError, match="the engine: the host printed"):
        fact.gather(_Host("\n" * (MAX_GATHER_LINES + 1)))
    assert gathered("ok\n", "x") == "ok\n"


def engine_answered_of(text: str) -> str | None:
    return engine_answered(sections(text))


def test_a_host_programs_json_answer_is_its_last_line_else_the_hosts_error() -> None:
    assert hostoutput.json_answer("gpu1", "apt", 'noise\n{"changed": true}\n') == {"changed": True}
    for stdout in ("", "not json\n", "[1, 2]\n"):
        with pytest.raises(HostError, match=r"^gpu1: apt did not answer: (boom|not json|\[1, 2\])"):
            hostoutput.json_answer("gpu1", "apt", stdout, "boom" if not stdout else "")

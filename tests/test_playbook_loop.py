"""Playbook loops: items in order per host, judged per item, the task counted once in the recap,
registered as Ansible registers them. Hosts are fakes of fleet's own transport."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from fleet.errors import PlaybookError
from fleet.hosts import inventory as inventory_mod
from fleet.hosts.model import Host
from fleet.playbook import run as play
from fleet.playbook import schema as playbook
from fleet.playbook.run import PlaybookRun
from fleet.runner import Runner
from fleet.ssh.base import CommandResult
from tests.fakes import FakeTransport


class ShellHost(FakeTransport):
    """Runs nothing: a ``sh -c TEXT`` answers TEXT's words ('fail' exits 1)."""

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        text = argv[-1]
        return CommandResult(text, 1 if "fail" in text else 0, f"{self.host} {text}\n", "", 0.0)


class Quiet:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def run_book(
    tmp_path: Path,
    text: str,
    hosts: Sequence[str] = ("gpu1", "gpu2"),
    token: str | None = None,
) -> tuple[PlaybookRun, dict[str, ShellHost]]:
    """Run the playbook ``text`` on fake hosts; with ``token``, every host has that
    variable, marked secret."""
    book = tmp_path / "book.yml"
    book.write_text(text)
    inventory_file = tmp_path / "hosts.yml"
    extra = f", token: {token}" if token else ""
    inventory_file.write_text(
        "all:\n  hosts:\n" + "".join(f"    {h}: {{models: [{h}-a, {h}-b]{extra}}}\n" for h in hosts)
    )
    transports: dict[str, ShellHost] = {}

    def connect(host: Host) -> ShellHost:
        return transports.setdefault(host.name, ShellHost(host.name))

    player = play.Player(
        playbook.load(book),
        inventory_mod.load([inventory_file]),
        Runner(connect, forks=2),  # type: ignore[arg-type]
        play.PlayOptions(secret_names=frozenset({"token"} if token else ())),
        Quiet(),  # type: ignore[arg-type]
    )
    return player.play_all(), transports


LOOP = """
- hosts: all
  tasks:
    - name: each model
      exec: {shell: "get {{ item }} {{ i }}"}
      loop: ["{{ inventory_hostname }}-x", fail-y, z]
      loop_control: {index_var: i}
      when: item != 'z' or inventory_hostname == 'gpu1'
      register: got
    - name: what came back
      exec: {shell: "saw {{ got.results | map(attribute='rc', default='-') | join(',') }} {{ got.msg }}"}
      ignore_errors: true
"""


def test_items_run_in_order_and_the_task_is_counted_once(tmp_path: Path) -> None:
    run, hosts = run_book(tmp_path, LOOP.replace("ignore_errors: true", "ignore_errors: false"))
    for name in ("gpu1", "gpu2"):
        loop_commands = [c[-1] for c in hosts[name].commands if c[-1].startswith("get")]
        expected = [f"get {name}-x 0", "get fail-y 1"] + (["get z 2"] if name == "gpu1" else [])
        # a failed item does not stop the items after it
        assert loop_commands == expected
    first = run.tasks[0].result
    by_host = {r.host: r for r in first.results}
    assert by_host["gpu1"].outcome == "failed"
    assert by_host["gpu1"].reason is not None and by_host["gpu1"].reason.startswith("item fail-y:")
    items = by_host["gpu2"].details["loop"]
    assert [(i["item"], i["outcome"]) for i in items] == [
        ("gpu2-x", "changed"),
        ("fail-y", "failed"),
        ("z", "skipped"),
    ]
    # the recap counts the task once per host, as Ansible's does: a failed item fails it
    for name in ("gpu1", "gpu2"):
        counts = run.tallies[name].counts
        assert (counts["failed"], counts["ok"], counts["changed"], counts["skipped"]) == (
            1,
            0,
            0,
            0,
        )
    # a failed host leaves the play: the next task did not run on it
    assert [t.task for t in run.tasks] == ["each model"]


def test_a_registered_loop_holds_each_items_result(tmp_path: Path) -> None:
    book = LOOP.replace("fail-y", "y")
    _, hosts = run_book(tmp_path, book)
    said = [c[-1] for c in hosts["gpu1"].commands if c[-1].startswith("saw")]
    assert said == ["saw 0,0,0 All items completed"]
    # a skipped item is registered too, without an exit code
    said = [c[-1] for c in hosts["gpu2"].commands if c[-1].startswith("saw")]
    assert said == ["saw 0,0,- All items completed"]


def test_a_loop_from_a_variable_and_its_label(tmp_path: Path) -> None:
    run, hosts = run_book(
        tmp_path,
        """
- hosts: all
  tasks:
    - exec: {shell: "pull {{ model.key }}={{ model.value }}"}
      loop: "{{ {'weights': inventory_hostname} | dict2items }}"
      loop_control: {loop_var: model, label: "{{ model.key }}"}
    - exec: {shell: "fetch {{ item }}"}
      loop: "{{ models }}"
""",
    )
    assert [c[-1] for c in hosts["gpu2"].commands] == [
        "pull weights=gpu2",
        "fetch gpu2-a",
        "fetch gpu2-b",
    ]
    assert [i["item"] for i in run.tasks[0].result.results[0].details["loop"]] == ["weights"]


def test_an_empty_loop_skips_the_host(tmp_path: Path) -> None:
    run, hosts = run_book(tmp_path, "- hosts: all\n  tasks:\n    - exec: id\n      loop: []\n")
    assert {r.outcome for r in run.tasks[0].result.results} == {"skipped"}
    assert run.tallies["gpu1"].counts["skipped"] == 1
    assert all(not t.commands for t in hosts.values())


def test_a_loop_that_is_no_list_names_the_task_and_host(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError) as caught:
        run_book(tmp_path, "- hosts: all\n  tasks:\n    - exec: id\n      loop: '{{ 3 }}'\n")
    assert "plays[0].tasks[0].loop: expected a list, got int" in caught.value.message
    assert "on gpu1" in caught.value.message


@pytest.mark.parametrize(
    ("task", "said"),
    [
        ("{build: {}, loop: [a]}", "plays[0].tasks[0].loop: 'build' runs once on the controller"),
        ("{exec: id, with_items: [a]}", "plays[0].tasks[0].with_items: the with_* loops"),
        ("{exec: id, loop: 3}", "plays[0].tasks[0].loop: expected a list or a template"),
        ("{exec: id, loop: plain}", "plays[0].tasks[0].loop: expected a list or a template"),
        ("{exec: id, loop: '{{ x | shout }}'}", "No filter named 'shout'"),
        ("{exec: id, loop_control: {loop_var: x}}", "loop_control: applies to a task with loop"),
        ("{exec: id, loop: [a], loop_control: {var: x}}", "expected a mapping of index_var"),
        ("{exec: id, loop: [a], loop_control: {loop_var: groups}}", "expected a variable name"),
    ],
)
def test_bad_loops_are_refused_before_anything_runs(tmp_path: Path, task: str, said: str) -> None:
    book = tmp_path / "book.yml"
    book.write_text(f"- hosts: all\n  tasks:\n    - {task}\n")
    with pytest.raises(PlaybookError) as caught:
        playbook.load(book)
    assert said in str(caught.value), caught.value


def test_debug_shows_a_registered_result_through_ansibles_tests(tmp_path: Path) -> None:
    run, hosts = run_book(
        tmp_path,
        """
- hosts: all
  tasks:
    - exec: {shell: "x"}
      register: out
      changed_when: inventory_hostname == 'gpu1'
    - debug:
        msg: "{{ 'changed' if out is changed else 'same' }} {{ out.stdout | upper }}"
      when: out is succeeded and out is not skipped
""",
    )
    shown = {r.host: (r.outcome, r.reason) for r in run.tasks[1].result.results}
    assert shown == {"gpu1": ("ok", "changed GPU1 X"), "gpu2": ("ok", "same GPU2 X")}
    # debug runs nothing on the hosts
    assert [len(t.commands) for t in hosts.values()] == [1, 1]


def test_debug_may_not_show_a_secret(tmp_path: Path) -> None:
    book = "- hosts: all\n  tasks:\n    - debug: {msg: '{{ token }}'}\n"
    with pytest.raises(PlaybookError) as caught:
        run_book(tmp_path, book, ("gpu1",), token="s3cret")
    assert "the secret variable token" in caught.value.message
    assert "'debug', which shows them" in caught.value.message


def test_a_secret_item_is_redacted_in_its_label_and_output(tmp_path: Path) -> None:
    book = (
        "- hosts: all\n  tasks:\n    - exec: {shell: 'use {{ item }}'}\n"
        "      loop: ['{{ token }}', plain]\n"
    )
    run, _ = run_book(tmp_path, book, ("gpu1",), token="s3cret-value")
    (row,) = run.tasks[0].result.results
    assert [i["item"] for i in row.details["loop"]] == ["********", "plain"]
    assert "s3cret-value" not in repr(row)

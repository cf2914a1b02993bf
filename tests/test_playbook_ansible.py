"""Ansible's vocabulary in a playbook: module names and free forms read, modules fleet
lacks refused at load, and the keywords' semantics (handlers, blocks, until, run_once,
no_log, set_fact, become) on fakes of fleet's own transport. ansible-core itself is the
oracle in tests/test_ansible_play_e2e.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from fleet.errors import PlaybookError
from fleet.hosts import inventory as inventory_mod
from fleet.hosts.model import Host
from fleet.playbook import apt, crontab, dialect, lines, template
from fleet.playbook import run as play
from fleet.playbook import schema as playbook
from fleet.playbook.dialect import NO_LOG
from fleet.playbook.recap import PlaybookRun
from fleet.playbook.task import Task
from fleet.runner import Runner
from fleet.ssh.base import CommandResult
from tests.fakes import FakeTransport


class CountingHost(FakeTransport):
    """Answers a command with its words; 'fail' exits 1; 'count' prints how many times a
    count ran on this host (from 1)."""

    def __init__(self, host: str, become: bool) -> None:
        super().__init__(host)
        self.become = become
        self.counted = 0

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        text = " ".join(argv)
        if "count" in text:
            self.counted += 1
            return CommandResult(text, 0, f"{self.counted}\n", "", 0.0)
        return CommandResult(text, 1 if "fail" in text else 0, f"{self.host} {text}\n", "", 0.0)


class Quiet:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def run_book(
    tmp_path: Path, text: str, hosts: Sequence[str] = ("gpu1", "gpu2")
) -> tuple[PlaybookRun, list[CountingHost]]:
    book = tmp_path / "book.yml"
    book.write_text(text)
    inventory_file = tmp_path / "hosts.yml"
    inventory_file.write_text("all:\n  hosts:\n" + "".join(f"    {h}: {{}}\n" for h in hosts))
    opened: list[CountingHost] = []

    def connect(host: Host) -> CountingHost:
        opened.append(CountingHost(host.name, bool(host.vars.get("ansible_become"))))
        return opened[-1]

    player = play.Player(
        playbook.load(book),
        inventory_mod.load([inventory_file]),
        Runner(connect, forks=2),  # type: ignore[arg-type]
        play.PlayOptions(),
        Quiet(),  # type: ignore[arg-type]
    )
    return player.play_all(), opened


def refused(tmp_path: Path, text: str) -> PlaybookError:
    book = tmp_path / "book.yml"
    book.write_text(text)
    with pytest.raises(PlaybookError) as caught:
        playbook.load(book)
    assert caught.value.exit_code == 4
    return caught.value


def test_module_names_and_free_forms_read_as_ansible_reads_them() -> None:
    assert dialect.canonical("ansible.builtin.copy") == "copy"
    assert dialect.canonical("ansible.legacy.shell") == "shell"
    assert dialect.free_form("file", "path={{ root }}/b state=touch mode='0640'") == {
        "path": "{{ root }}/b",
        "state": "touch",
        "mode": "0640",
    }
    # command's own parameters come out of the command, wherever they are; quotes stay
    assert dialect.free_form("command", 'chdir=/tmp ls -l "a b" creates=/x') == {
        "chdir": "/tmp",
        "creates": "/x",
        "cmd": 'ls -l "a b"',
    }
    assert dialect.free_form("shell", "echo {{ a | default('x y') }} | wc -c") == {
        "cmd": "echo {{ a | default('x y') }} | wc -c"
    }
    assert dialect.free_form("debug", "hello there") == {"msg": "hello there"}
    with pytest.raises(PlaybookError, match="is not key=value"):
        dialect.free_form("file", "path=/x directory")


@pytest.mark.parametrize(
    ("module", "nearest"),
    [
        ("ansible.builtin.blockinfile", "nearest: copy"),
        ("package", "provision's install list"),
        ("community.docker.docker_container", "nearest: deploy"),
        ("community.general.ufw", "is not one fleet has"),
    ],
)
def test_a_module_fleet_lacks_is_refused_at_load_naming_the_nearest_step(
    tmp_path: Path, module: str, nearest: str
) -> None:
    error = refused(tmp_path, f"- hosts: all\n  tasks:\n    - ping:\n    - {module}: {{}}\n")
    assert f"book.yml:4: plays[0].tasks[1].{module}" in str(error)
    assert nearest in str(error)


@pytest.mark.parametrize(
    ("play", "said"),
    [
        ("  tasks:\n    - {ping: {}, notify: restart}\n", "no handler is named or listens to"),
        ("  become_method: su\n  tasks:\n    - ping:\n", "sudo only"),
        ("  vars_files: [nope.yml]\n  tasks:\n    - ping:\n", "does not exist"),
        ("  tasks:\n    - {ping: {}, delegate_to: web1}\n", "delegated to localhost only"),
        ("  tasks:\n    - {deploy: {}, delegate_to: localhost}\n", "it is not delegated"),
        ("  tasks:\n    - {ping: {}, loop: [1], until: 'true'}\n", "until with loop"),
        ("  tasks:\n    - {block: [{ping: {}}], register: x}\n", "not a key of a block"),
        ("  tasks:\n    - copy: {dest: /x}\n", "give either content or src"),
    ],
)
def test_keywords_are_checked_at_load(tmp_path: Path, play: str, said: str) -> None:
    assert said in str(refused(tmp_path, "- hosts: all\n" + play))


def test_a_block_passes_its_keywords_on_and_args_merge(tmp_path: Path) -> None:
    (tmp_path / "extra.yml").write_text("from_file: 1\n")
    book = tmp_path / "book.yml"
    book.write_text(
        "- hosts: all\n  vars_files: [extra.yml]\n  tasks:\n"
        "    - when: a\n      tags: [outer]\n      become: true\n      block:\n"
        "        - {command: ls, args: {chdir: /tmp}, when: b, tags: inner}\n"
        "    - {file: {dest: /x, state: absent}}\n"
    )
    loaded = playbook.load(book).plays[0]
    assert loaded.vars["from_file"] == 1
    (inner,) = loaded.tasks[0].block
    assert inner.when == "(a) and (b)" and inner.tags == ("outer", "inner")
    assert inner.become is True and inner.args == {"chdir": "/tmp", "cmd": "ls"}
    assert loaded.tasks[1].args == {"path": "/x", "state": "absent"}


def test_handlers_run_once_at_the_end_of_each_section_for_the_hosts_that_notified(
    tmp_path: Path,
) -> None:
    run, _ = run_book(
        tmp_path,
        "- hosts: all\n  tasks:\n"
        "    - {command: 'echo one', notify: h, when: inventory_hostname == 'gpu1'}\n"
        "    - {command: 'echo two', notify: [h, other]}\n"
        "    - {command: 'echo ok', changed_when: false, notify: other}\n"
        "  post_tasks:\n    - {command: 'echo post'}\n"
        "  handlers:\n"
        "    - {name: h, command: 'echo handler'}\n"
        "    - {name: later, listen: other, command: 'echo listened'}\n",
    )
    titles = [t.task for t in run.tasks]
    # handlers in the order written, once each, before post_tasks
    assert titles == ["command", "command", "command", "h", "later", "command"]
    assert [r.host for r in run.tasks[3].result.results] == ["gpu1", "gpu2"]


def test_a_rescued_block_counts_rescued_and_its_rescue_reads_the_failure(tmp_path: Path) -> None:
    run, hosts = run_book(
        tmp_path,
        "- hosts: all\n  tasks:\n"
        "    - block:\n"
        "        - {command: 'echo fine'}\n"
        "        - {command: 'fail now', when: inventory_hostname == 'gpu1'}\n"
        "        - {command: 'echo after'}\n"
        "      rescue:\n"
        "        - {command: 'echo rescued {{ ansible_failed_result.rc }}'}\n"
        "      always:\n"
        "        - {command: 'echo always'}\n"
        "    - {command: 'echo next'}\n",
    )
    assert run.tallies["gpu1"].counts["rescued"] == 1
    assert run.tallies["gpu1"].counts["failed"] == 0 and run.exit_code == 0
    ran = {h.host: [" ".join(c) for c in h.commands] for h in hosts}
    assert ran["gpu1"] == ["echo fine", "fail now", "echo rescued 1", "echo always", "echo next"]
    assert ran["gpu2"] == ["echo fine", "echo after", "echo always", "echo next"]


def test_until_retries_and_run_once_register_as_ansible_does(tmp_path: Path) -> None:
    run, hosts = run_book(
        tmp_path,
        "- hosts: all\n  tasks:\n"
        "    - {command: count, register: c, until: c.stdout | int >= 3, retries: 5, delay: 0}\n"
        "    - {command: 'echo {{ c.attempts }}'}\n"
        "    - command: count\n      register: d\n      until: d.stdout | int > 99\n"
        "      retries: 1\n      delay: 0\n      ignore_errors: true\n"
        "    - {command: 'echo {{ d.attempts }}'}\n"
        "    - {pause: {seconds: 0}, register: paused}\n"
        "    - {command: 'echo once', run_once: true, register: once}\n"
        "    - {command: 'echo {{ once.stdout }}'}\n",
    )
    by_host = {h.host: [" ".join(c) for c in h.commands] for h in hosts}
    # three attempts; then one try and one retry, the retries counted as its attempts
    assert by_host["gpu1"][:6] == ["count", "count", "count", "echo 3", "count", "count"]
    exhausted = run.tasks[2].result.results[0]
    assert exhausted.outcome == "failed" and "retries (1) exhausted" in str(exhausted.reason)
    assert by_host["gpu1"][6:] == ["echo 1", "echo once", "echo gpu1 echo once"]
    assert by_host["gpu2"][6:] == ["echo 1", "echo gpu1 echo once"]
    # pause and run_once: the first host runs them, every host registers the result
    assert [r.host for r in run.tasks[4].result.results] == ["gpu1"]
    assert [r.host for r in run.tasks[5].result.results] == ["gpu1"]


def test_no_log_hides_the_output_and_register_keeps_it(tmp_path: Path) -> None:
    run, _ = run_book(
        tmp_path,
        "- hosts: all\n  tasks:\n"
        "    - {command: 'echo hunter2', no_log: true, register: secret}\n"
        "    - {set_fact: {seen: '{{ secret.stdout }}'}}\n"
        "    - {assert: {that: \"seen is search('hunter2')\", success_msg: kept}}\n"
        "    - {assert: {that: [seen == 'x'], fail_msg: 'not x'}, ignore_errors: true}\n",
        hosts=("gpu1",),
    )
    hidden = run.tasks[0].result.results[0]
    assert hidden.reason == NO_LOG and "hunter2" not in hidden.stdout + str(hidden.details)
    assert run.tasks[2].result.results[0].reason == "kept"
    failed = run.tasks[3].result.results[0]
    assert failed.outcome == "failed" and str(failed.reason).startswith("not x")
    # Ansible's recap: ok counts changed tasks too; an ignored failure is ok and ignored
    assert run.tallies["gpu1"].counts == {
        "ok": 4,
        "changed": 1,
        "failed": 0,
        "unreachable": 0,
        "skipped": 0,
        "rescued": 0,
        "ignored": 1,
    }


def test_become_opens_its_own_connection_with_the_inventorys_become(tmp_path: Path) -> None:
    _, opened = run_book(
        tmp_path,
        "- hosts: all\n  tasks:\n    - command: id\n    - {command: id, become: true}\n",
        hosts=("gpu1",),
    )
    assert [(h.become, [" ".join(c) for c in h.commands]) for h in opened] == [
        (False, ["id"]),
        (True, ["id"]),
    ]


def test_a_one_expression_template_keeps_its_type_with_a_trailing_newline() -> None:
    assert template.render("{{ n }}\n", {"n": 1}) == 1
    assert template.render("{{ s }}\n", {"s": "text"}) == "text\n"
    assert template.render("x{{ n }}\n", {"n": 1}) == "x1\n"
    # a template file as the template module renders it: block tags leave no blank line
    text = "{% for i in xs %}\n{{ i }}\n{% endfor %}\n"
    assert template.render_text(text, {"xs": [1, 2]}) == "1\n2\n"


def test_lineinfile_edits_lines_as_ansible_does() -> None:
    text = "port=1\nworkers=2\n[gpu]\nmode=fast"
    assert lines.present(text, "port=2", regexp="^port=") == (
        "port=2\nworkers=2\n[gpu]\nmode=fast",
        "line replaced",
    )
    # appended after a last line that had no newline; a line already there is left alone
    assert lines.present(text, "log=x") == (text + "\nlog=x\n", "line added")
    assert lines.present(text, "workers=2") == (text, "")
    assert lines.present(text, "mem=8", insertafter=r"^\[gpu\]")[0].splitlines()[3] == "mem=8"
    assert lines.present(text, "# top", insertbefore="BOF")[0].startswith("# top\nport=1")
    assert lines.absent(text, regexp="^(port|mode)=") == ("workers=2\n[gpu]\n", 2)
    with pytest.raises(PlaybookError, match="not a regular expression"):
        lines.present(text, "x", regexp="(")
    # backrefs: the match's groups in the line; no match, no line
    rebuilt = lines.present(text, r"workers=\1 # was \g<0>", regexp=r"^workers=(\d)", backrefs=True)
    assert rebuilt[0].splitlines()[1] == "workers=2 # was workers=2"
    assert lines.present(text, r"x=\1", regexp=r"^threads=(\d)", backrefs=True) == (text, "")
    with pytest.raises(PlaybookError, match="names a group the regexp has not"):
        lines.present(text, r"\2", regexp=r"^port=(\d)", backrefs=True)
    # search_string: a plain string, not a pattern
    assert lines.present(text, "mode=slow", search_string="mode=")[0].endswith("mode=slow\n")
    assert lines.absent(text, search_string="[gpu]") == ("port=1\nworkers=2\nmode=fast", 1)


def test_cron_entries_are_named_as_ansibles_are() -> None:
    job = crontab.entry(["15", "3", "*", "*", "*"], "cleanup\n")
    assert job == "15 3 * * * cleanup"
    assert crontab.entry(["*"] * 5, "x", special="reboot", user="root", disabled=True) == (
        "#@reboot root x"
    )
    lines, changed = crontab.present(["MAILTO=ops", "15 3 * * * cleanup"], "nightly", job)
    # an unnamed line equal to the job gets the name
    assert (lines, changed) == (["MAILTO=ops", "#Ansible: nightly", job], True)
    assert crontab.present(lines, "nightly", job) == (lines, False)
    moved = crontab.entry(["30", "3", "*", "*", "*"], "cleanup")
    assert crontab.present(lines, "nightly", moved)[0][-1] == moved
    assert crontab.absent(lines, "nightly") == (["MAILTO=ops"], True)
    assert crontab.names(lines) == ["nightly"]
    printed = "# DO NOT EDIT THIS FILE - edit the master and reinstall.\n" + crontab.render(lines)
    assert crontab.read(printed) == lines


def test_a_commands_environment_names_variables(tmp_path: Path) -> None:
    _, hosts = run_book(
        tmp_path,
        "- hosts: all\n  vars: {env: {LANG: C.UTF-8}}\n  tasks:\n"
        "    - {command: 'echo $LANG', environment: '{{ env }}'}\n",
        hosts=("gpu1",),
    )
    assert hosts[0].commands == [["env", "LANG=C.UTF-8", "echo", "$LANG"]]
    with pytest.raises(PlaybookError, match="a mapping of variable names"):
        run_book(
            tmp_path,
            "- hosts: all\n  vars: {env: {'A=1 B': x}}\n  tasks:\n"
            "    - {command: 'true', environment: '{{ env }}'}\n",
        )


def test_apt_reads_packages_as_ansibles_list_and_refuses_what_it_cannot_do() -> None:
    task = Task(step="apt", args={}, name="apt", where="plays[0].tasks[0]", line=7)
    assert apt.packages_of(task, "hello, tree") == ["hello", "tree"]
    assert apt.packages_of(task, ["libc6:amd64"]) == ["libc6:amd64"]
    assert apt.packages_of(task, None) == []
    with pytest.raises(PlaybookError, match="versions and patterns are not supported"):
        apt.packages_of(task, "hello=2.10-3")
    with pytest.raises(PlaybookError, match="'--purge' is not a package name"):
        apt.packages_of(task, ["--purge"])


@pytest.mark.parametrize(
    ("tags", "only", "skip", "runs"),
    [
        (set(), "", "", True),
        ({"never"}, "", "", False),
        ({"never", "debug"}, "debug", "", True),
        ({"always"}, "setup", "", True),
        ({"always"}, "", "always", False),
        ({"always"}, "", "all", True),
        ({"setup"}, "", "all", False),
        (set(), "tagged", "", False),
        ({"x"}, "tagged", "", True),
        (set(), "untagged", "", True),
        ({"x"}, "", "tagged", False),
    ],
)
def test_tags_select_as_ansible_decides(tags: set[str], only: str, skip: str, runs: bool) -> None:
    words = (frozenset(w for w in text.split(",") if w) for text in (only, skip))
    assert play.tags_select(tags, *words) is runs


def test_a_host_that_failed_sits_out_the_later_plays(tmp_path: Path) -> None:
    run, hosts = run_book(
        tmp_path,
        "- hosts: all\n  tasks:\n"
        "    - {command: 'fail here', when: inventory_hostname == 'gpu1'}\n"
        "    - {command: 'echo first'}\n"
        "- hosts: all\n  tasks:\n"
        "    - {command: 'echo second'}\n",
    )
    ran = {h.host: [" ".join(c) for c in h.commands] for h in hosts}
    assert ran["gpu1"] == ["fail here"]
    assert ran["gpu2"] == ["echo first", "echo second"]
    assert run.tallies["gpu1"].counts["failed"] == 1 and run.exit_code == 2

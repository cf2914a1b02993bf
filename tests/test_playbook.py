"""Playbook validation, templating and conditions: no host needed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleet.errors import EXIT_BAD_FILE, PlaybookError, UndefinedError, UsageError
from fleet.playbook import run as play
from fleet.playbook import schema as playbook
from fleet.playbook import template
from tests.conftest import run_cli

BAD = Path(__file__).parent / "fixtures" / "playbooks" / "bad"
ROOT = Path(__file__).resolve().parents[1]

# Each broken playbook with what its error must say (file:line: dotted path: problem).
EXPECTED = {
    "unknown-argument.yml": (
        "unknown-argument.yml:5:",
        "plays[0].tasks[0].deploy.versoin: unknown argument",
    ),
    "unknown-step.yml": (
        "unknown-step.yml:4:",
        "plays[0].tasks[0].deplyo: unknown step or task key",
    ),
    "unknown-play-key.yml": ("unknown-play-key.yml:2:", "plays[0].taks: unknown play key"),
    "two-steps.yml": (
        "two-steps.yml:3:",
        "plays[0].tasks[0]: a task names exactly one step (found deploy, push)",
    ),
    "bad-serial.yml": (
        "bad-serial.yml:2:",
        "plays[0].serial: expected a number of hosts or a share",
    ),
    "wrong-type.yml": (
        "wrong-type.yml:3:",
        "plays[0].tasks[0].prune.keep: expected int, got str 'many'",
    ),
    "unsafe-when.yml": ("unsafe-when.yml:4:", "plays[0].tasks[0].when: "),
    "missing-required.yml": ("missing-required.yml:3:", "plays[0].tasks[0].copy.content: required"),
    "syntax.yml": ("syntax.yml:", "invalid YAML"),
    "python-tag.yml": ("python-tag.yml:3:", "is not allowed"),
    "billion-laughs.yml": ("billion-laughs.yml:", "billion laughs"),
    "bad-filter.yml": ("bad-filter.yml:3:", "No filter named 'shout'"),
    "bad-regex.yml": ("bad-regex.yml:1:", "plays[0].hosts: invalid regular expression"),
    "not-a-list.yml": ("not-a-list.yml:1:", "a playbook is a non-empty list of plays"),
    "exec-both.yml": ("exec-both.yml:3:", "plays[0].tasks[0].exec: give either command"),
}


def test_every_broken_playbook_has_an_expectation() -> None:
    assert sorted(p.name for p in BAD.glob("*.yml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_playbook_is_refused_with_its_location(name: str) -> None:
    where, message = EXPECTED[name]
    started = time.monotonic()
    with pytest.raises(PlaybookError) as caught:
        playbook.load(BAD / name)
    assert time.monotonic() - started < 30  # a hang guard, not a speed target
    text = str(caught.value)
    assert where in text, text
    assert message in text, text


def test_cli_exits_4_and_touches_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    ghost: {ansible_host: 127.0.0.1, ansible_port: 9}\n")
    code, out, err = run_cli(
        capsys, "play", str(BAD / "unknown-argument.yml"), "-i", str(inventory)
    )
    assert code == EXIT_BAD_FILE
    assert "versoin" in err
    assert "ghost" not in out + err  # validation came before any connection


def test_shipped_playbooks_are_valid() -> None:
    for path in sorted((ROOT / "playbooks").glob("*.yml")):
        book = playbook.load(path)
        assert book.plays and all(play.tasks for play in book.plays), path


def test_render_keeps_types_and_templates_strings() -> None:
    variables = {"port": 8339, "name": "lab1", "build": {"tag": "0.2.7"}}
    assert template.render("{{ port }}", variables) == 8339
    assert template.render("http://{{ name }}:{{ port }}/", variables) == "http://lab1:8339/"
    assert template.render({"v": ["{{ build.tag }}"]}, variables) == {"v": ["0.2.7"]}
    assert template.render("{{ missing | default('x') }}", variables) == "x"
    with pytest.raises(UndefinedError, match="'missing' is undefined"):
        template.render("{{ missing }}", variables)
    with pytest.raises(UndefinedError, match="'missing' is undefined"):
        template.render("port {{ missing }}", variables)


def test_jinja2_as_ansible_users_write_it() -> None:
    variables = {
        "msg": "x is defined",
        "empty": "",
        "other": "b",
        "version": "0.2.67",
        "groups": {"gpu": ["gpu01", "gpu02"], "all": ["gpu01", "gpu02"]},
        "path": "/data/projects/run.sh",
        "flag": "yes",
    }
    cases = {
        # The home-made evaluator rewrote inside string literals: this was False.
        'msg == "x is defined"': True,
        "empty or other": "b",  # a value, as Jinja returns it, not a bool
        "version is version('0.2.60', '>=')": True,
        "version is version('0.2.100', '<')": True,
        "groups['gpu'] | length": 2,
        "undefined_name | default('a') | upper": "A",
        "undefined_name | d('z')": "z",
        "path | basename": "run.sh",
        "path | dirname": "/data/projects",
        "flag | bool": True,
        "'GPU01' | lower in groups.gpu": True,
        "version | regex_replace('^0[.]', 'v')": "v2.67",
        "version | regex_search('[0-9]+$')": "67",
        "version is match('0[.]2')": True,
        "path is search('projects')": True,
        "groups.gpu | join(',')": "gpu01,gpu02",
        "groups.gpu | first": "gpu01",
        "[3, 1, 2] | max": 3,
        "{'a': 1} | to_json": '{"a": 1}',
        "'42' | int + 1": 43,
    }
    for text, expected in cases.items():
        assert template.expression(text, variables) == expected, text
    assert template.render("{{ groups.gpu | to_yaml }}", variables) == "[gpu01, gpu02]\n"


@pytest.mark.hostile
def test_templates_cannot_reach_python_or_change_variables() -> None:
    variables = {"x": 1, "items": [1, 2]}
    for text in (
        "x.__class__.__mro__",
        "items.append(3)",
        "lipsum.__globals__",
        "cycler.__init__.__globals__",
        "__import__('os')",
    ):
        with pytest.raises(PlaybookError):
            template.expression(text, variables)
    assert variables == {"x": 1, "items": [1, 2]}


def test_unknown_filters_and_syntax_errors_are_found_before_anything_runs() -> None:
    with pytest.raises(PlaybookError, match="No filter named 'shout'"):
        template.check("{{ x | shout }}")
    with pytest.raises(PlaybookError, match="No test named 'loud'"):
        template.check_condition("x is loud")
    with pytest.raises(PlaybookError):
        template.check("{{ x ")


def test_conditions() -> None:
    variables = {"inventory_hostname": "gpu01", "group_names": ["gpu", "rack1"], "n": 3}
    cases = {
        "inventory_hostname == 'gpu01'": True,
        "'rack1' in group_names and n > 2": True,
        "not (n >= 3)": False,
        "undefined_thing is defined": False,
        "undefined_thing is not defined": True,
        "n is defined or false": True,
        "true": True,
    }
    for text, expected in cases.items():
        task = playbook.Task("exec", {}, "", "t", 1, when=text)
        assert playbook.condition(task, variables) is expected, text


def test_condition_on_undefined_names_the_task() -> None:
    task = playbook.Task("exec", {}, "x", "plays[0].tasks[3]", 9, when="flavour == 'gpu'")
    with pytest.raises(
        PlaybookError, match=r"plays\[0\]\.tasks\[3\]\.when: 'flavour' is undefined"
    ):
        playbook.condition(task, {})


def test_register_and_the_outcome_keys_are_checked_before_anything_runs(tmp_path: Path) -> None:
    book = tmp_path / "book.yml"

    def refused(task: str) -> str:
        book.write_text(f"- hosts: all\n  tasks:\n    - {task}\n")
        with pytest.raises(PlaybookError) as failed:
            playbook.load(book)
        assert failed.value.exit_code == 4
        return str(failed.value)

    assert "fleet provides that variable" in refused("{exec: {shell: id}, register: groups}")
    assert "expected a variable name" in refused("{exec: {shell: id}, register: 'a b'}")
    assert "applies to exec tasks" in refused("{deploy: {}, changed_when: false}")
    assert "No filter named 'nope'" in refused("{exec: {shell: id}, failed_when: 'x | nope'}")
    book.write_text(
        "- hosts: all\n  tasks:\n    - exec: {shell: id}\n      register: out\n"
        "      when: [a == 1, 'b is defined']\n      changed_when: false\n"
    )
    task = playbook.load(book).plays[0].tasks[0]
    assert (task.register, task.when, task.changed_when) == (
        "out",
        "(a == 1) and (b is defined)",
        "false",
    )
    assert playbook.condition(task, {"a": 1, "b": 2}) and not playbook.condition(task, {"a": 1})


def test_a_registered_exec_result_has_ansibles_keys() -> None:
    from fleet.results import HostResult, Outcome

    task = playbook.Task("exec", {}, "", "t", 1, register="out")
    row = HostResult(
        "gpu01",
        Outcome.FAILED,
        "exit 2",
        details={"exit_code": 2},
        stdout="a\nb\n",
        stderr="oops\n",
    )
    value = play.registered_value(task, row)
    assert value["rc"] == 2 and value["failed"] and not value["changed"] and not value["skipped"]
    assert (value["stdout"], value["stdout_lines"]) == ("a\nb", ["a", "b"])
    assert (value["stderr"], value["stderr_lines"]) == ("oops", ["oops"])


def test_extra_vars(tmp_path: Path) -> None:
    extra = tmp_path / "vars.yml"
    extra.write_text("a: 1\nb: two\n")
    assert playbook.extra_vars(["x=1", f"@{extra}", "b=three"]) == {"x": "1", "a": 1, "b": "three"}
    with pytest.raises(UsageError):
        playbook.extra_vars(["no-equals"])
    with pytest.raises(PlaybookError):
        playbook.extra_vars([f"@{tmp_path / 'missing.yml'}"])


def test_push_and_deploy_say_how_the_image_travels(tmp_path: Path) -> None:
    book = tmp_path / "ship.yml"
    book.write_text(
        "- hosts: all\n"
        "  tasks:\n"
        "    - push: {via: registry, max_rate: 20M/s, max_rate_per_host: 5M}\n"
        "    - deploy: {via: registry, registry: 'harbor.lab:5000/ml'}\n"
    )
    tasks = playbook.load(book).plays[0].tasks
    assert play.shipping_options(tasks[0].args) == {
        "via": "registry",
        "registry": None,
        "max_rate": 20 * 1024**2,
        "max_rate_per_host": 5 * 1024**2,
    }
    assert play.shipping_options(tasks[1].args)["registry"] == "harbor.lab:5000/ml"
    with pytest.raises(UsageError, match="max_rate: 'fast'"):
        play.shipping_options({"max_rate": "fast"})


@pytest.mark.parametrize(
    ("task", "key"),
    [
        ("dir: {path: /data/../etc}", "dir.path"),
        ("copy: {dest: 'etc/cron.d/x', content: x}", "copy.dest"),
    ],
)
def test_a_host_path_climbing_out_or_relative_fails_every_host_and_runs_nothing(
    tmp_path: Path, task: str, key: str
) -> None:
    from fleet.hosts import inventory as inventory_mod
    from fleet.results import FleetResult

    class NoRunner:
        forks = 1

        def run(self, *args: object, **kwargs: object) -> FleetResult:
            raise AssertionError("a host was touched")

    class Silent:
        def __getattr__(self, name: str) -> object:
            return lambda *args: None

    book = tmp_path / "paths.yml"
    book.write_text(f"- hosts: all\n  tasks:\n    - {task}\n")
    hosts_file = tmp_path / "hosts.yml"
    hosts_file.write_text("all:\n  hosts:\n    gpu1:\n")
    inventory = inventory_mod.load([hosts_file])
    player = play.Player(
        playbook.load(book),
        inventory,
        NoRunner(),  # type: ignore[arg-type]
        play.PlayOptions(),
        Silent(),  # type: ignore[arg-type]
    )
    run = player.play_all()
    (row,) = run.tasks[0].result.results
    assert row.outcome == "failed"
    assert key in (row.reason or "") and "must be absolute, without '..'" in (row.reason or "")


# -- the write of copy and cron steps, run by this machine's own sh ----------------------------
@pytest.mark.hostile
def test_a_file_is_written_through_no_name_planted_in_a_shared_directory(tmp_path: Path) -> None:
    import os
    import subprocess

    shared = tmp_path / "projects"
    shared.mkdir()
    shared.chmod(0o2775)  # group-writable, not sticky: a member may plant names here
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    target = shared / "app.env"
    # Every name the write used to go through is a symlink to the victim.
    (shared / "app.env.fleet-tmp").symlink_to(victim)
    ran = subprocess.run(play._write_argv(str(target), "640"), input=b"new\n", check=False)
    assert ran.returncode == 0
    assert victim.read_text() == "victim\n" and oct(victim.stat().st_mode & 0o777) != "0o640"
    assert not target.is_symlink() and target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(os.listdir(shared)) == ["app.env", "app.env.fleet-tmp"]  # no temp file left
    # A failing step (chmod refuses the mode) leaves the target as it was and no temp file.
    failed = subprocess.run(
        play._write_argv(str(target), "9"), input=b"other\n", check=False, capture_output=True
    )
    assert failed.returncode != 0 and target.read_text() == "new\n"
    assert sorted(os.listdir(shared)) == ["app.env", "app.env.fleet-tmp"]


@pytest.mark.hostile
def test_a_file_is_read_for_its_diff_only_through_its_own_name(tmp_path: Path) -> None:
    import base64
    import subprocess

    victim = tmp_path / "shadow"
    victim.write_text("root:$6$hash:19000::::::\n")
    planted = tmp_path / "app.env"
    planted.symlink_to(victim)  # what the name holds when the diff reads it
    ran = subprocess.run(
        play._stat_argv(str(planted), content=True), check=False, capture_output=True
    )
    assert ran.stdout.decode().startswith("symbolic link|")
    assert base64.b64encode(victim.read_bytes()) not in ran.stdout
    real = tmp_path / "real.env"
    real.write_text("mine\n")
    ran = subprocess.run(play._stat_argv(str(real), content=True), check=False, capture_output=True)
    assert ran.stdout.decode().splitlines()[1:] == [base64.b64encode(b"mine\n").decode()]

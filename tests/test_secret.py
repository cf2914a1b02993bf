"""Secret variables: what is redacted, what is refused, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet import play as play_mod
from fleet import playbook
from fleet.errors import PlaybookError, UsageError
from fleet.inventory import empty
from fleet.results import FleetResult, HostResult, Outcome
from fleet.secret import REDACTED, Secrets


def test_values_are_collected_from_every_source_longest_first() -> None:
    secrets = Secrets.of(
        ["token", "pair"],
        [{"token": "abc", "other": "visible"}, {"pair": {"user": "u1", "password": "abcdef"}}],
    )
    assert secrets.values == ("abcdef", "abc", "u1")
    assert secrets.redact("x abcdef y abc") == f"x {REDACTED} y {REDACTED}"
    assert not Secrets.of(["nothing"], [{"token": "abc"}])


def test_redaction_reaches_every_field_of_a_result() -> None:
    secrets = Secrets.of(["token"], [{"token": "s3cr3t"}])
    row = HostResult(
        "gpu01",
        Outcome.FAILED,
        "exit 3 running 'echo s3cr3t'",
        fix="rotate s3cr3t",
        details={"diff": ["+token=s3cr3t"], "exit_code": 3},
        stdout="s3cr3t\n",
        stderr="s3cr3t",
    )
    text = repr(secrets.result(FleetResult.of("exec", [row])))
    assert "s3cr3t" not in text
    assert "exit_code': 3" in text


def test_found_in_nested_arguments() -> None:
    secrets = Secrets.of(["token"], [{"token": "s3cr3t"}])
    assert secrets.found_in({"a": ["x", {"b": "pre-s3cr3t"}]})
    assert not secrets.found_in({"a": ["x", 3, None]})


def _book(tmp_path: Path, task: str) -> playbook.Playbook:
    path = tmp_path / "book.yml"
    path.write_text(f"- name: p\n  hosts: all\n  tasks:\n{task}")
    return playbook.load(str(path))


class _NoHosts:
    """A runner that must never be used: the refusals happen before any host."""

    forks = 1

    def run(self, *args: object, **kwargs: object) -> FleetResult:
        raise AssertionError("a host was touched")


class _Silent:
    def play_started(self, *args: object) -> None: ...

    def task_started(self, *args: object) -> None: ...

    def task_finished(self, *args: object) -> None: ...


@pytest.mark.parametrize(
    "task",
    [
        '    - deploy: {version: "0.2.{{ token }}"}\n',
        '    - build: {tag_prefix: "{{ token | default(1) }}"}\n',
    ],
)
def test_a_secret_in_a_recording_step_is_refused_before_any_host(tmp_path: Path, task: str) -> None:
    book = _book(tmp_path, task)
    options = play_mod.PlayOptions(extra={"token": "s3cr3t"}, secret_names=frozenset({"token"}))
    player = play_mod.Player(book, empty(), _NoHosts(), options, _Silent())  # type: ignore[arg-type]
    with pytest.raises(PlaybookError) as caught:
        player.prepare()
    assert "book.yml:4" in str(caught.value)
    assert "secret variable token" in str(caught.value)


def test_secret_files_are_read_safely(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yml"
    bomb.write_text(
        "a: &a ['x','x','x','x','x','x','x','x','x']\n"
        + "".join(
            f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi")
        )
    )
    with pytest.raises(PlaybookError) as caught:
        playbook.vars_file(f"@{bomb}")
    assert str(bomb) in str(caught.value)
    tagged = tmp_path / "tagged.yml"
    tagged.write_text("x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(PlaybookError):
        playbook.vars_file(f"@{tagged}")
    with pytest.raises(UsageError):
        playbook.extra_vars(["no-equals"])


def test_a_secret_reaching_a_recording_step_through_play_vars_is_refused_there(
    tmp_path: Path,
) -> None:
    from fleet import inventory

    hosts = tmp_path / "hosts.yml"
    hosts.write_text("all:\n  hosts:\n    gpu1:\n")
    path = tmp_path / "book.yml"
    path.write_text(
        "- name: p\n  hosts: all\n  vars: {tag: '{{ token }}'}\n  tasks:\n"
        "    - deploy: {version: '{{ tag }}'}\n"
    )
    options = play_mod.PlayOptions(extra={"token": "s3cr3t"}, secret_names=frozenset({"token"}))
    player = play_mod.Player(
        playbook.load(str(path)),
        inventory.load([hosts]),
        _NoHosts(),  # type: ignore[arg-type]
        options,
        _Silent(),
    )
    player.prepare()  # the template names 'tag', not the secret: only its value tells
    with pytest.raises(PlaybookError) as caught:
        player.play_all()
    assert "book.yml:5" in str(caught.value) and "on gpu1" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)

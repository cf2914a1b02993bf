"""Secret variables: what is redacted, what is refused, before anything runs."""

from __future__ import annotations

import difflib
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from fleet.errors import CommandError, HostError, PlaybookError, UnreachableError, UsageError
from fleet.hosts import inventory
from fleet.hosts.model import empty
from fleet.ops import hostfiles
from fleet.ops.files import DIFF_HIDDEN
from fleet.playbook import run as play_mod
from fleet.playbook import schema as playbook
from fleet.playbook.secret import COMMAND_HIDDEN, MIN_LINE, REDACTED, Secrets
from fleet.playbook.template import Taint, render, tracking
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import Runner
from fleet.ssh.base import CommandResult
from tests import fakes


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


# -- every rendering of a secret is redacted (issue 19) ------------------------------------
QUOTED = "pa'ss w0rd\\x"  # a quote, a space and a backslash: every renderer changes it
MULTI = "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\n  hkiG9w0BAQEFAASC\n}\n-----END KEY-----\n"


def _secrets(*values: str) -> Secrets:
    return Secrets.of(["token"], [{"token": list(values)}])


@pytest.mark.hostile
@pytest.mark.parametrize(
    "rendering",
    [
        shlex.quote(QUOTED),
        shlex.join(["echo", QUOTED]),
        # sh -c 'echo SECRET': the secret inside a longer quoted word, as '"'"' pieces
        shlex.join(["sh", "-c", f"echo {QUOTED} >&2"]),
        # a command run under sudo: the same words behind a prefix
        shlex.join(["sudo", "-n", "-H", "--", "sh", "-c", f"printf %s {QUOTED}"]),
    ],
    ids=["shlex.quote", "shlex.join", "inside a quoted word", "under sudo"],
)
def test_a_shell_quoted_secret_is_redacted(rendering: str) -> None:
    redacted = _secrets(QUOTED).redact(f"command exited 3: {rendering}")
    assert REDACTED in redacted
    assert "pa" not in redacted and "w0rd" not in redacted


@pytest.mark.hostile
@pytest.mark.parametrize(
    "rendering",
    [
        repr(QUOTED),
        str([QUOTED, "x"]),
        repr(("x", QUOTED)),
        repr(f'say "{QUOTED}"'),  # both quotes: repr escapes the single ones
        repr("it's " + QUOTED.replace("'", "")),  # a single quote: repr picks "..."
        # a timeout message: the repr of a shell-quoted command line
        f"timed out after 1s running {shlex.join(['sh', '-c', f'sleep 9; echo {QUOTED}'])!r}",
        # and that message in a list's repr (a tuple of exception args)
        repr((f"running {shlex.join(['echo', QUOTED])!r}",)),
    ],
    ids=[
        "repr",
        "str of list",
        "repr of tuple",
        "both quotes",
        "double quotes",
        "timeout",
        "nested",
    ],
)
def test_a_repr_secret_is_redacted(rendering: str) -> None:
    secrets = _secrets(QUOTED, "it's " + QUOTED.replace("'", ""))
    redacted = secrets.redact(rendering)
    assert REDACTED in redacted
    assert "w0rd" not in redacted


@pytest.mark.hostile
@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("value", [QUOTED, 'q"uo\tte\nnew-line', "pässwörd-ünïcode"])
def test_a_json_escaped_secret_is_redacted(value: str, ensure_ascii: bool) -> None:
    document = json.dumps({"stdout": f"got {value} here"}, ensure_ascii=ensure_ascii)
    redacted = _secrets(value).redact(document)
    assert REDACTED in redacted
    assert json.loads(redacted) == {"stdout": f"got {REDACTED} here"}
    # and a JSON document of a command line (json.dumps of a shell-quoted secret)
    line = json.dumps(shlex.join(["echo", value]), ensure_ascii=ensure_ascii)
    assert json.loads(_secrets(value).redact(line)) == f"echo '{REDACTED}'"


@pytest.mark.hostile
def test_each_line_of_a_multi_line_secret_is_redacted_in_a_diff() -> None:
    diff = "".join(
        difflib.unified_diff(
            ["old\n"], ["key: |\n", *("  " + line for line in MULTI.splitlines(True))], "a", "b"
        )
    )
    redacted = _secrets(MULTI).redact(diff)
    for line in MULTI.splitlines():
        if len(line.strip()) >= MIN_LINE:
            assert line.strip() not in redacted
    assert redacted.count(REDACTED) == 4
    # Short lines are the file's structure, not the secret: they stay, and so does "old".
    assert "+  }" in redacted and "-old" in redacted


@pytest.mark.hostile
def test_a_multi_line_secret_is_redacted_line_by_line_wherever_a_line_shows() -> None:
    secrets = _secrets(MULTI)
    # A line alone (a tail of stderr), JSON-escaped, shell-quoted, repr'd.
    for text in (
        "    MIIEvQIBADANBgkq",
        json.dumps({"err": "line hkiG9w0BAQEFAASC"}),
        shlex.join(["echo", "x hkiG9w0BAQEFAASC"]),
        repr(["-----END KEY-----"]),
    ):
        redacted = secrets.redact(text)
        assert "MIIEvQ" not in redacted and "hkiG9w" not in redacted and "END KEY" not in redacted
    assert secrets.redact("} and -- and abc") == "} and -- and abc"


# -- a task holding a secret shows no command line and no diff -----------------------------
def test_a_failed_command_holding_a_secret_says_only_its_code_and_output() -> None:
    secrets = _secrets(QUOTED)
    argv = ["sh", "-c", "x" * 122 + f" {QUOTED} " + "y" * 40]
    # The message abbreviates a long command line, here in the middle of the secret: what
    # is left of it matches no rendering, so redaction alone would let it through.
    failed = CommandError("gpu1", shlex.join(argv), 3, "", "bad thing\n")
    assert "pa'" in secrets.redact(failed.message) and "w0rd" not in failed.message
    hidden = secrets.hide_commands_in_error(failed, [argv])
    assert type(hidden) is HostError
    assert hidden.reason == f"command exited 3: {COMMAND_HIDDEN}\n    bad thing"
    assert "xxx" not in hidden.message
    timeout = HostError("gpu1", f"timed out after 1s running {shlex.join(argv)!r}", fix="wait")
    assert secrets.hide_commands_in_error(timeout, [argv]).reason == (
        f"timed out after 1s running '{COMMAND_HIDDEN}'"
    )
    gone = UnreachableError("gpu1", f"connection lost while running {shlex.join(argv)!r}")
    assert isinstance(secrets.hide_commands_in_error(gone, [argv]), UnreachableError)


class _Host(fakes.FakeTransport):
    """A host with one file on it, and a command that fails or times out."""

    def __init__(self, host: str, files: dict[str, bytes], exec_fails: str = "") -> None:
        super().__init__(host)
        self.files = files
        self.exec_fails = exec_fails
        self.written: dict[str, tuple[bytes, str]] = {}

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        command = shlex.join(argv)
        if argv[: len(hostfiles.SAFE_PATH)] == list(hostfiles.SAFE_PATH):
            op, _root, path, *rest = argv[len(hostfiles.SAFE_PATH) :]
            if op == "stat" and path not in self.files:
                return CommandResult(command, 0, '{"kind": "absent"}\n', "", 0.0)
            if op == "stat":
                data = self.files[path].hex()
                found = {"kind": "regular file", "mode": "644", "user": "root", "content": data}
                return CommandResult(command, 0, json.dumps(found) + "\n", "", 0.0)
            if op == "write":
                self.written[path] = (stdin or b"", rest[0].lstrip("0"))
                return CommandResult(command, 0, "", "", 0.0)
        if self.exec_fails == "timeout":
            raise HostError(self.host, f"timed out after 1s running {command!r}", fix="wait")
        return CommandResult(command, 3, "", f"sh: {argv[-1]}: not found\n", 0.0)


def _play(
    tmp_path: Path, book: playbook.Playbook, transport: _Host, *, diff: bool, secret: str
) -> dict[str, Any]:
    """Run ``book`` on one fake host, as 'fleet play --json' does; its redacted document."""
    hosts = tmp_path / "hosts.yml"
    hosts.write_text("all:\n  hosts:\n    gpu1:\n")
    options = play_mod.PlayOptions(
        diff=diff, extra={"token": secret}, secret_names=frozenset({"token"})
    )
    player = play_mod.Player(
        book, inventory.load([hosts]), Runner(lambda _: transport), options, _Silent()
    )
    player.prepare()
    document: dict[str, Any] = player.secrets.redact(player.play_all().to_json())
    return document


def _run(
    tmp_path: Path, tasks: str, transport: _Host, *, diff: bool = False, secret: str = QUOTED
) -> dict[str, Any]:
    return _play(tmp_path, _book(tmp_path, tasks), transport, diff=diff, secret=secret)


@pytest.mark.hostile
def test_copy_of_a_secret_shows_no_diff_and_is_written_for_its_owner_only(tmp_path: Path) -> None:
    transport = _Host("gpu1", {"/etc/app.env": b"token=old\n"})
    tasks = '    - copy: {dest: /etc/app.env, content: "token={{ token }}\\n"}\n'
    document = _run(tmp_path, tasks, transport, diff=True, secret=MULTI)
    [row] = document["tasks"][0]["hosts"].values()
    assert row["details"]["diff"] == DIFF_HIDDEN
    assert "MIIEvQ" not in json.dumps(document)
    assert transport.written["/etc/app.env"] == (f"token={MULTI}\n".encode(), "600")


def test_copy_without_a_secret_still_shows_its_diff(tmp_path: Path) -> None:
    transport = _Host("gpu1", {"/etc/app.env": b"token=old\n"})
    tasks = '    - copy: {dest: /etc/app.env, content: "token=new\\n"}\n'
    [row] = _run(tmp_path, tasks, transport, diff=True)["tasks"][0]["hosts"].values()
    assert "-token=old\n+token=new" in row["details"]["diff"]
    assert transport.written["/etc/app.env"] == (b"token=new\n", "644")


@pytest.mark.hostile
@pytest.mark.parametrize("mode", ["'0644'", "0640", "'0604'"])
def test_copy_of_a_secret_readable_by_others_is_refused_before_any_host(
    tmp_path: Path, mode: str
) -> None:
    book = _book(
        tmp_path, f'    - copy: {{dest: /etc/x, content: "{{{{ token }}}}", mode: {mode}}}\n'
    )
    options = play_mod.PlayOptions(extra={"token": "s3cr3t"}, secret_names=frozenset({"token"}))
    player = play_mod.Player(book, empty(), _NoHosts(), options, _Silent())  # type: ignore[arg-type]
    with pytest.raises(PlaybookError) as caught:
        player.prepare()
    assert caught.value.exit_code == 4
    assert "book.yml:4" in str(caught.value) and "lets others than the owner read it" in str(
        caught.value
    )


@pytest.mark.hostile
def test_copy_of_a_secret_through_play_vars_with_a_loose_mode_is_refused(tmp_path: Path) -> None:
    transport = _Host("gpu1", {})
    path = tmp_path / "book.yml"
    path.write_text(
        "- name: p\n  hosts: all\n  vars: {line: 'x={{ token }}'}\n  tasks:\n"
        "    - copy: {dest: /etc/x, content: '{{ line }}', mode: '0644'}\n"
    )
    with pytest.raises(PlaybookError) as caught:
        # The template names 'line', not the secret: only its value, once rendered, tells.
        _play(tmp_path, playbook.load(str(path)), transport, diff=False, secret="s3cr3t")
    assert "book.yml:5" in str(caught.value) and "s3cr3t" not in str(caught.value)
    assert transport.written == {}


@pytest.mark.hostile
def test_cron_files_are_for_root_only(tmp_path: Path) -> None:
    transport = _Host("gpu1", {})
    tasks = "    - cron: {name: sync, schedule: '@daily', job: 'sync --token {{ token }}'}\n"
    document = _run(tmp_path, tasks, transport, diff=True)
    content, mode = transport.written["/etc/cron.d/fleet-sync"]
    assert mode == "600" and QUOTED.encode() in content
    [row] = document["tasks"][0]["hosts"].values()
    assert row["details"]["diff"] == DIFF_HIDDEN


@pytest.mark.hostile
@pytest.mark.parametrize("failure", ["exit", "timeout"])
def test_a_failed_exec_holding_a_secret_shows_no_command_line(tmp_path: Path, failure: str) -> None:
    transport = _Host("gpu1", {}, exec_fails=failure)
    tasks = "    - exec: {command: [notthere, '--token={{ token }}']}\n"
    document = _run(tmp_path, tasks, transport)
    [row] = document["tasks"][0]["hosts"].values()
    assert row["outcome"] == "failed"
    assert COMMAND_HIDDEN in row["reason"]
    assert "notthere" not in row["reason"]
    text = json.dumps(document)
    assert "w0rd" not in text and "pa'" not in text


# -- secrets through filters, calls, slices and formats -----------------------------------
TOKEN = "s3cr3t-t0ken'<&>\"/x y"  # every filtered form differs from the value itself


@pytest.mark.hostile
@pytest.mark.parametrize(
    "expression",
    [
        "token | to_yaml",
        "{'t': token} | to_yaml",
        "token | tojson",
        "token | to_json",
        "token | urlencode",
        "token | escape",
        "token | b64encode",
        "('Bearer ' ~ token) | b64encode",
        "token | upper",
        "token | replace('t', 'T')",
        "token | reverse",
        "token.upper()",
        "'%s!' % token",
        "token[2:]",
        "[token] | map('upper') | list",
    ],
)
def test_a_secret_passed_through_a_filter_is_redacted_in_every_form(
    tmp_path: Path, expression: str
) -> None:
    """The review's leak: redaction matched only the literal value, so a filtered form
    was shown, a copy of it got mode 0644, its diff was shown and a failed exec printed
    its command line."""
    transport = _Host("gpu1", {"/etc/app.env": b"old\n"}, exec_fails="exit")
    template = json.dumps("{{ " + expression + " }}")
    tasks = (
        f"    - copy: {{dest: /etc/app.env, content: {template}}}\n"
        f"    - exec: {{command: [notthere, {template}]}}\n"
    )
    document = _play(tmp_path, _book(tmp_path, tasks), transport, diff=True, secret=TOKEN)
    copy, failed = (next(iter(t["hosts"].values())) for t in document["tasks"])
    assert copy["details"]["diff"] == DIFF_HIDDEN
    (content, mode) = transport.written["/etc/app.env"]
    assert mode == "600", expression  # held a secret, so its owner's alone
    assert failed["outcome"] == "failed" and COMMAND_HIDDEN in failed["reason"]
    shown = json.dumps(document)
    assert content.decode() not in shown
    assert "s3cr3t" not in shown.lower() and "S3CR3T" not in shown


@pytest.mark.hostile
@pytest.mark.parametrize(
    "expression", ["token[:3]", "token | first", "token | truncate(4, True, '')", "'%.3s' % token"]
)
def test_a_short_piece_of_a_secret_is_refused(tmp_path: Path, expression: str) -> None:
    transport = _Host("gpu1", {})
    tasks = f"    - exec: {{command: [echo, {json.dumps('{{ ' + expression + ' }}')}]}}\n"
    with pytest.raises(PlaybookError, match="short piece of text") as caught:
        _play(tmp_path, _book(tmp_path, tasks), transport, diff=False, secret=TOKEN)
    assert caught.value.fix and "book.yml" in str(caught.value)
    assert transport.commands == []


def test_values_that_only_pass_a_secret_along_are_not_secrets() -> None:
    variables = {"token": TOKEN, "hosts": ["gpu1", "gpu2"]}
    with tracking(Taint((TOKEN,))) as taint:
        joined = render("{{ [token, 'visible-words'] | join(',') }}", variables)
        picked = render("{{ {'a': token, 'b': 'visible-value'}['b'] | upper }}", variables)
        counted = render("{{ token | length }}", variables)
        assert taint.derived == set()
        upper = render("{{ token | upper }}", variables)
        assert taint.derived == {upper}
    assert joined == f"{TOKEN},visible-words" and picked == "VISIBLE-VALUE"
    assert counted == len(TOKEN)


@pytest.mark.hostile
@pytest.mark.parametrize("text", ["a: *Xk9pq2\n", "a: [Xk9pq2\n", "a: 'Xk9pq2\n", "a: !Xk9pq2 x\n"])
def test_a_broken_secrets_file_never_quotes_its_text(tmp_path: Path, text: str) -> None:
    secrets = tmp_path / "secrets.yml"
    secrets.write_text(text)
    with pytest.raises(PlaybookError) as caught:
        playbook.vars_file(f"@{secrets}", secret=True)
    assert "Xk9pq2" not in str(caught.value) and "Xk9pq2" not in str(caught.value.fix)
    assert str(secrets) in str(caught.value) and caught.value.line is not None
    # The same file as plain variables says what the problem is.
    with pytest.raises(PlaybookError):
        playbook.vars_file(f"@{secrets}")

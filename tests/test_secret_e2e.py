"""End to end on the lab: a secret used on the hosts never shows in output, JSON or history."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.ops.files import DIFF_HIDDEN
from fleet.playbook.secret import COMMAND_HIDDEN, REDACTED
from tests.conftest import LabFixture, host_sh, run_cli

pytestmark = pytest.mark.lab
TOKEN = "tok-7Hq2-not-for-logs"
DEST = "/tmp/fleet-secret-test"


def test_secret_is_used_on_hosts_and_redacted_everywhere(
    lab_env: LabFixture, fast_inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = tmp_path / "secret.yml"
    book.write_text(
        "- name: use a token\n"
        "  hosts: all\n"
        "  tasks:\n"
        "    - name: write it\n"
        f'      copy: {{dest: {DEST}, content: "token={{{{ token }}}}\\n", mode: "0600"}}\n'
        "    - name: say it and fail\n"
        '      exec: {shell: "echo out {{ token }}; echo err {{ token }} >&2; exit 3"}\n'
        "      ignore_errors: true\n"
    )
    secrets = tmp_path / "secrets.yml"
    secrets.write_text(f"token: {TOKEN}\n")
    hosts = [h.name for h in lab_env.lab.hosts]
    for name in hosts:
        host_sh(lab_env, name, "rm", "-f", DEST)
    argv = ["play", str(book), "-i", str(fast_inventory), "--retry-file", "/dev/null", "--diff"]
    code, out, err = run_cli(capsys, *argv, "--secret", f"@{secrets}")
    assert code == 0, out + err
    assert TOKEN not in out + err
    # Neither the copy's diff nor the failed command's line is shown: both hold the token.
    assert DIFF_HIDDEN in out + err and COMMAND_HIDDEN in out + err
    code, out, err = run_cli(capsys, *argv, "-e", f"token={TOKEN}", "--secret", "token", "--json")
    assert code == 0, out + err
    assert TOKEN not in out + err
    assert '"exit_code": 3' in out
    for name in hosts:
        # It was really used on the host, and the host's history does not have it.
        assert host_sh(lab_env, name, "cat", DEST) == f"token={TOKEN}\n"
        history = host_sh(lab_env, name, "sh", "-c", "cat /var/lib/fleet/history.jsonl || true")
        assert TOKEN not in history
        host_sh(lab_env, name, "rm", "-f", DEST)


def test_secret_in_a_deploy_argument_is_refused_before_any_host(
    lab_env: LabFixture, fast_inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = tmp_path / "leak.yml"
    book.write_text(
        "- name: leak\n"
        "  hosts: all\n"
        "  tasks:\n"
        "    - exec: {command: [touch, /tmp/fleet-secret-ran]}\n"
        '    - deploy: {version: "{{ token }}"}\n'
    )
    argv = ["play", str(book), "-i", str(fast_inventory), "-e", f"token={TOKEN}"]
    code, out, err = run_cli(capsys, *argv, "--secret", "token")
    assert code == 4
    assert f"{book}:5" in err and "secret variable token" in err
    assert TOKEN not in out + err
    for host in lab_env.lab.hosts:
        assert (
            host_sh(lab_env, host.name, "sh", "-c", "test -e /tmp/fleet-secret-ran || echo absent")
            == "absent\n"
        )


# -- the leaks of issue 19: every rendering of a secret, in text and --json ----------------
KEY = (
    "-----BEGIN FLEET TEST KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
    "  BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "-----END FLEET TEST KEY-----\n"
)
QUOTED = 'it\'s-a-s3cret "p4ss"'
MARKS = ("MIIEvQ", "BKcwgg", "FLEET TEST KEY", "s3cret", "p4ss")


def _play(
    capsys: pytest.CaptureFixture[str],
    inventory: Path,
    book: Path,
    secrets: Path,
    *extra: str,
    before: Callable[[], object] = lambda: None,
) -> tuple[int, str, dict[str, Any]]:
    """Run the playbook twice (text, then --json), each after ``before`` (which sets the
    hosts up): the exit code, all text, the JSON document."""
    argv = ["play", str(book), "-i", str(inventory), "--retry-file", "/dev/null"]
    before()
    code, out, err = run_cli(capsys, *argv, "--secret", f"@{secrets}", *extra)
    before()
    json_code, json_out, json_err = run_cli(
        capsys, *argv, "--secret", f"@{secrets}", *extra, "--json"
    )
    assert code == json_code, out + err + json_out + json_err
    return code, out + err + json_out + json_err, json.loads(json_out)


def _rows(document: dict[str, Any], task: int) -> list[dict[str, Any]]:
    return list(document["tasks"][task]["hosts"].values())


@pytest.mark.hostile
def test_a_multi_line_secret_in_a_copy_with_diff_shows_nowhere(
    lab_env: LabFixture, fast_inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = "/tmp/fleet-secret-key.pem"
    book = tmp_path / "key.yml"
    book.write_text(
        "- hosts: all\n  tasks:\n"
        f"    - copy: {{dest: {dest}, content: '{{{{ key }}}}'}}\n"
        f"    - exec: {{command: [sed, 's/^/> /', {dest}]}}\n"
    )
    secrets = tmp_path / "secrets.yml"
    secrets.write_text(yaml.safe_dump({"key": KEY}))
    hosts = [h.name for h in lab_env.lab.hosts]

    def old_file() -> None:
        for name in hosts:
            host_sh(lab_env, name, "sh", "-c", f"printf 'old\\n' > {dest}")

    code, text, document = _play(capsys, fast_inventory, book, secrets, "--diff", before=old_file)
    assert code == 0, text
    for mark in MARKS[:3]:
        assert mark not in text
    assert DIFF_HIDDEN in text  # both the text view and the JSON document say why
    assert all(row["details"]["diff"] == DIFF_HIDDEN for row in _rows(document, 0))
    # The file's content, echoed back line by line by a command, is redacted line by line.
    lines = f"> {REDACTED}\n> {REDACTED}\n>   {REDACTED}\n> {REDACTED}\n"  # indentation stays
    assert [row["stdout"] for row in _rows(document, 1)] == [lines] * 2
    for name in hosts:
        assert host_sh(lab_env, name, "cat", dest) == KEY
        assert host_sh(lab_env, name, "stat", "-c", "%a", dest) == "600\n"
        host_sh(lab_env, name, "rm", "-f", dest)


@pytest.mark.hostile
def test_a_failed_or_timed_out_command_holding_a_quoted_secret_shows_no_command_line(
    lab_env: LabFixture, fast_inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = tmp_path / "fail.yml"
    book.write_text(
        "- hosts: all\n  tasks:\n"
        "    - name: fails\n"
        "      exec: {command: [sh, -c, 'echo \"no: $1\" >&2; exit 3', x, '{{ token }}']}\n"
        "      ignore_errors: true\n"
        "    - name: times out\n"
        "      exec: {command: [sh, -c, 'sleep 20', x, '--password={{ token }}']}\n"
    )
    secrets = tmp_path / "secrets.yml"
    secrets.write_text(yaml.safe_dump({"token": QUOTED}))
    code, text, document = _play(capsys, fast_inventory, book, secrets, "--timeout", "3")
    assert code == 2, text
    for mark in MARKS[3:]:
        assert mark not in text
    for row in _rows(document, 0):
        assert row["outcome"] == "failed"
        assert row["reason"] == f"command exited 3: {COMMAND_HIDDEN}"
        assert row["stderr"] == f"no: {REDACTED}\n"
    for row in _rows(document, 1):
        assert row["outcome"] == "failed"
        assert row["reason"].startswith("timed out after 3s running")
        assert COMMAND_HIDDEN in row["reason"] and "sleep" not in row["reason"]


@pytest.mark.hostile
def test_a_cron_file_holding_a_secret_is_for_root_only(
    lab_env: LabFixture, fast_inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = tmp_path / "cron.yml"
    book.write_text(
        "- hosts: all\n  tasks:\n"
        "    - cron: {name: fleet-test-sync, schedule: '@daily', job: 'true --token={{ token }}'}\n"
    )
    secrets = tmp_path / "secrets.yml"
    secrets.write_text(f"token: {TOKEN}\n")
    path = "/etc/cron.d/fleet-fleet-test-sync"
    hosts = [h.name for h in lab_env.lab.hosts]

    def no_file() -> None:
        for name in hosts:
            host_sh(lab_env, name, "rm", "-f", path)

    try:
        code, text, document = _play(
            capsys, fast_inventory, book, secrets, "--diff", before=no_file
        )
        assert code == 0, text
        for name in hosts:
            assert host_sh(lab_env, name, "stat", "-c", "%a %U", path) == "600 root\n"
            assert f"root true --token={TOKEN}\n" in host_sh(lab_env, name, "cat", path)
        assert TOKEN not in text
        assert all(row["details"]["diff"] == DIFF_HIDDEN for row in _rows(document, 0))
    finally:
        no_file()

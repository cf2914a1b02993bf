"""End to end on the lab: a secret used on the hosts never shows in output, JSON or history."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    assert "********" in out + err  # the live view is on stderr
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

"""Become with a password, end to end on the lab: a non-root SSH user whose sudo asks for
one (a university lab's usual setup), and one who is only in the docker group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import LabFixture, host_run, run_json

pytestmark = pytest.mark.lab

PASSWORD = "c0rrect horse 'battery\" $staple"  # quotes and $: never reaches a shell
SETUP = r"""
set -e
id fleetop >/dev/null 2>&1 || useradd -m -s /bin/sh fleetop
id fleetdocker >/dev/null 2>&1 || useradd -m -s /bin/sh -G docker fleetdocker
printf 'fleetop:%s\n' "$1" | chpasswd
# No password, but not locked either ("!"): sshd refuses even a key to a locked account.
usermod -p '*' fleetdocker
echo 'fleetop ALL=(ALL:ALL) ALL' >/etc/sudoers.d/fleetop
chmod 0440 /etc/sudoers.d/fleetop
for user in fleetop fleetdocker; do
  install -d -m 0700 -o "$user" "/home/$user/.ssh"
  install -m 0600 -o "$user" /root/.ssh/authorized_keys "/home/$user/.ssh/authorized_keys"
done
"""


@pytest.fixture(scope="module")
def users(lab_env: LabFixture) -> Iterator[None]:
    ran = host_run(lab_env, "lab1", "sh", "-c", SETUP, "setup", PASSWORD)
    assert ran.ok, ran.stderr
    yield
    host_run(
        lab_env,
        "lab1",
        "sh",
        "-c",
        "userdel -r fleetop; userdel -r fleetdocker; rm -f /etc/sudoers.d/fleetop",
    )


def inventory(env: LabFixture, path: Path, **lab1: object) -> Path:
    document = yaml.safe_load(env.inventory.read_text())
    hosts = document["all"]["children"]["lab"]["hosts"]
    document["all"]["children"]["lab"]["hosts"] = {"lab1": {**hosts["lab1"], **lab1}}
    path.write_text(yaml.safe_dump(document))
    return path


def test_sudo_with_the_inventory_password_runs_as_root(
    lab_env: LabFixture, users: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(
        lab_env,
        tmp_path / "inv.yml",
        ansible_user="fleetop",
        ansible_become=True,
        ansible_become_password=PASSWORD,
    )
    code, doc = run_json(capsys, "exec", "lab1", "-i", str(inv), "--", "id", "-u")
    assert code == 0, doc
    assert doc["hosts"]["lab1"]["stdout"].strip() == "0"
    assert PASSWORD not in capsys.readouterr().err
    # and a real fleet command: the framework's state, read as root through sudo
    code, doc = run_json(capsys, "ps", "lab1", "-i", str(inv))
    assert code == 0, doc


def test_a_wrong_password_fails_that_host_at_once(
    lab_env: LabFixture, users: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(
        lab_env,
        tmp_path / "inv.yml",
        ansible_user="fleetop",
        ansible_become=True,
        ansible_become_password="wrong",
    )
    code, doc = run_json(capsys, "exec", "lab1", "-i", str(inv), "--", "id", "-u")
    assert code == 2, doc
    lab1 = doc["hosts"]["lab1"]
    assert lab1["outcome"] == "failed" and "become password rejected" in lab1["reason"]
    assert "-K" in lab1["fix"]


def test_no_password_says_how_to_give_one(
    lab_env: LabFixture, users: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(lab_env, tmp_path / "inv.yml", ansible_user="fleetop", ansible_become=True)
    code, doc = run_json(capsys, "exec", "lab1", "-i", str(inv), "--", "id", "-u")
    assert code == 2, doc
    lab1 = doc["hosts"]["lab1"]
    assert "a password is required" in lab1["reason"] or "a password is required" in str(
        lab1.get("stderr", "")
    ), lab1
    assert "-K/--ask-become-pass" in str(lab1["fix"])


def test_ask_become_pass_reads_the_password_once_without_a_terminal(
    lab_env: LabFixture, users: None, tmp_path: Path
) -> None:
    inv = inventory(lab_env, tmp_path / "inv.yml", ansible_user="fleetop", ansible_become=True)
    ran = subprocess.run(
        [sys.executable, "-m", "fleet", "exec", "lab1", "-i", str(inv), "-K", "--", "id", "-un"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        check=False,
        start_new_session=True,  # no controlling terminal: getpass reads stdin
        env={**os.environ, "FLEET_SSH_CLIENT": "openssh"},
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert "root" in ran.stdout
    assert PASSWORD not in ran.stdout + ran.stderr


def test_the_become_password_file_serves_runs_without_a_terminal(
    lab_env: LabFixture, users: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(lab_env, tmp_path / "inv.yml", ansible_user="fleetop", ansible_become=True)
    secret = tmp_path / "become"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    argv = ["exec", "lab1", "-i", str(inv), "--become-password-file", str(secret)]
    code, doc = run_json(capsys, *argv, "--", "id", "-un")
    assert code == 0, doc
    assert doc["hosts"]["lab1"]["stdout"].strip() == "root"
    assert PASSWORD not in json.dumps(doc)


def test_a_docker_group_user_needs_no_become(
    lab_env: LabFixture, users: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(lab_env, tmp_path / "inv.yml", ansible_user="fleetdocker")
    code, doc = run_json(capsys, "ps", "lab1", "-i", str(inv))
    assert code == 0, doc
    code, doc = run_json(capsys, "exec", "lab1", "-i", str(inv), "--", "id", "-u")
    assert code == 0 and doc["hosts"]["lab1"]["stdout"].strip() != "0"

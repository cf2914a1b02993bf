"""Become with a password, end to end on the lab: a non-root SSH user whose sudo asks for
one (a university lab's usual setup), and one who is only in the docker group; exec,
provision, deploy, audit and playbooks as each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import (
    LabFixture,
    host_run,
    host_sh,
    run_cli,
    run_json,
    run_project_json,
    running_tag,
    write_fast_inventory,
)
from tests.framework import FrameworkProject, built_project
from tests.test_deploy_e2e import hostile_image, remove_image
from tests.test_provision_e2e import Sandbox, base_image  # noqa: F401 (a fixture)

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
    write_fast_inventory(env, path)
    document = yaml.safe_load(path.read_text())
    hosts = document["all"]["children"]["lab"]["hosts"]
    document["all"]["children"]["lab"]["hosts"] = {"lab1": {**hosts["lab1"], **lab1}}
    path.write_text(yaml.safe_dump(document))
    return path


def test_sudo_with_the_inventory_password_runs_as_root_or_the_become_user(
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
    # ansible_become_user is honoured
    inv = inventory(
        lab_env,
        tmp_path / "inv.yml",
        ansible_user="fleetop",
        ansible_become=True,
        ansible_become_user="fleetdocker",
        ansible_become_password=PASSWORD,
    )
    code, doc = run_json(capsys, "exec", "lab1", "-i", str(inv), "--", "id", "-un")
    assert code == 0, doc
    assert doc["hosts"]["lab1"]["stdout"].strip() == "fleetdocker"


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


def password_file(tmp_path: Path) -> str:
    secret = tmp_path / "become"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    return str(secret)


@pytest.fixture(scope="module")
def project(
    lab_env: LabFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrameworkProject]:
    root = tmp_path_factory.mktemp("fw") / "cauchy"
    repository = f"fleet-test-become-{uuid.uuid4().hex[:6]}"
    yield from built_project(lab_env, root, repository, ["v1", "v2"])


def test_provision_through_sudo_with_a_password(
    lab_env: LabFixture,
    users: None,
    base_image: str,  # noqa: F811 (the fixture)
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host_run(lab_env, "lab1", "docker", "image", "rm", "-f", base_image)
    box = Sandbox(lab_env, tmp_path, 18348)
    try:
        sudoer = {"ansible_user": "fleetop", "ansible_become": True}
        inv = box.inventory(host_vars={"lab1": sudoer}, base_image=base_image)
        argv = ["--limit", "lab1", "--become-password-file", password_file(tmp_path)]
        code, doc = box.provision(capsys, inv, *argv)
        assert code == 0, doc
        lab1 = doc["hosts"]["lab1"]
        assert lab1["outcome"] == "changed", lab1
        # the base image went through sudo's docker load, the tree is root's
        assert lab1["details"]["base_image"]["layers_sent"] >= 1, lab1["details"]
        owner = host_sh(lab_env, "lab1", "stat", "-c", "%U", f"{box.root}/data/checkpoints")
        assert owner.strip() == "root"
        assert PASSWORD not in json.dumps(doc)
        code, doc = box.provision(capsys, inv, *argv)
        assert (code, doc["hosts"]["lab1"]["outcome"]) == (0, "ok"), doc
    finally:
        box.clean()


def test_provision_as_a_docker_group_user_says_root_is_needed_and_changes_nothing(
    lab_env: LabFixture, users: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    box = Sandbox(lab_env, tmp_path, 18349)
    try:
        inv = box.inventory(host_vars={"lab1": {"ansible_user": "fleetdocker"}})
        code, doc = box.provision(capsys, inv, "--limit", "lab1", "--skip-base")
        assert code == 2, doc
        lab1 = doc["hosts"]["lab1"]
        assert lab1["outcome"] == "failed", lab1
        assert "ansible_become" in str(lab1["fix"]), lab1
        assert not host_run(lab_env, "lab1", "test", "-e", box.root).ok
    finally:
        box.clean()


def test_deploy_and_audit_as_a_sudo_user_then_as_a_docker_group_user(
    lab_env: LabFixture,
    users: None,
    project: FrameworkProject,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1, v2 = project.built
    # A history restored from a copy: root's alone (the sudo user's deploy shares it).
    restored = "rm -rf /var/lib/fleet; mkdir -m 2775 /var/lib/fleet; chgrp docker /var/lib/fleet"
    restored += "; : >/var/lib/fleet/history.jsonl; chgrp root /var/lib/fleet/history.jsonl"
    assert host_run(lab_env, "lab1", "sh", "-c", f"umask 022; {restored}").ok
    sudoer = inventory(lab_env, tmp_path / "sudo.yml", ansible_user="fleetop", ansible_become=True)
    become = ["--become-password-file", password_file(tmp_path)]
    code, doc = run_project_json(capsys, sudoer, project, "deploy", "lab1", v1, *become)
    assert code == 0, doc
    assert running_tag(lab_env, "lab1", project.repository) == v1
    code, doc = run_project_json(capsys, sudoer, project, "audit", "lab1", *become)
    assert code == 0, doc
    assert PASSWORD not in json.dumps(doc)
    assert doc["hosts"]["lab1"]["details"]["framework"]["tag"] == v1, doc["hosts"]["lab1"]

    docker_user = inventory(lab_env, tmp_path / "docker.yml", ansible_user="fleetdocker")
    code, doc = run_project_json(capsys, docker_user, project, "deploy", "lab1", v2)
    assert code == 0, doc["hosts"]
    assert running_tag(lab_env, "lab1", project.repository) == v2
    # the lock and history are shared: the docker-group user's switch is in the history
    last = host_sh(lab_env, "lab1", "tail", "-n", "1", "/var/lib/fleet/history.jsonl")
    assert json.loads(last)["to"] == v2, last
    code, doc = run_project_json(capsys, docker_user, project, "audit", "lab1", "--expect", v2)
    assert code == 0, doc


@pytest.mark.hostile
def test_a_docker_group_deployer_mounts_no_link_under_a_directory_it_cannot_read(
    lab_env: LabFixture,
    users: None,
    project: FrameworkProject,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The review's second route: a container made /data/p (0700) holding x -> /. A
    docker-group deployer's readlink cannot look inside /data/p, so a check that resolved
    paths passed the link for that user. A path below the data root is refused as text."""
    v1 = project.built[0]
    docker_user = inventory(lab_env, tmp_path / "docker.yml", ansible_user="fleetdocker")
    code, doc = run_project_json(capsys, docker_user, project, "deploy", "lab1", v1)
    assert code == 0, doc["hosts"]
    before = host_sh(lab_env, "lab1", "docker", "inspect", "-f", "{{.Id}}", "cauchy_service")
    plant = "mkdir -m 0700 /data/fleet-test-p && ln -s / /data/fleet-test-p/x"
    assert host_run(lab_env, "lab1", "sh", "-c", plant).ok
    tag, reference = hostile_image(
        project,
        "docker run -d --name cauchy_service --network host -v /data:/data "
        "-v /data/fleet-test-p/x:/host {image} python cauchy_services.py --port 8339",
    )
    try:
        code, doc = run_project_json(capsys, docker_user, project, "deploy", "lab1", tag)
        lab1 = doc["hosts"]["lab1"]
        assert code == 2 and lab1["outcome"] == "failed", lab1
        assert "--volume /data/fleet-test-p/x:/host" in lab1["reason"], lab1
        after = host_sh(lab_env, "lab1", "docker", "inspect", "-f", "{{.Id}}", "cauchy_service")
        assert after == before  # nothing was stopped or replaced
    finally:
        host_run(lab_env, "lab1", "rm", "-rf", "/data/fleet-test-p")
        remove_image(reference)


def test_a_playbook_takes_the_become_password_from_a_secrets_file(
    lab_env: LabFixture, users: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = inventory(lab_env, tmp_path / "inv.yml", ansible_user="fleetop", ansible_become=True)
    secrets = tmp_path / "secrets.yml"
    secrets.write_text(yaml.safe_dump({"ansible_become_password": PASSWORD}))
    book = tmp_path / "whoami.yml"
    book.write_text(
        "- hosts: all\n  tasks:\n    - exec: {command: [id, -u]}\n      register: me\n"
        "    - debug: {msg: 'uid {{ me.stdout }}'}\n"
    )
    retry = tmp_path / "retry"
    argv = ["play", str(book), "-i", str(inv), "--secret", f"@{secrets}"]
    code, doc = run_json(capsys, *argv, "--retry-file", str(retry))
    assert code == 0, doc
    assert doc["tasks"][1]["hosts"]["lab1"]["reason"] == "uid 0"
    assert PASSWORD not in json.dumps(doc) + capsys.readouterr().err
    # the password is a secret unmarked too: a task cannot show it
    book.write_text("- hosts: all\n  tasks:\n    - debug: {msg: '{{ ansible_become_password }}'}\n")
    code, out, err = run_cli(capsys, *argv, "--retry-file", str(retry))
    assert code == 4 and "the secret variable ansible_become_password" in err, err
    assert PASSWORD not in out + err


def test_lab_up_users_gives_a_sudoer_and_a_docker_group_user(
    lab_env: LabFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleet.lab import nodes as lab

    password = lab.add_users(lab_env.lab)
    assert password.stat().st_mode & 0o777 == 0o600
    assert lab.add_users(lab_env.lab) == password  # again: the same users, the same password
    sudoer, docker_user = tmp_path / "sudo.yml", tmp_path / "docker.yml"
    lab.write_inventory(lab_env.lab, sudoer, lab.SUDO_USER)
    lab.write_inventory(lab_env.lab, docker_user, lab.DOCKER_USER)
    argv = ["exec", "lab1", "-i", str(sudoer), "--become-password-file", str(password)]
    code, doc = run_json(capsys, *argv, "--", "id", "-un")
    assert (code, doc["hosts"]["lab1"]["stdout"].strip()) == (0, "root"), doc
    code, doc = run_json(capsys, "exec", "lab1", "-i", str(docker_user), "--", "id", "-un")
    assert (code, doc["hosts"]["lab1"]["stdout"].strip()) == (0, lab.DOCKER_USER), doc
    code, doc = run_json(capsys, "ps", "lab1", "-i", str(docker_user))
    assert code == 0, doc
    assert password.read_text().strip() not in json.dumps(doc)

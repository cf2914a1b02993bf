"""End to end on the lab: fleet audit of a mixed lab, its exit codes, and that it writes nothing.

The lab has two hosts; the mixed fleet is reached by sequencing: v1 on lab1 and v2 on lab2;
then a container started by hand with other flags; then a dirty build; then a stopped
framework container and a host without the framework. A stopped host is an inventory entry
at a closed port (127.0.0.1:9): what a stopped lab host looks like from the controller
(its published sshd port refuses connections).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet import cli as fleet_cli
from fleet.images import build as images
from fleet.images import daemon
from fleet.images.project import load_project
from fleet.lab import nodes as lab
from fleet.ops import containers
from fleet.ssh.known_hosts import KnownHosts
from fleet.ssh.paramiko_client import SSHTransport
from tests.conftest import (
    LabFixture,
    host_run,
    project_options,
    run_cli,
    run_json,
    run_project_json,
)
from tests.framework import FrameworkProject, build_with_label

pytestmark = pytest.mark.lab

HOSTS = ("lab1", "lab2")


@pytest.fixture(autouse=True, scope="module")
def audit_command() -> Iterator[None]:
    """Reach 'fleet audit' through fleet.cli even before it is registered there."""
    if "audit" in fleet_cli._COMMAND_MODULES:
        yield
        return
    patch = pytest.MonkeyPatch()
    patch.setattr(fleet_cli, "_COMMAND_MODULES", (*fleet_cli._COMMAND_MODULES, "audit"))
    yield
    patch.undo()


def host_sh(env: LabFixture, host: str, *argv: str) -> str:
    endpoint = next(e for e in lab.endpoints(env.lab) if e.name == host)
    transport = SSHTransport(endpoint, KnownHosts([env.lab.known_hosts]))
    try:
        return transport.run(list(argv), check=False).stdout
    finally:
        transport.close()


def remove_framework_containers(
    env: LabFixture, label: str, hosts: tuple[str, ...] = HOSTS
) -> None:
    for host in hosts:
        host_sh(
            env,
            host,
            "sh",
            "-c",
            'docker ps -aq --filter "label=$1" | xargs -r docker rm -f >/dev/null',
            "clean",
            label,
        )


@pytest.fixture(scope="module")
def project(
    lab_env: LabFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrameworkProject]:
    """v1, v2, and v3 built from a dirty work tree; the hosts free of framework containers."""
    repository = f"fleet-test-audit-{uuid.uuid4().hex[:6]}"
    built = FrameworkProject.create(tmp_path_factory.mktemp("fw") / "cauchy", repository)
    built.commit_and_build("v1")
    built.commit_and_build("v2")
    marker = built.root / "framework" / "RELEASE"
    marker.write_text("v3\n")
    built.git("add", "-A")
    built.git("commit", "-q", "-m", "v3")
    marker.write_text("v3, not committed\n")
    dirty = images.build(daemon.connect(), load_project(built.root))
    assert dirty.git.dirty
    built.built.append(dirty.tag)
    # Another module's framework may hold the container name and the port: start clean.
    remove_framework_containers(lab_env, "io.fleet.framework")
    yield built
    # The images stay on the hosts (later modules share their base layers); the containers go.
    remove_framework_containers(lab_env, f"io.fleet.framework={repository}")
    built.remove_images()


@pytest.fixture(scope="module")
def inventory(lab_env: LabFixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab, a short health timeout, and 'gone': a stopped host (nothing at 127.0.0.1:9)."""
    document = yaml.safe_load(lab_env.inventory.read_text())
    group = document["all"]["children"]["lab"]["vars"]
    group["fleet_run_overrides"] = {
        **group["fleet_run_overrides"],
        "health": {"timeout": 8, "interval": 0.5},
    }
    document["all"]["hosts"] = {"gone": {"ansible_host": "127.0.0.1", "ansible_port": 9}}
    path = tmp_path_factory.mktemp("auditinv") / "lab.yml"
    path.write_text(yaml.safe_dump(document))
    return path


fleet = run_project_json


def audit_rows(
    capsys: pytest.CaptureFixture[str],
    inventory: Path,
    project: FrameworkProject,
    *args: str,
    pattern: str = "lab1:lab2",
) -> tuple[int, dict[str, Any], dict[str, dict[str, Any]]]:
    code, document = fleet(capsys, inventory, project, "audit", pattern, *args)
    rows = {host: result["details"] for host, result in document["hosts"].items()}
    return code, document, rows


def codes(row: dict[str, Any]) -> list[str]:
    return [reason["code"] for reason in row["reasons"]]


def snapshot(env: LabFixture) -> dict[str, str]:
    """What an audit must not change: /var/lib/fleet byte for byte, and every container."""
    script = (
        "cd /var/lib/fleet && find . -exec ls -ld --time-style=full-iso {} + | sort"
        " && find . -type f -exec sha256sum {} + | sort;"
        " docker ps -aq --no-trunc | sort | xargs -r docker inspect --format"
        " '{{.Id}} {{.Name}} {{.State.Status}} {{.State.StartedAt}} {{.RestartCount}} {{.Image}}'"
    )
    return {host: host_sh(env, host, "sh", "-c", script) for host in HOSTS}


def test_audit_of_a_mixed_lab(
    lab_env: LabFixture,
    inventory: Path,
    project: FrameworkProject,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1, v2, v3 = project.built
    code, doc = fleet(capsys, inventory, project, "deploy", "lab1:lab2", v1)
    assert code == 0, doc
    code, doc = fleet(capsys, inventory, project, "deploy", "lab2", v2)
    assert code == 0, doc

    # v1 on lab1 (classic store), v2 on lab2 (containerd store): both the controller's builds.
    code, doc, rows = audit_rows(capsys, inventory, project)
    assert code == 0, doc
    versions = {v.tag: v for v in daemon.list_versions(daemon.connect(), project.repository)}
    for host, tag in (("lab1", v1), ("lab2", v2)):
        row = rows[host]
        assert row["status"] == "ok", row
        assert row["framework"]["tag"] == tag
        assert row["framework"]["state"] == "running" and row["framework"]["since"]
        assert row["framework"]["branch"] == "main" and row["framework"]["dirty"] is False
        assert row["framework"]["commit"] == versions[tag].commit
        assert row["controller"] == {"match": "same", "image_id": versions[tag].image_id}
        assert row["last_deploy"]["to"] == tag and row["last_deploy"]["outcome"] == "changed"
    assert rows["lab1"]["engine"]["store"] == "classic"
    assert rows["lab2"]["engine"]["store"] == "containerd"
    # The containerd store names the image by its manifest; its config is the controller's.
    assert rows["lab2"]["framework"]["image_id"] != versions[v2].image_id
    assert rows["lab2"]["framework"]["config_digest"] == versions[v2].image_id
    assert rows["lab2"]["other_versions"] == [v1] and rows["lab2"]["rollback_to"] == v1
    assert doc["audit"]["versions"] == {v1: 1, v2: 1}

    code, out, _ = run_cli(
        capsys,
        "audit",
        "lab1:lab2",
        *project_options(inventory, project),
    )
    assert code == 0
    table = out.splitlines()
    assert table[0].split()[:3] == ["host", "version", "commit"]
    assert table[1].split()[:2] == ["lab1", v1] and table[1].split()[-1] == "ok"
    assert table[2].split()[:2] == ["lab2", v2] and table[2].split()[-1] == "ok"
    assert "2 hosts in" in out and f"{v1} x1 (lab1), {v2} x1 (lab2)" in out
    assert "drifted: none" in out

    # --expect: the host on another version drifted (exit 2), said why.
    code, doc, rows = audit_rows(capsys, inventory, project, "--expect", v2)
    assert code == 2
    assert codes(rows["lab1"]) == ["version"] and rows["lab2"]["status"] == "ok"
    assert doc["audit"]["drifted"] == ["lab1"] and doc["audit"]["expected"] == v2

    # A container started by hand on lab1, from the same image with other flags.
    host_sh(lab_env, "lab1", "docker", "stop", "cauchy_service")
    host_sh(
        lab_env,
        "lab1",
        "docker",
        "run",
        "-d",
        "--name",
        "cauchy_manual",
        "--restart",
        "always",
        "--network",
        "host",
        "--env",
        "DEBUG=1",
        f"{project.repository}:{v1}",
        "python",
        "cauchy_services.py",
        "--port",
        "8339",
    )
    try:
        code, doc, rows = audit_rows(capsys, inventory, project)
        assert code == 2
        row = rows["lab1"]
        assert codes(row) == ["config"] and row["framework"]["container"] == "cauchy_manual"
        assert row["framework"]["tag"] == v1 and row["controller"]["match"] == "same"
        differences = {d["field"]: (d["expected"], d["actual"]) for d in row["config_diff"]}
        assert differences["restart"] == ("unless-stopped", "always")
        assert differences["env"] == ({}, {"DEBUG": "1"})
        assert differences["volumes"] == (["/data:/data"], [])
        assert {"name", "hostname", "shm_size", "ulimits"} <= set(differences)
        assert rows["lab2"]["status"] == "ok"
    finally:
        host_sh(lab_env, "lab1", "docker", "rm", "-f", "cauchy_manual")
        host_sh(lab_env, "lab1", "docker", "start", "cauchy_service")

    # The dirty build on lab1: 'latest' is it, and it still drifts, as dirty.
    code, doc = fleet(capsys, inventory, project, "deploy", "lab1", v3)
    assert code == 0, doc
    code, doc, rows = audit_rows(capsys, inventory, project, "--expect", "latest")
    assert code == 2 and doc["audit"]["expected"] == v3
    assert codes(rows["lab1"]) == ["dirty"] and rows["lab1"]["framework"]["dirty"] is True
    assert codes(rows["lab2"]) == ["version"]

    # lab2's framework stopped, then gone altogether (its images stay: rollback targets).
    host_sh(lab_env, "lab2", "docker", "stop", "cauchy_service")
    code, doc, rows = audit_rows(capsys, inventory, project)
    assert code == 2 and codes(rows["lab2"]) == ["not_running"]
    assert rows["lab2"]["framework"]["state"] == "exited"
    assert rows["lab2"]["framework"]["tag"] == v2
    remove_framework_containers(lab_env, f"io.fleet.framework={project.repository}", ("lab2",))
    code, doc, rows = audit_rows(capsys, inventory, project, pattern="lab2")
    assert code == 2 and codes(rows["lab2"]) == ["no_framework"]
    assert rows["lab2"]["framework"] is None and sorted(rows["lab2"]["other_versions"]) == [v1, v2]
    assert doc["audit"]["versions"] == {"none": 1}

    # The whole mixed fleet at once, as a table: a dirty build, no framework, a stopped host.
    code, out, _ = run_cli(
        capsys,
        "audit",
        "all",
        *project_options(inventory, project),
    )
    assert code == 3
    rows_text = {line.split()[0]: line for line in out.splitlines()[1:4]}
    assert f"{v3} dirty" in rows_text["lab1"] and rows_text["lab1"].endswith("dirty")
    assert "not installed" in rows_text["lab2"] and rows_text["lab2"].endswith("no_framework")
    assert rows_text["gone"].split()[1:] == ["-", "unreachable", "-", "unreachable"]
    assert "drifted: 2 of 3: lab1 (dirty), lab2 (no_framework)" in out
    assert "unreachable: 1: gone" in out


def test_a_stopped_host_is_unreachable_and_named(
    lab_env: LabFixture,
    inventory: Path,
    project: FrameworkProject,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, doc, rows = audit_rows(capsys, inventory, project, pattern="all")
    assert code == 3
    assert rows["gone"]["status"] == "unreachable" and codes(rows["gone"]) == ["unreachable"]
    assert doc["hosts"]["gone"]["outcome"] == "unreachable"
    assert doc["audit"]["unreachable"] == ["gone"]
    assert rows["lab1"]["status"] in ("ok", "drift")
    code, out, _ = run_cli(
        capsys,
        "audit",
        "all",
        *project_options(inventory, project),
    )
    assert code == 3
    assert "unreachable: 1: gone" in out
    assert "gone unreachable" in out


def test_the_fast_path_says_what_the_docker_cli_says(
    lab_env: LabFixture, project: FrameworkProject
) -> None:
    """containers.FAST_GATHER (python3 on the API socket) against the docker CLI, per store."""
    for host in HOSTS:
        endpoint = next(e for e in lab.endpoints(lab_env.lab) if e.name == host)
        transport = SSHTransport(endpoint, KnownHosts([lab_env.lab.known_hosts]))
        try:
            argv = ["sh", "-c", containers.SCRIPT, "fleet-framework", project.repository, "5"]
            by_cli = transport.run(argv).stdout
            fast = transport.run(["python3", "-c", containers.FAST_GATHER, project.repository, "5"])
            chosen = transport.run([*argv, containers.FAST_GATHER]).stdout
        finally:
            transport.close()
        parsed = containers.parse(chosen)
        assert parsed == containers.parse(by_cli)
        # The GPU part is the shell's, before either path: the bare Python knows no GPU.
        assert parsed.gpu.available
        assert replace(containers.parse(fast.stdout), gpu=parsed.gpu) == parsed
        assert parsed.images and all(image.config_digest for image in parsed.images), host


def test_audit_changes_nothing_and_ignores_the_deploy_lock(
    lab_env: LabFixture,
    inventory: Path,
    project: FrameworkProject,
    capsys: pytest.CaptureFixture[str],
) -> None:
    holder = (
        '{"token": "t0", "holder": "alice@laptop", "what": "deploy 0.0.1", '
        '"since": "2026-01-01T00:00:00Z", "expires": "2999-01-01T00:00:00Z"}'
    )
    host_sh(
        lab_env, "lab1", "sh", "-c", 'printf "%s\\n" "$1" > /var/lib/fleet/deploy.lock', "x", holder
    )
    try:
        before = snapshot(lab_env)
        assert "deploy.lock" in before["lab1"] and "history.jsonl" in before["lab2"]
        code, doc, rows = audit_rows(capsys, inventory, project, "--history", "3")
        assert code in (0, 2), doc
        assert rows["lab1"]["lock"]["holder"] == "alice@laptop"
        for host in HOSTS:
            lines = host_sh(lab_env, host, "cat", "/var/lib/fleet/history.jsonl").splitlines()
            assert rows[host]["history"] == [json.loads(line) for line in lines[-3:]]
        code, _, _ = run_cli(
            capsys,
            "audit",
            "lab1:lab2",
            *project_options(inventory, project),
            "--csv",
            "--expect",
            "latest",
            "--history",
        )
        assert code in (0, 2)
        assert snapshot(lab_env) == before
    finally:
        host_sh(lab_env, "lab1", "rm", "-f", "/var/lib/fleet/deploy.lock")


# Labels of an image from elsewhere: rich markup (an unbalanced close tag), CSI and OSC.
HOSTILE_LABELS = {
    "org.label-schema.vcs-branch": "main[/]\x1b[2J",
    "org.label-schema.vcs-ref": "x[/red]",
    "org.label-schema.build-date": "[link=http://evil.example]\x1b]0;title\x07",
    "org.label-schema.version": "[bold]v9\x1b]8;;http://evil.example\x1b\\",
}
# What the hostile container prints: an OSC title, a colour, markup, a C1 CSI.
HOSTILE_LOG = r"printf '\033]0;pwned\007\033[31mred [/] \302\2332J\n'; exec sleep 600"


@pytest.mark.hostile
def test_hostile_labels_history_and_lock_are_shown_as_text(
    lab_env: LabFixture,
    inventory: Path,
    project: FrameworkProject,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An image whose labels carry markup and terminal controls runs on lab1, whose history
    and deploy lock carry more (and a byte that is not UTF-8): the audit and images views
    show them as text, escaped; --json carries them exactly."""
    v1 = project.built[0]
    base = daemon.connect().images.get(f"{project.repository}:{v1}")
    tag = "9.0.66"
    reference = f"{project.repository}:{tag}"
    command = base.labels["org.label-schema.docker.cmd"].replace(f":{v1} ", f":{tag} ")
    labels = {**HOSTILE_LABELS, "io.fleet.tag": tag, "org.label-schema.docker.cmd": command}
    build_with_label(f"{project.repository}:{v1}", reference, labels)
    code, doc = fleet(capsys, inventory, project, "push", "lab1", reference)
    assert code == 0, doc
    remove_framework_containers(lab_env, f"io.fleet.framework={project.repository}", ("lab1",))
    run = ["docker", "run", "-d", "--name", "fleet-hostile", reference, "sh", "-c", HOSTILE_LOG]
    host_sh(lab_env, "lab1", *run)
    history = "/var/lib/fleet/history.jsonl"
    entry = (
        b'{"time": "2026-12-01T00:00:00Z", "action": "deploy", "from": null, "to": "9.0.66", '
        b'"outcome": "changed", "by": "x[/red]\\u001b]8;;http://evil.example\\u001b\\\\ '
        b'\\u009b2J caf\xff"}\n'
    )
    lock = (
        b'{"token": "t0", "holder": "[bold]mallory\\u001b[1A", "what": "deploy [/]", '
        b'"since": "2026-01-01T00:00:00Z", "expires": "2999-01-01T00:00:00Z"}\n'
    )
    saved = f"{history}.before-hostile"
    host_sh(lab_env, "lab1", "sh", "-c", f"mkdir -p /var/lib/fleet; cp {history} {saved}")
    host_run(lab_env, "lab1", "sh", "-c", f"cat >> {history}", stdin=entry)
    host_run(lab_env, "lab1", "sh", "-c", "cat > /var/lib/fleet/deploy.lock", stdin=lock)
    try:
        options = project_options(inventory, project)
        code, out, err = run_cli(capsys, "audit", "lab1", *options, "--history")
        assert code == 2, out + err
        for raw in ("\x1b", "\x07", "\x9b"):
            assert raw not in out + err
        assert "x[/red] main[/]\\x1b[2J" in out  # the commit column: commit and branch
        assert "lock of [bold]mallory\\x1b[1A (deploy [/])" in out
        assert "by x[/red]\\x1b]8;;http://evil.example\\x1b\\ \\x9b2J caf\ufffd" in out
        code, document = run_json(capsys, "audit", "lab1", *options)
        framework = document["hosts"]["lab1"]["details"]["framework"]  # type: ignore[index]
        assert framework["branch"] == "main[/]\x1b[2J"
        assert document["hosts"]["lab1"]["details"]["lock"]["holder"] == (  # type: ignore[index]
            "[bold]mallory\x1b[1A"
        )

        code, out, err = run_cli(capsys, "images", "--on", "lab1", *options)
        assert code == 0, out + err
        for raw in ("\x1b", "\x07"):
            assert raw not in out + err
        controller, _, on_hosts = out.partition("on the hosts:")
        mine = next(line for line in on_hosts.splitlines() if f" {tag} " in f" {line} ")
        assert "x[/red]" in mine and "[link=http://evil.example]\\x1b]0;title\\x07" in mine
        built = next(line for line in controller.splitlines() if line.startswith(f"{tag} "))
        assert " main[/]\\x1b[2J " in built and "x[/red]" in built

        code, out, err = run_cli(capsys, "ps", "lab1", *options)
        assert code == 0, out + err
        assert "\x1b" not in out + err
        assert "fleet-hostile" in out and "[bold]v9\\x1b]8;;http://evil.example\\x1b\\" in out
        code, out, err = run_cli(capsys, "logs", "lab1", *options)
        assert code == 0, out + err
        assert "\x1b" not in out + err and "\x07" not in out + err and "\x9b" not in out + err
        assert "lab1 | \\x1b]0;pwned\\x07\\x1b[31mred [/] \\x9b2J" in out.splitlines()
        code, document = run_json(capsys, "logs", "lab1", *options)
        assert document["hosts"]["lab1"]["stdout"] == (  # type: ignore[index]
            "\x1b]0;pwned\x07\x1b[31mred [/] \x9b2J\n"
        )
    finally:
        host_sh(lab_env, "lab1", "rm", "-f", "/var/lib/fleet/deploy.lock")
        restore = f"if [ -e {saved} ]; then mv {saved} {history}; else rm -f {history}; fi"
        host_sh(lab_env, "lab1", "sh", "-c", restore)
        host_sh(lab_env, "lab1", "docker", "rm", "-f", "fleet-hostile")

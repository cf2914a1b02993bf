"""End to end on the lab: the shipped rollout playbook, check mode, tags and limits."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.ship import registry
from tests.conftest import (
    LabFixture,
    clear_framework,
    host_run,
    host_sh,
    run_json,
    running_tag,
    swapping,
)
from tests.framework import FrameworkProject

pytestmark = pytest.mark.lab
ROLLOUT = str(Path(__file__).resolve().parents[1] / "playbooks" / "rollout.yml")
PROVISION = str(Path(__file__).resolve().parents[1] / "playbooks" / "provision.yml")


@pytest.fixture(scope="module")
def project(
    lab_env: LabFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrameworkProject]:
    clear_framework(lab_env)
    built = FrameworkProject.create(
        tmp_path_factory.mktemp("fw") / "cauchy", f"fleet-test-play-{uuid.uuid4().hex[:6]}"
    )
    built.git("add", "-A")
    built.git("commit", "-q", "-m", "v1")
    yield built
    built.remove_images()


def play(capsys, inventory: Path, project: FrameworkProject, *args: str) -> tuple[int, dict]:
    return run_json(
        capsys,
        "play",
        ROLLOUT,
        "-i",
        str(inventory),
        "-e",
        f"project={project.root}",
        "--retry-file",
        "/dev/null",
        *args,
    )


def snapshot(env: LabFixture) -> list[str]:
    return [
        host_sh(
            env,
            h.name,
            "sh",
            "-c",
            "docker ps -a --format '{{.Names}} {{.Image}} {{.State}}'; docker image ls -q | sort; cat /var/lib/fleet/history.jsonl 2>/dev/null",
        )
        for h in env.lab.hosts
    ]


def test_check_mode_changes_nothing(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    before = snapshot(lab_env)
    code, doc = play(capsys, fast_inventory, project, "--check")
    assert code == 0, [
        (t["step"], h, r["reason"])
        for t in doc["tasks"]
        for h, r in t["hosts"].items()
        if r["outcome"] == "failed"
    ]
    assert all(t["changed"] >= 1 for t in doc["recap"].values())
    assert snapshot(lab_env) == before


def test_rollout_then_rerun_is_all_ok(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    code, doc = play(capsys, fast_inventory, project)
    assert code == 0, [
        (t["step"], h, r["reason"])
        for t in doc["tasks"]
        for h, r in t["hosts"].items()
        if r["outcome"] == "failed"
    ]
    tag = next(t for t in doc["tasks"] if t["step"] == "build")["hosts"]["lab1"]["details"][
        "image"
    ].rpartition(":")[2]
    for host in ("lab1", "lab2"):
        assert running_tag(lab_env, host, project.repository) == tag
        assert doc["recap"][host]["failed"] == 0 and doc["recap"][host]["version_after"] == tag
    code, doc = play(capsys, fast_inventory, project)
    assert code == 0
    for host, recap in doc["recap"].items():
        assert recap["changed"] == 0, (host, recap)
        assert recap["ok"] == 4
    # the registered deploy result, shown by the playbook's debug task
    said = [t for t in doc["tasks"] if t["step"] == "debug"]  # one per serial batch
    assert {h: r["reason"] for t in said for h, r in t["hosts"].items()} == {
        host: f"{tag} -> {tag}" for host in doc["recap"]
    }


def test_a_new_commit_ships_only_the_thin_layer(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    play(capsys, fast_inventory, project)
    (project.root / "framework" / "RELEASE").write_text("v2\n")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "v2")
    code, doc = play(capsys, fast_inventory, project)
    assert code == 0, [
        (t["step"], h, r["reason"])
        for t in doc["tasks"]
        for h, r in t["hosts"].items()
        if r["outcome"] == "failed"
    ]
    push = [t for t in doc["tasks"] if t["step"] == "push"]
    for task in push:
        for host, result in task["hosts"].items():
            # Only the framework layer's own steps travel, never the base's.
            assert result["details"]["layers_present"] >= 5, (host, result["details"])
            assert result["details"]["bytes_sent"] < 64 * 1024


def test_tags_and_limit_select_tasks_and_hosts(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    code, doc = play(capsys, fast_inventory, project, "--tags", "build", "--limit", "lab1")
    assert code == 0, [
        (t["step"], h, r["reason"])
        for t in doc["tasks"]
        for h, r in t["hosts"].items()
        if r["outcome"] == "failed"
    ]
    assert {t["step"] for t in doc["tasks"]} == {"build"}
    assert list(doc["recap"]) == ["lab1"]


@pytest.mark.skipif(
    not os.access(registry.DEFAULT_BINARY, os.X_OK),
    reason="docker-registry is not installed (scripts/setup.sh installs it)",
)
def test_a_playbook_deploys_through_the_tunnelled_registry(
    lab_env: LabFixture, fast_inventory: Path, tmp_path: Path, capsys
) -> None:
    clear_framework(lab_env)
    project = FrameworkProject.create(tmp_path / "cauchy", f"fleet-test-regdeploy-{os.getpid()}")
    try:
        tag = project.commit_and_build("v1")
        book = tmp_path / "rollout.yml"
        book.write_text(
            "- name: roll out through a registry\n"
            "  hosts: all\n"
            "  tasks:\n"
            f"    - deploy: {{project: {project.root}, via: registry, max_rate: 200M}}\n"
        )
        argv = ["play", str(book), "-i", str(fast_inventory), "--retry-file", "/dev/null"]
        code, doc = run_json(capsys, *argv)
        assert code == 0, [(h, r["reason"]) for t in doc["tasks"] for h, r in t["hosts"].items()]
        for host in ("lab1", "lab2"):
            assert doc["recap"][host]["version_after"] == tag
            running = host_sh(
                lab_env, host, "docker", "ps", "--format", '{{.Label "io.fleet.tag"}}'
            )
            assert tag in running.split()
            names = host_sh(lab_env, host, "docker", "image", "ls", "--format", "{{.Repository}}")
            assert "127.0.0.1:" not in names  # the temporary name is gone
    finally:
        clear_framework(lab_env)
        project.remove_images()


@pytest.mark.hostile
def test_a_copy_into_a_shared_directory_writes_its_target_not_a_planted_symlink(
    lab_env: LabFixture, fast_inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = f"/data/fleet-test-projects-{os.getpid()}"  # like /data/projects: 2775, not sticky
    target = f"{shared}/app.env"
    victim = f"/etc/fleet-test-victim-{os.getpid()}"
    book = tmp_path / "copy.yml"
    book.write_text(
        f"- hosts: all\n  tasks:\n    - copy: {{dest: {target}, content: \"new\\n\", mode: '0640'}}\n"
    )
    hosts = [h.name for h in lab_env.lab.hosts]
    for host in hosts:
        # A member of the directory's group plants the name the write used to go through.
        host_sh(
            lab_env,
            host,
            "sh",
            "-c",
            'mkdir -p "$1" && chmod 2775 "$1" && echo victim > "$2" && chmod 600 "$2" '
            '&& ln -s "$2" "$3.fleet-tmp" && echo old > "$3"',
            "plant",
            shared,
            victim,
            target,
        )
    try:
        code, doc = run_json(
            capsys,
            *("play", str(book), "-i", str(fast_inventory), "--retry-file", "/dev/null", "--diff"),
        )
        rows = doc["tasks"][0]["hosts"].values()  # type: ignore[index]
        assert code == 0, [r["reason"] for r in rows]
        assert all("-old\n+new\n" in r["details"]["diff"] for r in rows)
        for host in hosts:
            assert host_sh(lab_env, host, "cat", victim) == "victim\n"
            assert host_sh(lab_env, host, "stat", "-c", "%a %F", victim) == "600 regular file\n"
            assert host_sh(lab_env, host, "stat", "-c", "%a %F", target) == "640 regular file\n"
            assert host_sh(lab_env, host, "cat", target) == "new\n"
            # No temp file left beside it.
            assert host_sh(lab_env, host, "ls", "-A", shared).split() == [
                "app.env",
                "app.env.fleet-tmp",
            ]
    finally:
        for host in hosts:
            host_sh(lab_env, host, "rm", "-rf", shared, victim)


def test_register_when_changed_when_and_failed_when_as_ansible_has_them(
    lab_env: LabFixture, fast_inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = tmp_path / "register.yml"
    book.write_text(
        """- hosts: all
  tasks:
    - name: which kernel
      exec: {shell: "uname -s; echo second line"}
      register: kernel
      changed_when: false
    - name: only where the first task said Linux, with its output templated in
      exec: {command: [echo, "{{ kernel.stdout_lines | first | lower }} rc={{ kernel.rc }}"]}
      when:
        - kernel.rc == 0
        - "'Linux' in kernel.stdout"
      register: said
    - name: a non-zero exit that is not a failure here
      exec: {shell: "exit 3"}
      failed_when: false
    - name: a zero exit that is one
      exec: {shell: "echo disk full"}
      register: check
      failed_when: "'full' in check.stdout"
      ignore_errors: true
    - name: never runs where the check failed
      exec: {command: ["true"]}
      when: not check.failed
"""
    )
    code, doc = run_json(
        capsys, "play", str(book), "-i", str(fast_inventory), "--retry-file", "/dev/null"
    )
    assert code == 0, doc
    first, second, third, fourth, fifth = (t["hosts"] for t in doc["tasks"])
    for host in first:
        assert first[host]["outcome"] == "ok", first[host]  # changed_when: false
        assert second[host]["outcome"] == "changed"
        assert second[host]["stdout"] == "linux rc=0\n", second[host]
        assert third[host]["outcome"] == "changed", third[host]  # exit 3, failed_when: false
        assert fourth[host]["outcome"] == "failed", fourth[host]
        assert "failed_when: 'full' in check.stdout" in fourth[host]["reason"]
        assert fifth[host]["outcome"] == "skipped", fifth[host]


def test_the_provision_playbooks_disk_check_loops_over_the_data_tree(
    lab_env: LabFixture, fast_inventory: Path, capsys
) -> None:
    for host in lab_env.lab.hosts:
        host_sh(lab_env, host.name, "mkdir", "-p", "/data/checkpoints", "/data/datasets")
    argv = ["play", PROVISION, "-i", str(fast_inventory), "--tags", "disk"]
    code, doc = run_json(capsys, *argv, "--retry-file", "/dev/null", "-e", "data_min_free_mb=1")
    assert code == 0, doc
    (task,) = doc["tasks"]
    for host, row in task["hosts"].items():
        assert row["outcome"] == "ok", row  # changed_when: false, for every item
        assert [i["item"] for i in row["details"]["loop"]] == ["checkpoints", "datasets"]
        assert doc["recap"][host]["ok"] == 1  # a loop counts once, as in Ansible
    # a host short of room fails with the item that is short named
    code, doc = run_json(
        capsys, *argv, "--retry-file", "/dev/null", "-e", "data_min_free_mb=999999999"
    )
    assert code == 2
    for row in doc["tasks"][0]["hosts"].values():
        assert row["outcome"] == "failed"
        assert row["reason"].startswith("item checkpoints: failed_when: room.rc != 0"), row


@pytest.mark.hostile
def test_the_dir_step_chmods_no_directory_a_container_swaps_in(
    lab_env: LabFixture, fast_inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The review's dir race: a container swaps /data/.../shared for a link to a host
    directory between fleet's look and its chmod, in a loop; root chmods only the real one."""
    host = "lab1"
    parent = f"fleet-test-dirswap-{uuid.uuid4().hex[:6]}"
    shared = f"/data/{parent}/shared"
    victim = f"/etc/fleet-test-victim-{uuid.uuid4().hex[:6]}"
    book = tmp_path / "dir.yml"
    book.write_text(
        f"- hosts: {host}\n  tasks:\n    - dir: {{path: {shared}, mode: '{{{{ m }}}}'}}\n"
    )
    setup = 'mkdir -p "$1" "$2" && chmod 0755 "$2"'
    assert host_run(lab_env, host, "sh", "-c", setup, "setup", shared, victim).ok
    swap = (
        f"mv /d/{parent}/shared /d/{parent}/real 2>/dev/null && "
        f"ln -s {victim} /d/{parent}/shared && echo swapped; "
        f"rm -f /d/{parent}/shared && mv /d/{parent}/real /d/{parent}/shared 2>/dev/null"
    )
    try:
        with swapping(lab_env, host, "/data", swap) as swapper:
            outcomes = []
            for mode in ("2775", "2770") * 5:
                argv = ("play", str(book), "-i", str(fast_inventory), "-e", f"m={mode}")
                _, doc = run_json(capsys, *argv, "--retry-file", "/dev/null")
                outcomes.append(next(iter(doc["tasks"][0]["hosts"].values()))["outcome"])  # type: ignore[index]
            swaps = host_run(lab_env, host, "docker", "logs", swapper).stdout.count("swapped")
        assert swaps > 0, "the container never swapped the directory"
        assert set(outcomes) <= {"changed", "failed", "ok"}, outcomes
        assert "changed" in outcomes, outcomes
        stat = host_run(lab_env, host, "stat", "-c", "%a %u", victim).stdout
        assert stat == "755 0\n", "root chmodded the directory a link led to"
    finally:
        host_run(lab_env, host, "rm", "-rf", f"/data/{parent}", victim)

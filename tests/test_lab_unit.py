"""Lab logic that needs no engine: isolation choice, recipes, the inventory it writes."""

import os
from pathlib import Path

import pytest
import yaml

from fleet.errors import UsageError
from fleet.lab import nodes as lab
from tests.conftest import run_cli

FULL = "CapBnd:\t000001ffffffffff\n"
NO_SYS_RESOURCE = "CapBnd:\t000001fffeffffff\n"


def test_privileged_when_every_capability_is_there() -> None:
    assert lab.isolation_options(FULL) == {"privileged": True}


def test_capabilities_one_by_one_when_some_are_missing() -> None:
    options = lab.isolation_options(NO_SYS_RESOURCE)
    assert "privileged" not in options
    assert "SYS_ADMIN" in options["cap_add"]
    assert "SYS_RESOURCE" not in options["cap_add"]
    # Engines before 23 refuse names newer than AUDIT_READ.
    assert "PERFMON" not in options["cap_add"]
    assert "seccomp=unconfined" in options["security_opt"]


def test_recipes_differ_by_engine_and_are_stable() -> None:
    classic, containerd = lab.recipe("classic"), lab.recipe("containerd")
    assert classic.image != containerd.image
    assert classic.image == lab.recipe("classic").image
    assert '"containerd-snapshotter": true' in containerd.daemon_json
    assert containerd.suite == "trixie" and classic.suite == "bookworm"
    with pytest.raises(UsageError):
        lab.recipe("podman")


def test_engine_plan() -> None:
    assert lab._engine_plan(3, "mixed") == ["classic", "containerd", "classic"]
    assert lab._engine_plan(2, "containerd") == ["containerd", "containerd"]


def named(name: str, tmp_path: Path) -> lab.Lab:
    return lab.Lab(
        name,
        (
            lab.LabHost("lab1", f"{name}-lab1", "classic", "127.0.0.1", 40001, "running", gpus=2),
            lab.LabHost("lab2", f"{name}-lab2", "containerd", "127.0.0.1", 40002, "running"),
        ),
        tmp_path / "id_ed25519",
        tmp_path / "known_hosts",
        None,
    )


def test_inventory_is_ansible_yaml_with_pinned_keys(tmp_path: Path) -> None:
    lab_ = named("t", tmp_path)
    path = tmp_path / "inv" / "lab.yml"
    lab.write_inventory(lab_, path)
    document = yaml.safe_load(path.read_text())
    group = document["all"]["children"]["lab"]
    assert group["hosts"]["lab1"] == {
        "ansible_host": "127.0.0.1",
        "ansible_port": 40001,
        "fleet_lab_engine": "classic",
        "fleet_lab_gpus": 2,
    }
    # The run command runs as labeled, but for what the lab cannot grant: memlock=-1 where
    # the bounding set lacks CAP_SYS_RESOURCE, and the nvidia runtime on a host without GPUs.
    assert group["vars"]["fleet_run_overrides"] == lab.run_overrides(1)
    assert group["hosts"]["lab2"]["fleet_run_overrides"] == {
        **lab.run_overrides(1),
        "runtime": None,
    }
    assert group["vars"]["ansible_ssh_private_key_file"] == str(tmp_path / "id_ed25519")
    assert (
        f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in group["vars"]["ansible_ssh_common_args"]
    )
    assert "StrictHostKeyChecking=yes" in group["vars"]["ansible_ssh_common_args"]
    assert group["vars"]["fleet_lab_name"] == "t"
    assert lab.inventory_lab(path) == "t"


def test_down_of_another_lab_keeps_the_running_labs_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_LAB_DIR", str(tmp_path / "state"))
    path = tmp_path / "inventory" / "lab.yml"
    lab.write_inventory(named("fleet-lab", tmp_path), path)
    # What 'fleet lab down --name other' does once other's hosts are gone.
    assert lab.forget("other", path) is False
    assert lab.inventory_lab(path) == "fleet-lab"
    assert lab.forget("fleet-lab", path) is True
    assert not path.exists()


def test_the_users_inventories_sit_beside_the_labs_and_go_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_LAB_DIR", str(tmp_path / "state"))
    path = tmp_path / "inventory" / "lab.yml"
    lab_ = named("fleet-lab", tmp_path)
    lab.write_inventory(lab_, path)
    for user in (lab.SUDO_USER, lab.DOCKER_USER):
        lab.write_inventory(lab_, lab.user_inventory(path, user), user)
    sudoer = yaml.safe_load((tmp_path / "inventory" / "lab-lab.yml").read_text())
    variables = sudoer["all"]["children"]["lab"]["vars"]
    assert (variables["ansible_user"], variables["ansible_become"]) == ("lab", True)
    assert "ansible_become_password" not in variables  # -K or --become-password-file
    docker_user = yaml.safe_load((tmp_path / "inventory" / "lab-labdocker.yml").read_text())
    variables = docker_user["all"]["children"]["lab"]["vars"]
    assert variables["ansible_user"] == "labdocker" and "ansible_become" not in variables
    assert lab.forget("fleet-lab", path) is True
    assert sorted(p.name for p in (tmp_path / "inventory").iterdir()) == []


def test_which_lab_wrote_an_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # forget() removes the named lab's known_hosts: never the running lab's own.
    monkeypatch.setenv("FLEET_LAB_DIR", str(tmp_path / "state"))
    path = tmp_path / "lab.yml"
    assert lab.inventory_lab(path) is None  # no file
    path.write_text("all:\n  hosts:\n    gpu01:\n")
    assert lab.inventory_lab(path) is None  # hand-written: never fleet's to remove
    assert lab.forget("fleet-lab", path) is False and path.is_file()
    # Written before the inventory recorded fleet_lab_name: the header names the lab.
    path.write_text(
        "# Generated by 'fleet lab up' for the lab 'fleet-lab'; rewritten on every lab up.\n"
        "all:\n  children:\n    lab:\n      hosts: {}\n"
    )
    assert lab.inventory_lab(path) == "fleet-lab"
    path.write_text("# Generated by 'fleet lab up' for the lab 'x'\n: [unbalanced\n")
    assert lab.inventory_lab(path) is None


@pytest.mark.docker
def test_lab_down_of_a_lab_that_is_not_there_removes_no_inventory(
    lab_state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "inventory" / "lab.yml"
    lab.write_inventory(named("fleet-lab", tmp_path), path)
    absent = f"fleet-test-{os.getpid()}-absent"
    assert lab.down(name=absent, inventory=path) == []
    assert lab.inventory_lab(path) == "fleet-lab"
    code, _, err = run_cli(capsys, "lab", "down", "--name", absent, "--write-inventory", str(path))
    assert code == 0 and lab.inventory_lab(path) == "fleet-lab"
    said = " ".join(err.split())  # as wrapped at the console's width
    assert "removed 0 lab hosts: -" in said
    assert f"kept {path}: it is the inventory of the lab 'fleet-lab'" in said


def test_only_memlock_is_dropped_and_only_where_the_bounding_set_lacks_sys_resource() -> None:
    everything = "CapBnd:\t000001ffffffffff\n"
    without = "CapBnd:\t000001fffeffffff\n"  # bit 24: CAP_SYS_RESOURCE
    assert lab.run_overrides(1, everything) == {}
    assert lab.run_overrides(1, without) == {"ulimits": {"memlock": None}}
    assert lab.run_overrides(0, everything) == {"runtime": None}

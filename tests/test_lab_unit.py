"""Lab logic that needs no engine: isolation choice, recipes, the inventory it writes."""

from pathlib import Path

import pytest
import yaml

from fleet import lab
from fleet.errors import UsageError

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


def test_inventory_is_ansible_yaml_with_pinned_keys(tmp_path: Path) -> None:
    lab_ = lab.Lab(
        "t",
        (lab.LabHost("lab1", "t-lab1", "classic", "127.0.0.1", 40001, "running"),),
        tmp_path / "id_ed25519",
        tmp_path / "known_hosts",
        None,
    )
    path = tmp_path / "inv" / "lab.yml"
    lab.write_inventory(lab_, path)
    document = yaml.safe_load(path.read_text())
    group = document["all"]["children"]["lab"]
    assert group["hosts"]["lab1"] == {
        "ansible_host": "127.0.0.1",
        "ansible_port": 40001,
        "fleet_lab_engine": "classic",
    }
    assert group["vars"]["ansible_ssh_private_key_file"] == str(tmp_path / "id_ed25519")
    assert (
        f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in group["vars"]["ansible_ssh_common_args"]
    )
    assert "StrictHostKeyChecking=yes" in group["vars"]["ansible_ssh_common_args"]

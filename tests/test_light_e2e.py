"""The light lab: many SSH hosts, one port each, pinned keys, several sshd in one container,
and an engine stand-in answering what a real lab engine answered."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleet.lab import light
from tests.conftest import run_cli, run_json

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def light_inventory(lab_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    name = f"fleet-test-{os.getpid()}-light"
    # 20 hosts: two sshd processes (16 ports each at most).
    path = light.up(20, name=name, inventory=tmp_path_factory.mktemp("light") / "light.yml")
    yield path
    light.down(name=name)


def test_every_light_host_answers_with_its_pinned_key(
    light_inventory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hosts = yaml.safe_load(light_inventory.read_text())["all"]["children"]["light"]["hosts"]
    assert len(hosts) == 20 and len({h["ansible_port"] for h in hosts.values()}) == 20
    code, doc = run_json(
        capsys, "exec", "all", "-i", str(light_inventory), "--retry-file", "/dev/null", "--", "true"
    )
    assert code == 0, doc
    assert doc["summary"]["changed"] == 20


def test_audit_and_ps_read_the_engine_stand_in_on_every_light_host(
    light_inventory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each light host's engine stand-in answers as the recorded lab engine did: a framework
    container of version 0.2.2, named after the project that asks."""
    common = ("-i", str(light_inventory), "--retry-file", "/dev/null")
    code, doc = run_json(capsys, "audit", "all", *common)
    assert code == 2, doc  # drifted: this controller never built the stand-in's version
    rows = doc["hosts"]
    assert len(rows) == 20
    for row in rows.values():
        framework = row["details"]["framework"]
        assert (framework["tag"], framework["state"]) == ("0.2.2", "running"), row
        assert [r["code"] for r in row["details"]["reasons"]] == ["unknown_version"], row
    code, doc = run_json(capsys, "ps", "all", *common)
    assert code == 0, [r["reason"] for r in doc["hosts"].values() if r["outcome"] != "ok"]
    assert {r["details"]["containers"][0]["state"] for r in doc["hosts"].values()} == {"running"}


def test_top_shows_every_light_hosts_gpus_in_each_of_its_views(
    light_inventory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "top", "all", "-i", str(light_inventory), "-n", "2", "--interval", "0.5"
    )
    assert code == 0, err
    assert out.count("20 hosts · GPUs 0/160 busy") == 2, out
    rows = [line for line in out.splitlines() if line.startswith("light")]
    assert len(rows) == 40 and all(" 0/8 " in row and "0.2.2" in row for row in rows), out


def test_a_light_host_with_another_key_is_refused(
    light_inventory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = yaml.safe_load(light_inventory.read_text())
    group = document["all"]["children"]["light"]
    known = Path(group["vars"]["fleet_known_hosts"]).read_text().splitlines()
    wrong = tmp_path / "known_hosts"
    # Every port pinned to a key that is not the hosts' (another ed25519 key).
    other = "AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake"
    wrong.write_text("".join(f"{line.split()[0]} ssh-ed25519 {other}\n" for line in known))
    group["vars"]["fleet_known_hosts"] = str(wrong)
    group["vars"]["ansible_ssh_common_args"] = (
        f"-o UserKnownHostsFile={wrong} -o StrictHostKeyChecking=yes"
    )
    group["hosts"] = dict(list(group["hosts"].items())[:2])
    path = tmp_path / "wrong.yml"
    path.write_text(yaml.safe_dump(document))
    code, doc = run_json(
        capsys, "exec", "all", "-i", str(path), "--retry-file", "/dev/null", "--", "true"
    )
    assert code == 3, doc
    for result in doc["hosts"].values():
        assert result["outcome"] == "unreachable"
        assert "host key" in result["reason"].lower(), result

"""Transport policy that needs no host: host-key decisions, ssh arguments, settings."""

from pathlib import Path

import paramiko
import pytest

from fleet.errors import HostKeyError
from fleet.transport import Endpoint, KnownHosts, endpoint_for, fingerprint, parse_ssh_args


@pytest.fixture(scope="module")
def keys() -> tuple[paramiko.PKey, paramiko.PKey]:
    return paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()


def endpoint(port: int = 2222) -> Endpoint:
    return Endpoint(name="gpu01", address="10.0.0.1", port=port)


def test_unknown_key_is_refused_and_names_the_flag(tmp_path: Path, keys) -> None:
    known = KnownHosts([tmp_path / "known_hosts"])
    with pytest.raises(HostKeyError) as caught:
        known.verify(endpoint(), keys[0])
    assert "unknown host key for [10.0.0.1]:2222" in str(caught.value)
    assert fingerprint(keys[0]) in str(caught.value)
    assert "--accept-new-host-keys" in str(caught.value)
    assert not (tmp_path / "known_hosts").exists()


def test_accept_new_records_the_key_then_refuses_a_changed_one(tmp_path: Path, keys) -> None:
    path = tmp_path / "known_hosts"
    KnownHosts([path], accept_new=True).verify(endpoint(), keys[0])
    assert path.read_text().startswith("[10.0.0.1]:2222 ecdsa-sha2-nistp256 ")
    fresh = KnownHosts([path])  # a later run, without the flag
    fresh.verify(endpoint(), keys[0])
    with pytest.raises(HostKeyError) as caught:
        KnownHosts([path], accept_new=True).verify(endpoint(), keys[1])
    message = str(caught.value)
    assert "CHANGED" in message
    assert fingerprint(keys[0]) in message and fingerprint(keys[1]) in message


def test_port_22_is_written_without_brackets(tmp_path: Path, keys) -> None:
    path = tmp_path / "kh"
    KnownHosts([path], accept_new=True).verify(endpoint(22), keys[0])
    assert path.read_text().split()[0] == "10.0.0.1"


def test_key_of_another_type_is_not_a_new_host(tmp_path: Path, keys) -> None:
    path = tmp_path / "kh"
    KnownHosts([path], accept_new=True).verify(endpoint(), keys[0])
    rsa = paramiko.RSAKey.generate(1024)
    with pytest.raises(HostKeyError, match=r"only .* is recorded"):
        KnownHosts([path], accept_new=True).verify(endpoint(), rsa)


def test_parse_ssh_args_reads_what_ansible_passes() -> None:
    options = parse_ssh_args(
        "-o UserKnownHostsFile=/lab/known_hosts -o StrictHostKeyChecking=yes -J admin@bastion:2200 "
        "-o 'IdentityFile /k/id'"
    )
    assert options.known_hosts_files == ["/lab/known_hosts"]
    assert options.proxy_jump == "admin@bastion:2200"
    assert options.identity_files == ["/k/id"]


def test_endpoint_inventory_wins_over_ssh_config(tmp_path: Path) -> None:
    config_file = tmp_path / "config"
    config_file.write_text(
        "Host gpu*\n  HostName %h.lab.example\n  User trainer\n  Port 2200\n  ProxyJump jump\n"
        "Host jump\n  HostName 192.0.2.1\n  User admin\n"
    )
    config = paramiko.SSHConfig.from_path(str(config_file))
    from_config = endpoint_for("gpu01", {}, config=config)
    assert (from_config.address, from_config.port, from_config.user) == (
        "gpu01.lab.example",
        2200,
        "trainer",
    )
    assert from_config.jump is not None
    assert (from_config.jump.address, from_config.jump.user) == ("192.0.2.1", "admin")
    explicit = endpoint_for(
        "gpu01",
        {
            "ansible_host": "10.1.1.1",
            "ansible_port": "22",
            "ansible_user": "root",
            "ansible_become": "yes",
        },
        config=config,
    )
    assert (explicit.address, explicit.port, explicit.user, explicit.become) == (
        "10.1.1.1",
        22,
        "root",
        True,
    )


def test_known_hosts_files_in_openssh_order(tmp_path: Path) -> None:
    ep = endpoint_for(
        "h",
        {
            "ansible_ssh_common_args": "-o UserKnownHostsFile=/a/kh",
            "fleet_known_hosts": "/b/kh",
        },
        config=paramiko.SSHConfig(),
    )
    assert ep.known_hosts_files == ("/a/kh", "/b/kh", "~/.ssh/known_hosts")

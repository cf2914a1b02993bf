"""Transport policy that needs no host: host-key decisions, ssh arguments, settings."""

from pathlib import Path

import paramiko
import pytest

from fleet.errors import HostKeyError
from fleet.ssh.endpoint import Endpoint, parse_ssh_args
from fleet.ssh.known_hosts import KnownHosts, fingerprint
from fleet.ssh.paramiko_client import endpoint_for


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


@pytest.mark.hostile
def test_a_revoked_key_is_refused_even_where_a_plain_line_records_it(tmp_path: Path, keys) -> None:
    """The review's crash: paramiko raises on an @revoked line instead of refusing."""
    path = tmp_path / "kh"
    line = f"{keys[0].get_name()} {keys[0].get_base64()}"
    path.write_text(f"[10.0.0.1]:2222 {line}\n@revoked * {line}\nnot a key line\n")
    with pytest.raises(HostKeyError, match="marked @revoked") as caught:
        KnownHosts([path], accept_new=True).verify(endpoint(), keys[0])
    assert str(path) in str(caught.value) and caught.value.fix
    # Another key of the host is not touched by the revocation.
    other = tmp_path / "other"
    other.write_text(f"[10.0.0.1]:2222 {keys[1].get_name()} {keys[1].get_base64()}\n")
    other.write_text(other.read_text() + f"@revoked * {line}\n")
    KnownHosts([other]).verify(endpoint(), keys[1])


@pytest.mark.hostile
def test_a_cert_authority_line_vouches_for_nothing_and_says_so(tmp_path: Path, keys) -> None:
    path = tmp_path / "kh"
    path.write_text(f"@cert-authority *.lab,10.0.0.* {keys[1].get_name()} {keys[1].get_base64()}\n")
    with pytest.raises(HostKeyError, match="does not verify host certificates") as caught:
        KnownHosts([path], accept_new=True).verify(endpoint(), keys[0])
    assert "ssh-keyscan" in str(caught.value.fix)
    assert path.read_text().count("\n") == 1  # accept-new added nothing beside a CA line


# -- each host against its own known_hosts ------------------------------------------------
def gpu(number: int, *files: Path) -> Endpoint:
    """Host gpuN at 10.0.0.N:2222, verified against ``files``."""
    return Endpoint(
        name=f"gpu{number}",
        address=f"10.0.0.{number}",
        port=2222,
        known_hosts_files=tuple(str(f) for f in files),
    )


def record(path: Path, endpoint: Endpoint, key: paramiko.PKey) -> None:
    with path.open("a") as handle:
        handle.write(f"{endpoint.known_hosts_name} {key.get_name()} {key.get_base64()}\n")


@pytest.mark.hostile
def test_a_key_in_one_hosts_file_does_not_vouch_for_another_host(tmp_path: Path) -> None:
    # Host A's own known_hosts (say its fleet_known_hosts) also lists a key under host B's
    # name: once A's file has been read, that key must still not let "B" in.
    a_file, b_file = tmp_path / "a_known_hosts", tmp_path / "b_known_hosts"
    key_a, impostor = paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)
    a, b = gpu(1, a_file), gpu(2, b_file)
    record(a_file, a, key_a)
    record(a_file, b, impostor)
    known = KnownHosts()
    known.verify(a, key_a)
    with pytest.raises(HostKeyError, match=r"unknown host key for \[10\.0\.0\.2\]:2222") as caught:
        known.verify(b, impostor)
    assert str(b_file) in str(caught.value)
    # Also when B's own file records B's real key: the impostor is a changed key, named so.
    real_b = paramiko.RSAKey.generate(1024)
    record(b_file, b, real_b)
    fresh = KnownHosts(accept_new=True)
    fresh.verify(a, key_a)
    with pytest.raises(HostKeyError, match="CHANGED") as changed:
        fresh.verify(b, impostor)
    assert fingerprint(real_b) in str(changed.value) and str(b_file) in str(changed.value)
    fresh.verify(b, real_b)
    assert fresh.accepted == []


@pytest.mark.hostile
def test_accept_new_records_a_host_in_its_own_file(tmp_path: Path) -> None:
    # Not in the first file the run happened to read (another host's).
    a_file, b_file = tmp_path / "a_known_hosts", tmp_path / "b_known_hosts"
    key_a, key_b = paramiko.RSAKey.generate(1024), paramiko.ECDSAKey.generate()
    a, b = gpu(1, a_file), gpu(2, b_file)
    record(a_file, a, key_a)
    known = KnownHosts(accept_new=True)
    known.verify(a, key_a)
    known.verify(b, key_b)
    assert a_file.read_text().count("\n") == 1
    assert b_file.read_text() == f"[10.0.0.2]:2222 {key_b.get_name()} {key_b.get_base64()}\n"
    known.verify(b, key_b)  # recorded for the rest of the run too
    with pytest.raises(HostKeyError):
        KnownHosts().verify(gpu(2, a_file), key_b)


def test_each_file_is_parsed_once_per_run_and_shared(tmp_path: Path) -> None:
    shared, own = tmp_path / "shared", tmp_path / "own"
    keys = {n: paramiko.ECDSAKey.generate() for n in (1, 2, 3)}
    endpoints = {n: gpu(n, *((own, shared) if n == 3 else (shared,))) for n in keys}
    for n, key in keys.items():
        record(shared, endpoints[n], key)
    known = KnownHosts()
    for n, key in keys.items():
        known.verify(endpoints[n], key)
    assert known.parsed == [shared.resolve(), own.resolve()]
    # What a host's files say is what counts, in the order OpenSSH reads them.
    assert known.files_for(endpoints[3]) == [own.resolve(), shared.resolve()]
    assert KnownHosts([own]).files_for(Endpoint("x", "10.0.0.9")) == [own.resolve()]
    home = Path("~/.ssh/known_hosts").expanduser().resolve()
    assert KnownHosts().files_for(Endpoint("x", "10.0.0.9")) == [home]


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


def test_waiting_for_a_channel_works_past_selects_1024_descriptors() -> None:
    """With a thousand hosts connected, channels' descriptors pass 1024, where select()
    fails (ValueError); the transport waits with poll."""
    import os
    import resource

    from fleet.ssh.paramiko_client import _readable

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    held = [os.pipe() for _ in range(560)]
    try:
        read_end, write_end = os.pipe()
        assert read_end > 1024
        assert _readable([read_end], 0.01) == set()
        os.write(write_end, b"x")
        assert _readable([read_end], 1.0) == {read_end}
        os.close(read_end)
        os.close(write_end)
    finally:
        for pair in held:
            os.close(pair[0])
            os.close(pair[1])

"""The OpenSSH client transport without a host: its ssh command line, sockets, and the choice."""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.errors import InventoryError, UnreachableError, UsageError
from fleet.hosts.model import Host
from fleet.runner import ClientConnector
from fleet.ssh.endpoint import Endpoint, command_line
from fleet.ssh.openssh import OpenSSHConnector, OpenSSHTransport, private_dir


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A short temporary directory: a socket path must fit in 108 bytes (pytest's do not)."""
    directory = Path(tempfile.mkdtemp(prefix="fl-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def endpoint(tmp_path: Path, **changes: object) -> Endpoint:
    key = tmp_path / "id_ed25519"
    key.write_text("not read: ssh reads it\n")
    settings: dict[str, object] = {
        "name": "gpu01",
        "address": "10.0.0.1",
        "port": 2222,
        "user": "trainer",
        "key_files": (str(key),),
        "known_hosts_files": (str(tmp_path / "lab known_hosts"), "~/.ssh/known_hosts"),
    }
    settings.update(changes)
    return Endpoint(**settings)  # type: ignore[arg-type]


def options(argv: list[str]) -> dict[str, str]:
    found = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "-o":
            key, _, val = value.partition("=")
            found[key] = val
    return found


def test_host_keys_are_checked_against_the_endpoints_files_in_order(tmp_path: Path) -> None:
    transport = OpenSSHTransport(endpoint(tmp_path), control_dir=tmp_path / "cm")
    argv = transport.options(transport.endpoint, master=True)
    chosen = options(argv)
    assert chosen["StrictHostKeyChecking"] == "yes"
    assert chosen["BatchMode"] == "yes"
    assert chosen["GlobalKnownHostsFile"] == "/dev/null"
    home = os.path.expanduser("~/.ssh/known_hosts")
    assert chosen["UserKnownHostsFile"] == f'"{tmp_path}/lab known_hosts" {home}'
    assert chosen["ControlMaster"] == "auto" and chosen["ControlPersist"] == "300s"
    assert chosen["KexAlgorithms"].startswith("curve25519-sha256,")
    assert chosen["ControlPath"] == str(transport.control_path)
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "trainer"
    new = OpenSSHTransport(endpoint(tmp_path), accept_new=True, control_dir=tmp_path / "cm")
    assert options(new.options(new.endpoint, master=True))["StrictHostKeyChecking"] == "accept-new"
    # Another strictness, other files: another connection, never the laxer one's master.
    assert new.control_path != transport.control_path
    other = OpenSSHTransport(
        endpoint(tmp_path, known_hosts_files=("/other",)), control_dir=tmp_path / "cm"
    )
    assert other.control_path != transport.control_path


def test_the_command_is_one_quoted_argument_after_the_host(tmp_path: Path) -> None:
    transport = OpenSSHTransport(
        endpoint(tmp_path, address="-oProxyCommand=evil", become=True),
        control_dir=tmp_path / "cm",
    )
    argv = transport._argv
    assert argv[-2:] == ["--", "-oProxyCommand=evil"]  # after '--': a host, not an option
    line = command_line(transport.endpoint, ["echo", "$HOME; rm -rf /"])
    assert shlex.split(line) == ["sudo", "-n", "-H", "--", "echo", "$HOME; rm -rf /"]


def test_a_jump_host_is_verified_with_the_same_files(tmp_path: Path) -> None:
    files = ("/lab/kh%d",)  # ssh expands % tokens: a literal one is written %%
    jump = endpoint(tmp_path, name="jump", address="192.0.2.1", port=22, known_hosts_files=files)
    transport = OpenSSHTransport(
        endpoint(tmp_path, jump=jump, known_hosts_files=files), control_dir=tmp_path / "cm"
    )
    outer = options(transport.options(transport.endpoint, master=True))
    assert outer["UserKnownHostsFile"] == "/lab/kh%%d"
    words = shlex.split(outer["ProxyCommand"])  # run by sh: every word quoted
    assert words[0] == "ssh" and words[-4:] == ["-W", "%h:%p", "--", "192.0.2.1"]
    inner = options(words)
    assert inner["StrictHostKeyChecking"] == "yes"
    # The outer ssh expands the line once (%%%% -> %%), the inner ssh its options again.
    assert inner["UserKnownHostsFile"] == "/lab/kh%%%%d"
    assert inner["ControlPath"] == "none"  # the jump's connection lives inside the master


def test_a_missing_key_file_is_refused_as_paramiko_does(tmp_path: Path) -> None:
    with pytest.raises(UnreachableError, match=r"private key file .* does not exist"):
        OpenSSHTransport(
            endpoint(tmp_path, key_files=(str(tmp_path / "nothere"),)),
            control_dir=tmp_path / "cm",
        )


def test_the_control_directory_is_private(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "a" / "cm", "gpu01")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert stat.S_IMODE(private_dir(loose, "gpu01").stat().st_mode) == 0o700
    link = tmp_path / "link"
    link.symlink_to(loose)
    with pytest.raises(UnreachableError, match="not a directory of this user's own"):
        private_dir(link, "gpu01")
    with pytest.raises(UnreachableError, match="too long a path for a socket"):
        private_dir(Path("/tmp") / ("x" * 80), "gpu01")


def test_the_ssh_client_is_chosen_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_SSH_CLIENT", raising=False)
    connector = ClientConnector()
    plain = Host("a", {})
    assert connector.client(plain) == "openssh"
    assert connector.client(Host("b", {"fleet_ssh_client": "paramiko"})) == "paramiko"
    monkeypatch.setenv("FLEET_SSH_CLIENT", "paramiko")
    assert connector.client(plain) == "paramiko"
    assert connector.client(Host("c", {"fleet_ssh_client": "openssh"})) == "openssh"
    with pytest.raises(InventoryError, match="fleet_ssh_client 'putty'"):
        connector.client(Host("d", {"fleet_ssh_client": "putty"}))
    monkeypatch.setenv("FLEET_SSH_CLIENT", "putty")
    with pytest.raises(UsageError, match="FLEET_SSH_CLIENT"):
        connector.client(plain)
    monkeypatch.delenv("FLEET_SSH_CLIENT")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert connector.client(plain) == "paramiko"  # no ssh installed: the fallback


def test_endpoints_resolve_as_for_paramiko_without_an_ssh_config(tmp_path: Path) -> None:
    connector = OpenSSHConnector(ssh_config=tmp_path / "none", connect_timeout=3)
    resolved = connector.endpoint(
        "gpu01",
        {
            "ansible_host": "10.1.1.1",
            "ansible_port": 2200,
            "ansible_user": "trainer",
            "ansible_ssh_common_args": "-o UserKnownHostsFile=/a/kh",
            "fleet_known_hosts": "/b/kh",
        },
    )
    assert (resolved.address, resolved.port, resolved.user) == ("10.1.1.1", 2200, "trainer")
    assert resolved.known_hosts_files == ("/a/kh", "/b/kh", "~/.ssh/known_hosts")
    assert resolved.connect_timeout == 3

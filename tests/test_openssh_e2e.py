"""End to end on the lab: the OpenSSH client transport (real sshd, pinned host keys).

Each test's connections share a control directory of the module's own, whose masters are
closed when the module ends (they would otherwise outlive it by 60 idle seconds).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleet.errors import CommandError, HostError, HostKeyError, UnreachableError
from fleet.lab import nodes as lab
from fleet.ssh.endpoint import Endpoint
from fleet.ssh.known_hosts import KnownHosts
from fleet.ssh.openssh import OpenSSHTransport
from fleet.ssh.paramiko_client import SSHTransport
from tests.conftest import LabFixture

pytestmark = [pytest.mark.lab]


def close_masters(directory: Path) -> None:
    for socket in directory.iterdir():
        subprocess.run(
            ["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "--", "lab"],
            capture_output=True,
            check=False,
        )
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def control_dir() -> Iterator[Path]:
    # A socket path must fit in 108 bytes: pytest's temporary directories are too deep.
    directory = Path(tempfile.mkdtemp(prefix="fleet-cm-"))
    yield directory
    close_masters(directory)


def pinned(env: LabFixture, host: str = "lab1") -> Endpoint:
    return next(e for e in lab.endpoints(env.lab) if e.name == host)


def connect(control_dir: Path, endpoint: Endpoint, *, accept_new: bool = False) -> OpenSSHTransport:
    return OpenSSHTransport(endpoint, accept_new=accept_new, control_dir=control_dir)


def master_pid(transport: OpenSSHTransport) -> int:
    checked = subprocess.run(
        ["ssh", "-o", f"ControlPath={transport.control_path}", "-O", "check", "--", "lab"],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"pid=(\d+)", checked.stderr)
    assert checked.returncode == 0 and found, checked.stderr
    return int(found.group(1))


def exists_on(env: LabFixture, path: str) -> bool:
    """Asked over paramiko, independently of the transport under test."""
    transport = SSHTransport(pinned(env), KnownHosts([env.lab.known_hosts]))
    try:
        return transport.run(["test", "-e", path], check=False).exit_code == 0
    finally:
        transport.close()


def test_runs_commands_with_pinned_keys(lab_env: LabFixture, control_dir: Path) -> None:
    transport = connect(control_dir, pinned(lab_env))
    ran = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (ran.exit_code, ran.stdout, ran.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandError) as caught:
        transport.run(["sh", "-c", "echo broken >&2; exit 4"])
    assert caught.value.returncode == 4 and "broken" in str(caught.value)
    # argv words reach the host as they are: no shell expands or splits them.
    words = ["a b", "$HOME", "'q'", "; touch /tmp/injected"]
    assert transport.run(["printf", "%s|", *words]).stdout == "|".join(words) + "|"
    # The command's own exit 255 is its exit code, not a lost connection.
    assert transport.run(["sh", "-c", "exit 255"], check=False).exit_code == 255


def test_stdin_and_streams_reach_the_command(lab_env: LabFixture, control_dir: Path) -> None:
    transport = connect(control_dir, pinned(lab_env))
    data = bytes(range(256)) * 64
    digest = transport.run(["sha256sum"], stdin=data).stdout.split()[0]
    assert digest == hashlib.sha256(data).hexdigest()
    streamed = transport.stream(["wc", "-c"], (b"x" * (1 << 20) for _ in range(5)))
    assert streamed.stdout.strip() == str(5 << 20)


def test_the_connection_is_shared_and_persists(lab_env: LabFixture, control_dir: Path) -> None:
    transport = connect(control_dir, pinned(lab_env, "lab2"))
    transport.run(["true"])
    first = master_pid(transport)
    assert transport.master_running()
    # A later run (a new transport, as the next 'fleet audit' makes) uses the same master:
    # no new connection, no handshake.
    again = connect(control_dir, pinned(lab_env, "lab2"))
    sshd_before = again.run(["sh", "-c", "pgrep -c -x sshd || true"]).stdout
    assert again.run(["hostname"]).ok
    assert master_pid(again) == first
    assert again.run(["sh", "-c", "pgrep -c -x sshd || true"]).stdout == sshd_before
    again.close()  # closes nothing: the master stays for the next run
    assert again.master_running()
    again.stop_master()
    assert not again.master_running()


def test_the_control_directory_is_private(lab_env: LabFixture) -> None:
    directory = Path(tempfile.mkdtemp(prefix="fleet-cm-")) / "sockets"
    transport = connect(directory, pinned(lab_env))
    try:
        transport.run(["true"])
        info = directory.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
        assert transport.control_path.parent == directory and transport.control_path.is_socket()
        assert stat.S_IMODE(transport.control_path.stat().st_mode) & 0o077 == 0
    finally:
        transport.stop_master()
        close_masters(directory.parent)


def test_an_unknown_host_key_is_refused_and_nothing_runs(
    lab_env: LabFixture, control_dir: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    marker = f"/tmp/fleet-openssh-{uuid.uuid4().hex[:8]}"
    endpoint = dataclasses.replace(pinned(lab_env), known_hosts_files=(str(empty),))
    with pytest.raises(HostKeyError) as caught:
        connect(control_dir, endpoint).run(["touch", marker])
    assert "unknown" in caught.value.reason and "--accept-new-host-keys" in str(caught.value.fix)
    assert empty.read_text() == ""
    assert not exists_on(lab_env, marker)


def test_accept_new_records_an_unknown_key(
    lab_env: LabFixture, control_dir: Path, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    endpoint = dataclasses.replace(pinned(lab_env), known_hosts_files=(str(known),))
    assert connect(control_dir, endpoint, accept_new=True).run(["true"]).ok
    recorded = known.read_text().split()
    assert recorded[0] == endpoint.known_hosts_name  # plain, as paramiko writes it
    pinned_key = lab_env.lab.known_hosts.read_text()
    assert f"{recorded[0]} {recorded[1]} {recorded[2]}" in pinned_key
    strict = connect(control_dir, endpoint)  # a later run without the flag trusts it
    assert strict.run(["true"]).ok
    strict.stop_master()


def test_a_changed_host_key_is_refused_and_nothing_runs(
    lab_env: LabFixture, control_dir: Path, tmp_path: Path
) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
        check=True,
    )
    endpoint = pinned(lab_env)
    kind, key = (tmp_path / "other.pub").read_text().split()[:2]
    forged = tmp_path / "known_hosts"
    forged.write_text(f"{endpoint.known_hosts_name} {kind} {key}\n")
    marker = f"/tmp/fleet-openssh-{uuid.uuid4().hex[:8]}"
    changed = dataclasses.replace(endpoint, known_hosts_files=(str(forged),))
    for accept_new in (False, True):  # accept-new never accepts a changed key
        with pytest.raises(HostKeyError) as caught:
            connect(control_dir, changed, accept_new=accept_new).run(["touch", marker])
        assert "CHANGED" in caught.value.reason and "SHA256:" in caught.value.reason
        assert "ssh-keygen -R" in str(caught.value.fix)
    assert forged.read_text() == f"{endpoint.known_hosts_name} {kind} {key}\n"
    assert not exists_on(lab_env, marker)


def test_unreachable_hosts_say_why(lab_env: LabFixture, control_dir: Path, tmp_path: Path) -> None:
    closed = dataclasses.replace(pinned(lab_env), port=9, connect_timeout=5)
    with pytest.raises(UnreachableError) as caught:
        connect(control_dir, closed).run(["true"])
    assert "127.0.0.1:9" in caught.value.reason and "Connection refused" in caught.value.reason
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")],
        check=True,
    )
    stranger = dataclasses.replace(pinned(lab_env), key_files=(str(tmp_path / "stranger"),))
    with pytest.raises(UnreachableError) as caught:
        connect(control_dir, stranger).run(["true"])
    assert "Permission denied" in caught.value.reason
    assert "authorized_keys" in str(caught.value.fix)


def test_a_command_past_its_timeout_fails_the_host(lab_env: LabFixture, control_dir: Path) -> None:
    transport = connect(control_dir, pinned(lab_env))
    with pytest.raises(HostError, match="timed out after 1s"):
        transport.run(["sleep", "10"], timeout=1)
    assert transport.run(["true"]).ok  # the shared connection survived


def test_each_host_gets_the_client_it_asks_for(lab_env: LabFixture) -> None:
    from fleet.hosts.inventory import Host
    from fleet.runner import ClientConnector

    vars_ = yaml.safe_load(lab_env.inventory.read_text())["all"]["children"]["lab"]
    settings = {**vars_["vars"], **vars_["hosts"]["lab1"]}
    connector = ClientConnector(connect_timeout=10)
    chosen = connector(Host("lab1", {**settings, "fleet_ssh_client": "paramiko"}))
    try:
        assert isinstance(chosen, SSHTransport) and chosen.run(["true"]).ok
    finally:
        chosen.close()
    default = connector(Host("lab1", settings))
    assert isinstance(default, OpenSSHTransport) and default.run(["true"]).ok
    default.stop_master()


@pytest.fixture
def own_control_dir() -> Iterator[Path]:
    """A control directory of the test's own: no master of another test is in it."""
    directory = Path(tempfile.mkdtemp(prefix="fleet-cm-"))
    yield directory
    close_masters(directory)


def test_a_command_that_reuses_connections_takes_an_open_one_else_connects_with_paramiko(
    lab_env: LabFixture, own_control_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """exec, facts, ps: a host's shared connection when one is open (no handshake at all),
    else paramiko's cheaper handshake, opening nothing that outlives the run."""
    from fleet.hosts import inventory as inventory_mod
    from fleet.runner import ClientConnector

    monkeypatch.delenv("FLEET_SSH_CLIENT", raising=False)
    host = inventory_mod.load([lab_env.inventory]).host("lab2")
    reusing = ClientConnector(default="paramiko", reuse=True, control_dir=own_control_dir)
    sockets = set(own_control_dir.iterdir())
    first = reusing(host)
    try:
        assert isinstance(first, SSHTransport), type(first)
        assert first.run(["true"]).exit_code == 0
    finally:
        first.close()
    assert set(own_control_dir.iterdir()) == sockets, "paramiko's run left a shared connection"
    # Another command (audit) opens the host's shared connection and keeps it ...
    opening = ClientConnector(default="openssh", control_dir=own_control_dir)
    opened = opening(host)
    assert isinstance(opened, OpenSSHTransport)
    assert opened.run(["true"]).exit_code == 0
    pid = master_pid(opened)
    # ... which the next command takes, through the same master.
    second = reusing(host)
    assert isinstance(second, OpenSSHTransport), type(second)
    assert second.run(["echo", "again"]).stdout.strip() == "again"
    assert master_pid(second) == pid
    # A host the inventory gives paramiko keeps it, shared connection or not.
    pinned_host = dataclasses.replace(host, vars={**host.vars, "fleet_ssh_client": "paramiko"})
    forced = reusing(pinned_host)
    try:
        assert isinstance(forced, SSHTransport)
    finally:
        forced.close()


def counting_ssh(tmp_path: Path) -> tuple[str, Path]:
    """An ``ssh`` that logs each start, then runs the real one."""
    calls = tmp_path / "ssh-calls"
    wrapper = tmp_path / "ssh"
    real = shutil.which("ssh")
    wrapper.write_text(f'#!/bin/sh\necho "$*" >>{calls}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), calls


def test_commands_over_an_open_master_start_no_ssh(
    lab_env: LabFixture, own_control_dir: Path, tmp_path: Path
) -> None:
    """After the first command opened the master, commands are sessions asked of it
    directly: the same streams, exit codes and input, and no ssh process."""
    ssh, calls = counting_ssh(tmp_path)
    transport = OpenSSHTransport(pinned(lab_env), control_dir=own_control_dir, ssh=ssh)
    assert transport.run(["true"]).ok
    assert len(calls.read_text().splitlines()) == 1  # the master's
    ran = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (ran.exit_code, ran.stdout, ran.stderr) == (3, "out\n", "err\n")
    # More than a pipe holds, both ways: nothing waits on the other side.
    data = os.urandom(3 << 20)
    digest = transport.run(["sha256sum"], stdin=data).stdout.split()[0]
    assert digest == hashlib.sha256(data).hexdigest()
    assert len(transport.run(["head", "-c", str(5 << 20), "/dev/zero"]).stdout) == 5 << 20
    words = ["a b", "$HOME", "'q'", "; touch /tmp/injected"]
    assert transport.run(["printf", "%s|", *words]).stdout == "|".join(words) + "|"
    assert len(calls.read_text().splitlines()) == 1
    # The command's own 255 and a timeout, as with ssh. The master's status says it was the
    # command's: no `ssh -O check` is run to tell it from ssh failing.
    assert transport.run(["sh", "-c", "exit 255"], check=False).exit_code == 255
    assert len(calls.read_text().splitlines()) == 1
    with pytest.raises(HostError, match="timed out after 1s"):
        transport.run(["sleep", "10"], timeout=1)
    with pytest.raises(HostError, match="more than"):
        transport.run(["head", "-c", str(65 << 20), "/dev/zero"])
    assert transport.run(["true"]).ok


def test_a_master_gone_mid_command_is_a_lost_connection_then_a_new_one(
    lab_env: LabFixture, own_control_dir: Path
) -> None:
    transport = connect(own_control_dir, pinned(lab_env, "lab2"))
    assert transport.run(["true"]).ok
    master = master_pid(transport)
    killer = subprocess.Popen(["sh", "-c", f"sleep 1; kill {master}"])
    try:
        with pytest.raises(UnreachableError, match="shared connection ended running"):
            transport.run(["sleep", "20"], timeout=15)
    finally:
        killer.wait()
    # A socket left by the dead master (or none): the next command connects anew.
    assert transport.run(["hostname"]).ok
    assert master_pid(transport) != master


def test_a_stale_control_socket_is_passed_over(lab_env: LabFixture, own_control_dir: Path) -> None:
    """A socket file no master listens on (a controller killed with its masters): nothing
    runs through it, and ssh connects anew in its place."""
    import socket

    transport = connect(own_control_dir, pinned(lab_env))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(transport.control_path))
    stale.close()
    assert transport.control_path.is_socket() and not transport.master_running()
    assert transport.run(["echo", "anew"]).stdout == "anew\n"
    assert transport.master_running()

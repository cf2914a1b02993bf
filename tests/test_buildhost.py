"""The build host without a lab: the relay, the layer rules, the engine check, CLI errors.

The relay is driven through fakes of fleet's own ``Splicer`` interface that join each
accepted socket to a local peer instead of an SSH session.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from fleet.errors import EngineError
from fleet.images import daemon
from fleet.images.spec import chain_ids
from fleet.ops import buildhost
from fleet.ssh.base import CommandResult
from tests import fakes
from tests.conftest import run_cli
from tests.framework import FrameworkProject

DIFFS = ("sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64)


# -- which layers come back ------------------------------------------------------------------
def test_missing_layers_are_those_whose_chain_the_controller_lacks() -> None:
    chains = chain_ids(DIFFS)
    assert buildhost.missing_layers(DIFFS, frozenset(chains[:2])) == {2}
    assert buildhost.missing_layers(DIFFS, frozenset(chains)) == frozenset()
    assert buildhost.missing_layers(DIFFS, frozenset()) == {0, 1, 2}
    # A layer's diff ID alone is not its chain: the same top layer on another base is new.
    assert buildhost.missing_layers(DIFFS, frozenset({DIFFS[2]})) == {0, 1, 2}


def test_a_containerd_controller_gets_every_layer() -> None:
    assert buildhost.missing_layers(DIFFS, None) == {0, 1, 2}


# -- the relay -------------------------------------------------------------------------------
class EchoSplicer:
    """Joins each connection to an "upper-casing echo" and records the argv it ran."""

    host = "fake"

    def __init__(self, code: int = 0) -> None:
        self.code = code
        self.argvs: list[tuple[str, ...]] = []

    def splice(self, argv: Sequence[str], sock: socket.socket) -> int:
        self.argvs.append(tuple(argv))
        with sock:
            while data := sock.recv(65536):
                sock.sendall(data.upper())
        return self.code


def _ask(path: Path, text: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
        client.sendall(text)
        client.shutdown(socket.SHUT_WR)
        received = b""
        while data := client.recv(65536):
            received += data
        return received


def test_relay_joins_each_connection_to_dial_stdio_in_a_private_directory() -> None:
    splicer = EchoSplicer()
    relay = buildhost.DockerRelay(splicer)
    directory = relay.path.parent
    try:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert directory.stat().st_uid == os.getuid()
        assert relay.base_url == f"unix://{relay.path}"
        assert _ask(relay.path, b"ping one") == b"PING ONE"
        assert _ask(relay.path, b"ping two") == b"PING TWO"
        assert splicer.argvs == [buildhost.DIAL_STDIO, buildhost.DIAL_STDIO]
        assert relay.connections == 2
        assert relay.errors == []
    finally:
        relay.close()
    assert not directory.exists()


def test_relay_records_a_failing_remote_command_and_close_ends_open_sessions() -> None:
    failing = buildhost.DockerRelay(EchoSplicer(code=1))
    try:
        _ask(failing.path, b"x")
    finally:
        failing.close()
    assert failing.errors == ["'docker system dial-stdio' exited 1"]

    splicer = EchoSplicer()
    relay = buildhost.DockerRelay(splicer)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(relay.path))
    client.sendall(b"left open")
    assert client.recv(100) == b"LEFT OPEN"
    closer = threading.Thread(target=relay.close)
    closer.start()
    closer.join(15)
    assert not closer.is_alive(), "close() waited forever on an open session"
    assert client.recv(100) == b""  # the session was ended
    client.close()
    assert not relay.path.parent.exists()


class EngineSplicer:
    """Joins each connection to this machine's Docker socket: a local dial-stdio."""

    host = "local"

    def splice(self, argv: Sequence[str], sock: socket.socket) -> int:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as engine, sock:
            engine.connect("/var/run/docker.sock")

            def back() -> None:
                while data := engine.recv(65536):
                    sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)

            thread = threading.Thread(target=back, daemon=True)
            thread.start()
            try:
                while data := sock.recv(65536):
                    engine.sendall(data)
            except OSError:
                pass
            engine.shutdown(socket.SHUT_RDWR)
            thread.join(5)
        return 0


@pytest.mark.skipif(not Path("/var/run/docker.sock").exists(), reason="no local Docker engine")
def test_docker_py_speaks_through_the_relay() -> None:
    with buildhost.DockerRelay(EngineSplicer()) as relay:
        client = daemon.connect_url(relay.base_url, where="the relay", fix="-")
        try:
            assert daemon.image_store(client) in ("classic", "containerd")
            assert client.version()["ApiVersion"]
        finally:
            client.close()
        assert relay.connections >= 1


# -- the engine check ------------------------------------------------------------------------
class FakeTransport(fakes.FakeTransport):
    """A transport of fleet's interface that answers one command."""

    def __init__(self, result: CommandResult) -> None:
        super().__init__("big")
        self.result = result

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        return self.result


def test_engine_check_passes_an_answering_engine() -> None:
    fake = FakeTransport(CommandResult("docker version", 0, "20.10.24+dfsg1\n", "", 0.1))
    buildhost.check_engine(fake)
    assert fake.commands == [["docker", "version", "--format", "{{.Server.Version}}"]]


@pytest.mark.parametrize(
    ("stderr", "fix"),
    [
        (
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
            "Is the docker daemon running?",
            "start the host's Docker engine",
        ),
        (
            "permission denied while trying to connect to the Docker daemon socket at "
            "unix:///var/run/docker.sock",
            "'docker' group",
        ),
        ("sh: 1: docker: not found", "install Docker on the host"),
    ],
)
def test_engine_check_fails_with_the_hosts_words_and_the_fix(stderr: str, fix: str) -> None:
    fake = FakeTransport(CommandResult("docker version", 1, "", stderr, 0.1))
    with pytest.raises(EngineError) as caught:
        buildhost.check_engine(fake)
    assert "build host big" in caught.value.message
    assert stderr in caught.value.message
    assert caught.value.fix is not None and fix in caught.value.fix


# -- the command line ------------------------------------------------------------------------
@pytest.fixture
def committed(tmp_path: Path) -> FrameworkProject:
    project = FrameworkProject.create(tmp_path / "fw", "fleet-test-bh-unit")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "v1")
    return project


def _inventory(tmp_path: Path, port: int) -> Path:
    hosts = {name: {"ansible_host": "127.0.0.1", "ansible_port": port} for name in ("big1", "big2")}
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    return path


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("nosuch", "'nosuch': 'nosuch' in pattern 'nosuch' matches no host"),
        ("big*", "'big*' selects 2 hosts of the inventory (big1, big2)"),
    ],
)
def test_build_host_must_name_one_inventory_host(
    tmp_path: Path,
    committed: FrameworkProject,
    capsys: pytest.CaptureFixture[str],
    pattern: str,
    words: str,
) -> None:
    inventory = _inventory(tmp_path, _closed_port())
    code, out, err = run_cli(
        capsys,
        "build",
        "--project",
        str(committed.root),
        "-i",
        str(inventory),
        "--build-host",
        pattern,
    )
    assert code == 5, err
    assert f"--build-host {words}" in err
    assert out == ""


def test_an_unreachable_build_host_exits_3_with_the_reason(
    tmp_path: Path, committed: FrameworkProject, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    inventory = _inventory(tmp_path, port)
    code, _, err = run_cli(
        capsys,
        "build",
        "--project",
        str(committed.root),
        "-i",
        str(inventory),
        "--build-host",
        "big2",
        "-T",
        "3",
    )
    assert code == 3, err
    assert "big2" in err and f"127.0.0.1:{port}" in err

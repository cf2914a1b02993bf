"""The control-socket client (fleet.ssh.mux) against sockets that are not a willing master:
each says whether the command may have run. The real OpenSSH master is exercised end to
end in tests/test_openssh_e2e.py; here a socket of the test's own plays the other side.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet.ssh import mux

HELLO, NEW_SESSION, FAILURE, EXIT, OPENED = (
    0x00000001,
    0x10000002,
    0x80000003,
    0x80000004,
    0x80000006,
)


def packet(*words: int, tail: bytes = b"") -> bytes:
    body = b"".join(struct.pack(">I", w) for w in words) + tail
    return struct.pack(">I", len(body)) + body


def read_packet(conn: socket.socket) -> bytes:
    (length,) = struct.unpack(">I", conn.recv(4, socket.MSG_WAITALL))
    return conn.recv(length, socket.MSG_WAITALL)


Side = Callable[[socket.socket], None]


@pytest.fixture
def master() -> Iterator[Callable[[Side], Path]]:
    """A listening socket whose one connection is handled by the test's ``side``."""
    directory = Path(tempfile.mkdtemp(prefix="fleet-mux-"))
    threads: list[threading.Thread] = []

    def start(side: Side) -> Path:
        path = directory / "m"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen(1)

        def serve() -> None:
            conn, _ = server.accept()
            with conn, server:
                side(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield start
    for thread in threads:
        thread.join(timeout=5)
    for item in directory.iterdir():
        item.unlink()
    directory.rmdir()


def receive_session(conn: socket.socket) -> tuple[bytes, list[int]]:
    """The hello exchange, the session request and the three descriptors."""
    conn.sendall(packet(HELLO, 4))
    assert read_packet(conn) == struct.pack(">II", HELLO, 4)
    request = read_packet(conn)
    fds: list[int] = []
    for _ in range(3):
        _, got, _, _ = socket.recv_fds(conn, 1, 1)
        fds += got
    return request, fds


def run(path: Path, stdin: bytes | None = None) -> mux.Finished:
    with tempfile.TemporaryFile() as errors:
        return mux.run(
            path,
            "echo 'a b'",
            stdin=stdin,
            stderr=errors.fileno(),
            timeout=10,
            connect_timeout=5,
            limit=1 << 20,
        )


def test_a_session_runs_with_its_streams_and_exit_status(master: Callable[[Side], Path]) -> None:
    seen: dict[str, bytes] = {}

    def side(conn: socket.socket) -> None:
        request, (stdin, stdout, stderr) = receive_session(conn)
        seen["request"] = request
        seen["stdin"] = os.read(stdin, 100)
        conn.sendall(packet(OPENED, 1, 9))
        os.write(stdout, b"out\n")
        for fd in (stdin, stdout, stderr):
            os.close(fd)
        conn.sendall(packet(EXIT, 9, 7))

    done = run(master(side), stdin=b"given")
    assert (done.code, done.stdout, done.lost) == (7, b"out\n", "")
    assert seen["stdin"] == b"given"
    command = b"echo 'a b'"
    assert seen["request"].endswith(struct.pack(">I", len(command)) + command)
    assert seen["request"].startswith(struct.pack(">II", NEW_SESSION, 1))


def test_another_protocol_version_opens_nothing(master: Callable[[Side], Path]) -> None:
    def side(conn: socket.socket) -> None:
        conn.sendall(packet(HELLO, 3))
        read_packet(conn)

    with pytest.raises(mux.Unavailable, match="version 3"):
        run(master(side))


def test_a_socket_that_hangs_up_at_once_opens_nothing(master: Callable[[Side], Path]) -> None:
    with pytest.raises(mux.Unavailable):
        run(master(lambda conn: None))


def test_no_master_at_the_path_opens_nothing(tmp_path: Path) -> None:
    with pytest.raises(mux.Unavailable):
        run(tmp_path / "none")


def test_a_refusal_says_nothing_ran(master: Callable[[Side], Path]) -> None:
    def side(conn: socket.socket) -> None:
        _, fds = receive_session(conn)
        reason = b"open failed"
        conn.sendall(packet(FAILURE, 1, len(reason), tail=reason))
        for fd in fds:
            os.close(fd)

    with pytest.raises(mux.Unavailable, match="refused a session: open failed"):
        run(master(side))


def test_a_master_gone_after_the_request_may_have_run_it(master: Callable[[Side], Path]) -> None:
    """Asked, then no answer: not "nothing ran", so the caller must not run it again."""

    def side(conn: socket.socket) -> None:
        _, fds = receive_session(conn)
        for fd in fds:
            os.close(fd)

    done = run(master(side))
    assert done.code is None and done.lost


def test_no_exit_status_before_the_end_is_none(master: Callable[[Side], Path]) -> None:
    """A command killed by a signal: the master closes without a status (ssh says 255)."""

    def side(conn: socket.socket) -> None:
        _, fds = receive_session(conn)
        conn.sendall(packet(OPENED, 1, 3))
        for fd in fds:
            os.close(fd)

    done = run(master(side))
    assert done.code is None and not done.lost and done.stdout == b""


@pytest.mark.parametrize("size", [0, 10, 4096, 4097, 1 << 20])
def test_input_of_any_size_reaches_the_command_whole(
    master: Callable[[Side], Path], size: int
) -> None:
    """Small input (a credential) in a pipe, larger in memory: all of it, then its end."""
    data = os.urandom(size)
    seen: list[bytes] = []

    def side(conn: socket.socket) -> None:
        _, (stdin, stdout, stderr) = receive_session(conn)
        chunks = []
        while chunk := os.read(stdin, 65536):
            chunks.append(chunk)
        seen.append(b"".join(chunks))
        conn.sendall(packet(OPENED, 1, 1))
        for fd in (stdin, stdout, stderr):
            os.close(fd)
        conn.sendall(packet(EXIT, 1, 0))

    assert run(master(side), stdin=data).code == 0
    assert seen == [data]

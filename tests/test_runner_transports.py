"""How the runner reaches hosts: the controller itself (delegate_to: localhost,
ansible_connection: local), and no more new handshakes at once than --max-starts."""

from __future__ import annotations

import threading
import time

import pytest

from fleet.errors import CommandError, HostError
from fleet.hosts.model import Host
from fleet.runner import Runner
from fleet.ssh.base import CommandResult
from fleet.ssh.local import LocalTransport
from tests.fakes import FakeTransport


def test_commands_run_here_as_argv_with_stdin_and_their_exit_code() -> None:
    local = LocalTransport("web1")
    ran = local.run(["sh", "-c", 'printf "%s|" "$1"; cat', "sh", "a b; $(x)"], stdin=b"in")
    assert (ran.exit_code, ran.stdout) == (0, "a b; $(x)|in")
    assert local.host == "web1"
    failed = local.run(["sh", "-c", "echo no >&2; exit 3"], check=False)
    assert (failed.exit_code, failed.stderr) == (3, "no\n")
    with pytest.raises(CommandError):
        local.run(["false"])
    with pytest.raises(HostError, match=r"timed out after 0\.2s"):
        local.run(["sleep", "5"], timeout=0.2)
    with pytest.raises(HostError, match="cannot run"):
        local.run(["/nonexistent/tool"])


def test_the_runner_reaches_a_local_host_without_connecting() -> None:
    def connect(host: Host) -> LocalTransport:
        raise AssertionError(f"{host.name} was to run here, not be connected to")

    runner = Runner(connect)  # type: ignore[arg-type]
    host = Host("web1", {"ansible_connection": "local"})
    assert isinstance(runner.transport(host), LocalTransport)
    assert runner.transport(host) is runner.transport(host)


class Handshaking(FakeTransport):
    """A host whose connection (or, ``lazy``, whose first command) takes a while: counts
    how many of those overlap."""

    now = 0
    most = 0
    lock = threading.Lock()

    def __init__(self, host: str, lazy: bool) -> None:
        self.lazy = lazy
        super().__init__(host)
        if not lazy:
            self.handshake()

    @classmethod
    def handshake(cls) -> None:
        with cls.lock:
            cls.now += 1
            cls.most = max(cls.most, cls.now)
        time.sleep(0.05)
        with cls.lock:
            cls.now -= 1

    def needs_handshake(self) -> bool:
        return self.lazy and not self.commands

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        if self.lazy and len(self.commands) == 1:
            self.handshake()
        return super().answer(argv, stdin)


@pytest.mark.parametrize("lazy", [False, True])
def test_no_more_handshakes_at_once_than_max_starts(lazy: bool) -> None:
    Handshaking.most = 0
    runner = Runner(lambda host: Handshaking(host.name, lazy), forks=12, max_starts=3)  # type: ignore[arg-type]
    hosts = [Host(f"h{i}", {}) for i in range(12)]
    result = runner.run("exec", hosts, lambda ctx: ctx.run_command(["true"]))
    assert all(r.succeeded for r in result.results)
    assert Handshaking.most == 3

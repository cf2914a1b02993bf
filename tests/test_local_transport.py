"""The controller as a transport: delegate_to: localhost, ansible_connection: local."""

from __future__ import annotations

import pytest

from fleet.errors import CommandError, HostError
from fleet.hosts.model import Host
from fleet.runner import Runner
from fleet.ssh.local import LocalTransport


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

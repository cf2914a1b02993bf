"""Become with a password: the sudo handshake on a scripted channel, and where the password goes."""

from __future__ import annotations

import pytest

from fleet.errors import HostError
from fleet.hosts.model import Host
from fleet.runner import ClientConnector
from fleet.ssh import become
from fleet.ssh.endpoint import command_line, resolve


class Channel:
    """A remote stderr given in advance, and what the controller wrote to the stdin."""

    def __init__(self, *pieces: bytes) -> None:
        self.pending = b"".join(pieces)
        self.sent: list[bytes] = []

    def read(self) -> bytes:
        byte, self.pending = self.pending[:1], self.pending[1:]
        return byte

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def test_the_password_answers_the_prompt_and_the_command_output_is_left_unread() -> None:
    wrapped = become.wrap(["id", "-u"], None)
    channel = Channel(wrapped.prompt, wrapped.marker, b"the command's own stderr")
    become.handshake("lab1", wrapped, "s3cret", read=channel.read, send=channel.send)
    assert channel.sent == [b"s3cret\n"]
    assert channel.pending == b"the command's own stderr"


def test_sudo_without_a_prompt_gets_no_password() -> None:
    """Cached credentials or NOPASSWD: the password never reaches the command's stdin."""
    wrapped = become.wrap(["id"], None)
    channel = Channel(wrapped.marker)
    become.handshake("lab1", wrapped, "s3cret", read=channel.read, send=channel.send)
    assert channel.sent == []


def test_a_second_prompt_is_a_rejected_password_and_nothing_is_retried() -> None:
    wrapped = become.wrap(["id"], None)
    channel = Channel(wrapped.prompt, b"Sorry, try again.\n", wrapped.prompt)
    with pytest.raises(HostError, match="become password rejected") as caught:
        become.handshake("lab1", wrapped, "wrong", read=channel.read, send=channel.send)
    assert channel.sent == [b"wrong\n"]
    assert caught.value.host == "lab1" and "-K" in str(caught.value.fix)


def test_sudo_refusing_ends_the_host_with_its_last_line() -> None:
    wrapped = become.wrap(["id"], None)
    channel = Channel(
        b"\nWe trust you have received the usual lecture\n", b"op is not in sudoers\n"
    )
    with pytest.raises(HostError, match="sudo refused to run the command: op is not in sudoers"):
        become.handshake("lab1", wrapped, "pw", read=channel.read, send=channel.send)


def test_a_host_that_prints_without_end_before_either_token_fails() -> None:
    wrapped = become.wrap(["id"], None)
    channel = Channel(b"x" * 20_000)
    with pytest.raises(HostError, match="sudo refused"):
        become.handshake("lab1", wrapped, "pw", read=channel.read, send=channel.send)
    assert channel.sent == []


def test_the_command_output_cannot_forge_the_tokens_of_another_command() -> None:
    first, second = become.wrap(["id"], None), become.wrap(["id"], None)
    assert first.prompt != second.prompt and first.marker != second.marker


def test_the_wrapped_command_holds_no_password_and_runs_argv_as_given() -> None:
    wrapped = become.wrap(["sh", "-c", "echo '$0'; id"], "postgres")
    assert wrapped.argv[:2] == ["sudo", "-S"]
    assert wrapped.argv[wrapped.argv.index("-u") + 1] == "postgres"
    # argv follows the marker ($0) unchanged: sh -c ... exec "$@" passes it as words.
    marker_at = wrapped.argv.index(wrapped.marker.decode().strip())
    assert wrapped.argv[marker_at + 1 :] == ["sh", "-c", "echo '$0'; id"]


def test_the_inventory_password_wins_over_ask_become_pass_and_never_shows() -> None:
    hostvars = {"ansible_become": True, "ansible_become_password": "from-inventory"}
    endpoint = resolve("lab1", hostvars, become_password="from-K")
    assert endpoint.become_password == "from-inventory"
    assert "from-inventory" not in repr(endpoint)
    assert "from-inventory" not in command_line(endpoint, ["id"])
    assert resolve("lab1", {"ansible_become": True}, become_password="k").become_password == "k"
    assert resolve("lab1", {"ansible_become_pass": "old"}).become_password == "old"


def test_hosts_that_become_with_a_password_are_read_with_paramiko() -> None:
    """Only fleet's own client answers sudo's prompt; the system's ssh would hang or fail."""
    connector = ClientConnector(default="openssh")
    plain = Host("a", vars={"ansible_become": True})
    with_password = Host("b", vars={"ansible_become": True, "ansible_become_password": "pw"})
    assert connector.client(plain) == "openssh"
    assert connector.client(with_password) == "paramiko"
    assert ClientConnector(default="openssh", become_password="k").client(plain) == "paramiko"
    no_become = Host("c", vars={"ansible_become_password": "pw"})
    assert connector.client(no_become) == "openssh"


def test_the_become_password_file_gives_its_first_line_to_owner_only_files(tmp_path) -> None:
    from fleet.cli import build_parser, common
    from fleet.errors import EXIT_BAD_FILE, EXIT_BAD_OPTIONS, InputError, UsageError

    secret = tmp_path / "become.txt"
    secret.write_text("s3cret pass\r\nignored second line\n")
    secret.chmod(0o600)
    args = build_parser().parse_args(["exec", "--become-password-file", str(secret), "--", "id"])
    assert common.become_password(args) == "s3cret pass"
    secret.chmod(0o640)  # the group may read it: refused, with the fix
    with pytest.raises(InputError) as refused:
        common.become_password(args)
    assert refused.value.exit_code == EXIT_BAD_FILE
    assert str(secret) in str(refused.value) and "chmod 600" in str(refused.value)
    assert "s3cret" not in str(refused.value)
    missing = build_parser().parse_args(
        ["exec", "--become-pass-file", str(tmp_path / "none"), "--", "id"]
    )
    with pytest.raises(InputError, match="cannot read the become password file"):
        common.become_password(missing)
    both = build_parser().parse_args(
        ["exec", "-K", "--become-password-file", str(secret), "--", "id"]
    )
    with pytest.raises(UsageError) as clash:
        common.become_password(both)
    assert clash.value.exit_code == EXIT_BAD_OPTIONS

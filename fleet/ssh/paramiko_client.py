"""The paramiko client: fleet's own SSH connection to a host, a :class:`~fleet.ssh.base.Transport`.

The core only sees :class:`~fleet.ssh.base.Transport` (``run`` a command given as an
argv, stream bytes into one, ``close``). Only the modules of :mod:`fleet.ssh` import an SSH
library: this one and :mod:`fleet.ssh.known_hosts` paramiko, :mod:`fleet.ssh.openssh` the
system's ssh (for read-only fan-out). Its policy:

- Host keys are always verified: each host against its own files only (``~/.ssh/known_hosts``,
  any ``UserKnownHostsFile`` from ssh config or the inventory, its ``fleet_known_hosts``),
  never against another host's. An unknown key is refused unless the caller opted into
  *accept-new* (then it is recorded); a changed key is always refused, with both
  fingerprints. Each file is parsed once per run and shared between threads (parsing is
  slow, and concurrent writers would overwrite each other).
- Commands are argv lists, joined with ``shlex.join``: no shell string is ever built
  from unquoted input.
- AES-GCM is preferred (fastest cipher paramiko has), and paramiko's own 512 MiB rekey
  threshold is raised so the server drives rekeys (paramiko#822: a client-side rekey
  during a channel close can deadlock multi-GB streams).
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import paramiko

from fleet.errors import CommandError, HostError, UnreachableError
from fleet.ssh import become
from fleet.ssh.base import MAX_OUTPUT, CommandResult, fix_for, too_much_output
from fleet.ssh.endpoint import DEFAULT_CONNECT_TIMEOUT, Endpoint, command_line, resolve
from fleet.ssh.known_hosts import KnownHosts, fingerprint

_READ_CHUNK = 1 << 16
_SEND_PIECE = 1 << 18
# Let the server (OpenSSH: 1-4 GiB) drive rekeys; see the module docstring.
_REKEY_BYTES = 1 << 40
_MAX_LINE = 1 << 16
# What :meth:`SSHTransport.follow` returns when it was stopped (exit codes are 0-255).
FOLLOW_STOPPED = -1


# What paramiko raises when the connection or the other side fails.
LIBRARY_ERRORS = (paramiko.SSHException, EOFError, OSError)


@contextlib.contextmanager
def translated(
    host: str, doing: str, transport: paramiko.Transport | None = None, *, fix: str | None = None
) -> Iterator[None]:
    """The one place where paramiko's failures become fleet's (as httpx maps httpcore's).

    While connecting (no ``transport`` yet) any library failure leaves the host
    unreachable. Later, a dead connection is unreachable too, while a live one that
    refused what was asked fails the host (``fix`` says what to change).
    """
    try:
        yield
    except paramiko.AuthenticationException:
        raise  # authentication tries the next key: its caller decides
    except LIBRARY_ERRORS as exc:
        detail = str(exc) or type(exc).__name__
        if transport is None or not transport.is_active():
            lost = "" if transport is None else "connection lost: "
            raise UnreachableError(host, f"{lost}{doing}: {detail}") from exc
        raise HostError(host, f"{doing}: {detail}", fix=fix) from exc


def _load_private_keys(endpoint: Endpoint) -> list[paramiko.PKey]:
    keys: list[paramiko.PKey] = []
    for name in endpoint.key_files:
        path = Path(os.path.expanduser(name))
        try:
            keys.append(paramiko.PKey.from_path(path))
        except FileNotFoundError as exc:
            raise UnreachableError(
                endpoint.name,
                f"private key file {path} does not exist",
                fix="fix ansible_ssh_private_key_file in the inventory",
            ) from exc
        except (paramiko.SSHException, ValueError) as exc:
            raise UnreachableError(endpoint.name, f"cannot read private key {path}: {exc}") from exc
    return keys


def _default_key_files() -> tuple[str, ...]:
    ssh_dir = Path.home() / ".ssh"
    names = ("id_ed25519", "id_ecdsa", "id_rsa")
    return tuple(str(ssh_dir / n) for n in names if (ssh_dir / n).is_file())


class _QuietTransport(paramiko.Transport):
    """paramiko's transport whose reader thread wakes every 5 s while the connection is
    idle, not ten times a second. The thread reads its socket with this timeout only to
    notice a close (``close()`` returns at once either way; the thread ends at its next
    wake) and to send keepalives (every 15 s); a run keeps its connections open until it
    ends, and with hundreds of hosts waiting on the slowest, the wakes cost the controller
    more CPU than the commands. A paramiko audit of 500 light hosts (38 s): 18 ms of CPU per
    host at 0.1 s, 12.9 at 1 s, 11.5 at 5 s."""

    _active_check_timeout = 5.0


class SSHTransport:
    """A verified, authenticated SSH connection to one host, reused for every command."""

    def __init__(self, endpoint: Endpoint, known_hosts: KnownHosts) -> None:
        self.endpoint = endpoint
        self._known_hosts = known_hosts
        self._jump: SSHTransport | None = None
        self._transport = self._connect()

    @property
    def host(self) -> str:
        return self.endpoint.name

    # -- connecting -------------------------------------------------------------------
    def _open_socket(self) -> socket.socket | paramiko.Channel:
        ep = self.endpoint
        if ep.jump is not None:
            self._jump = SSHTransport(ep.jump, self._known_hosts)
            try:
                return self._jump._transport.open_channel(
                    "direct-tcpip",
                    (ep.address, ep.port),
                    ("127.0.0.1", 0),
                    timeout=ep.connect_timeout,
                )
            except (paramiko.SSHException, OSError) as exc:
                raise UnreachableError(
                    ep.name,
                    f"jump host {ep.jump.name} could not reach {ep.address}:{ep.port}: {exc}",
                ) from exc
        try:
            return socket.create_connection((ep.address, ep.port), timeout=ep.connect_timeout)
        except TimeoutError as exc:
            raise UnreachableError(
                ep.name,
                f"connecting to {ep.address}:{ep.port} timed out after {ep.connect_timeout:g}s",
            ) from exc
        except OSError as exc:
            raise UnreachableError(
                ep.name, f"cannot connect to {ep.address}:{ep.port}: {exc.strerror or exc}"
            ) from exc

    def _connect(self) -> paramiko.Transport:
        ep = self.endpoint
        sock = self._open_socket()
        transport = _QuietTransport(sock)
        transport.packetizer.REKEY_BYTES = _REKEY_BYTES
        options = transport.get_security_options()
        preferred = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
        options.ciphers = preferred + tuple(c for c in options.ciphers if c not in preferred)
        try:
            try:
                transport.start_client(timeout=ep.connect_timeout)
            except LIBRARY_ERRORS as exc:
                raise UnreachableError(
                    ep.name,
                    f"SSH handshake with {ep.address}:{ep.port} failed: {exc or type(exc).__name__}",
                ) from exc
            with translated(ep.name, f"SSH handshake with {ep.address}:{ep.port} did not finish"):
                key = transport.get_remote_server_key()
            self._known_hosts.verify(ep, key)
            self._authenticate(transport)
        except BaseException:
            transport.close()
            if self._jump is not None:
                self._jump.close()
            raise
        transport.set_keepalive(15)
        return transport

    def _authenticate(self, transport: paramiko.Transport) -> None:
        ep = self.endpoint
        keys = _load_private_keys(ep) if ep.key_files else []
        if not ep.key_files:
            keys = _load_private_keys(replace(ep, key_files=_default_key_files()))
        try:
            agent_keys = list(paramiko.Agent().get_keys())
        except paramiko.SSHException:
            agent_keys = []
        errors: list[str] = []
        offers = [(f"{k.get_name()} {fingerprint(k)}", k) for k in keys]
        offers += [(f"agent key {fingerprint(k)}", k) for k in agent_keys]
        for label, key in offers:
            try:
                transport.auth_publickey(ep.user, key)
            except paramiko.AuthenticationException as exc:
                errors.append(f"{label}: {exc}")
                continue
            except LIBRARY_ERRORS as exc:
                raise UnreachableError(ep.name, f"authentication failed: {exc}") from exc
            if transport.is_authenticated():
                return
        tried = (
            "; ".join(errors)
            or "no private key found (no key file given, none in ~/.ssh, no agent)"
        )
        raise UnreachableError(
            ep.name,
            f"permission denied for {ep.user}@{ep.address}:{ep.port} ({tried})",
            fix="set ansible_ssh_private_key_file/ansible_user in the inventory, or add your "
            "public key to the host's authorized_keys",
        )

    # -- running ----------------------------------------------------------------------
    def command_line(self, argv: Sequence[str]) -> str:
        """The remote command line for ``argv``: quoted, under ``sudo -n`` when becoming."""
        return command_line(self.endpoint, argv)

    def _start(
        self,
        argv: Sequence[str],
        timeout: float | None,
        *,
        pty: tuple[str, int, int] | None = None,
    ) -> tuple[paramiko.Channel, str]:
        """A channel running ``argv`` (past sudo's prompt when becoming with a password)."""
        password = self.endpoint.become_password if self.endpoint.become else None
        wrapped = become.wrap(argv, self.endpoint.become_user) if password is not None else None
        command = shlex.join(wrapped.argv) if wrapped else self.command_line(argv)
        with translated(self.host, f"cannot start {command!r}", self._transport):
            channel = self._transport.open_session(timeout=timeout or self.endpoint.connect_timeout)
            if pty is not None:
                channel.get_pty(term=pty[0], width=pty[1], height=pty[2])
            channel.exec_command(command)
        if wrapped is not None and password is not None:
            # With a PTY sudo's prompt and the marker arrive on the merged stdout.
            read = (lambda: channel.recv(1)) if pty else (lambda: channel.recv_stderr(1))
            try:
                with translated(self.host, "sudo's password prompt", self._transport):
                    become.handshake(self.host, wrapped, password, read=read, send=channel.sendall)
            except BaseException:
                _close(channel)
                raise
        return channel, command

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        chunks: Iterable[bytes] = (stdin,) if stdin is not None else ()
        return self.stream(argv, chunks, timeout=timeout, check=check)

    def stream(
        self,
        argv: Sequence[str],
        chunks: Iterable[bytes],
        *,
        timeout: float | None = None,
        check: bool = True,
        stall_timeout: float | None = None,
    ) -> CommandResult:
        """Run ``argv`` with ``chunks`` written to its stdin while its output is read.

        ``stall_timeout``: fail when the host has not taken a chunk for that long (a frozen
        or dead host), however long the whole stream may take.
        """
        timeout = timeout if timeout is not None else self.endpoint.command_timeout
        started = time.monotonic()
        channel, command = self._start(argv, timeout)
        writer_error: list[BaseException] = []
        blocked_since: list[float | None] = [None]

        def write() -> None:
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    # paramiko's sendall re-slices what is left after every packet:
                    # keep each call small so that stays cheap.
                    for start in range(0, len(view), _SEND_PIECE):
                        blocked_since[0] = time.monotonic()
                        channel.sendall(bytes(view[start : start + _SEND_PIECE]))
                        blocked_since[0] = None
                channel.shutdown_write()
            except BaseException as exc:
                writer_error.append(exc)
                _close(channel)

        writer = threading.Thread(target=write, name=f"stdin-{self.host}", daemon=True)
        writer.start()
        try:
            stdout, stderr, code = self._collect(
                channel,
                command,
                started,
                timeout,
                lambda: _stalled(blocked_since[0], stall_timeout),
            )
        finally:
            _close(channel)
            writer.join(timeout=5)
        seconds = time.monotonic() - started
        if writer_error and code != 0 and not self._transport.is_active():
            raise UnreachableError(self.host, f"connection lost while sending to {command!r}")
        if writer_error and code == 0:
            raise HostError(self.host, f"sending input to {command!r} failed: {writer_error[0]}")
        result = CommandResult(command, code, stdout, stderr, seconds)
        if check and code != 0:
            raise CommandError(self.host, command, code, stdout, stderr, fix=fix_for(stderr))
        return result

    def _collect(
        self,
        channel: paramiko.Channel,
        command: str,
        started: float,
        timeout: float | None,
        stalled: Callable[[], float | None] = lambda: None,
    ) -> tuple[str, str, int]:
        out = _Capped(self.host, command)
        err = _Capped(self.host, command)
        while True:
            if timeout is not None and time.monotonic() - started > timeout:
                raise HostError(
                    self.host,
                    f"timed out after {timeout:g}s running {command!r}",
                    fix="raise --timeout, or look at the host: it may be frozen or overloaded",
                )
            idle = stalled()
            if idle is not None:
                raise HostError(
                    self.host,
                    f"stalled: the host took no data for {idle:.0f}s while running {command!r}",
                    fix="look at the host: it may be frozen, out of disk or overloaded",
                )
            try:
                if self._pump(channel, command, out.append, err.append, 0.5):
                    break
            except HostError:
                _close(channel)
                raise
        code = channel.recv_exit_status()
        if code == -1:
            # Closed without an exit status: the connection died, or sshd killed the session.
            deadline = time.monotonic() + 1.0
            while self._transport.is_active() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self._transport.is_active():
                raise UnreachableError(self.host, f"connection lost while running {command!r}")
            raise HostError(self.host, f"{command!r} ended without an exit status (killed?)")
        return out.text(), err.text(), code

    def _pump(
        self,
        channel: paramiko.Channel,
        command: str,
        on_stdout: Callable[[bytes], Any],
        on_stderr: Callable[[bytes], Any],
        wait: float,
    ) -> bool:
        """Hand on what the channel has; True once the command ended and all was read."""
        drained = False
        while channel.recv_ready():
            on_stdout(channel.recv(_READ_CHUNK))
            drained = True
        while channel.recv_stderr_ready():
            on_stderr(channel.recv_stderr(_READ_CHUNK))
            drained = True
        # The exit status may arrive before the last output: done only once the host also
        # said end-of-file (or closed), and everything it sent was read.
        if (
            channel.exit_status_ready()
            and (channel.eof_received or channel.closed)
            and not channel.recv_ready()
            and not channel.recv_stderr_ready()
        ):
            return True
        if channel.closed or not self._transport.is_active():
            if channel.exit_status_ready():
                return True
            raise UnreachableError(self.host, f"connection lost while running {command!r}")
        if drained:
            return False
        if channel.eof_received:
            # The channel's pipe stays readable after end-of-file: polling it would spin
            # until the exit status comes. That status sets this event.
            channel.status_event.wait(wait)
        else:
            # Output and end-of-file wake the pipe; the wait bounds only how late a
            # timeout or a stall is seen.
            _readable([channel.fileno()], wait)
        return False

    # -- sessions that outlive a command timeout ------------------------------------------
    def follow(
        self,
        argv: Sequence[str],
        on_line: Callable[[str], None],
        stop: threading.Event,
    ) -> int:
        """Run ``argv`` and hand each line of its output to ``on_line`` as it arrives.

        stdout and stderr are merged line by line (``docker logs`` writes the container's
        stderr to its own). Runs until the command ends (its exit code) or ``stop`` is
        set (the channel is closed, :data:`FOLLOW_STOPPED`). No command timeout applies;
        a lost connection raises :class:`UnreachableError`.
        """
        channel, command = self._start(argv, None)
        streams = {False: _LineBuffer(on_line), True: _LineBuffer(on_line)}
        try:
            while not stop.is_set():
                if self._pump(channel, command, streams[False].feed, streams[True].feed, 0.1):
                    break
            else:
                return FOLLOW_STOPPED
        finally:
            _close(channel)
            for buffer in streams.values():
                buffer.flush()
        code = channel.recv_exit_status()
        if code == -1 and not self._transport.is_active():
            raise UnreachableError(self.host, f"connection lost while running {command!r}")
        return code

    def interactive(
        self,
        argv: Sequence[str],
        *,
        stdin_fd: int,
        stdout_fd: int,
        stderr_fd: int | None = None,
        term: str | None = None,
        size: Callable[[], tuple[int, int]] | None = None,
    ) -> int:
        """Run ``argv`` wired to local file descriptors, with a PTY when ``term`` is given.

        With a PTY (``term``, e.g. ``$TERM``) the remote side gets a terminal of
        ``size()`` (columns, rows), polled so that a resized window follows; stdout and
        stderr then arrive merged, as on any terminal. Without one, the remote stderr goes
        to ``stderr_fd`` (or ``stdout_fd``). The caller puts its own terminal in raw mode.
        Returns the command's exit code; a lost connection raises :class:`UnreachableError`.
        """
        window = size() if size is not None else (80, 24)
        pty = (term, window[0], window[1]) if term is not None else None
        channel, command = self._start(argv, None, pty=pty)
        err_fd = stdout_fd if stderr_fd is None else stderr_fd
        reading_stdin = True
        try:
            while True:
                if term is not None and size is not None:
                    current = size()
                    if current != window:
                        window = current
                        channel.resize_pty(width=window[0], height=window[1])
                while channel.recv_ready():
                    _write_all(stdout_fd, channel.recv(_READ_CHUNK))
                while channel.recv_stderr_ready():
                    _write_all(err_fd, channel.recv_stderr(_READ_CHUNK))
                if channel.exit_status_ready() and not (
                    channel.recv_ready() or channel.recv_stderr_ready()
                ):
                    break
                if channel.closed or not self._transport.is_active():
                    break
                watched = [channel.fileno()]
                if reading_stdin:
                    watched.append(stdin_fd)
                ready = _readable(watched, 0.1)
                if reading_stdin and stdin_fd in ready:
                    data = os.read(stdin_fd, _READ_CHUNK)
                    try:
                        if data:
                            channel.sendall(data)
                        else:
                            reading_stdin = False
                            channel.shutdown_write()
                    except OSError:
                        reading_stdin = False  # the remote side is gone: its status tells
                if channel.eof_received and not (
                    channel.recv_ready() or channel.recv_stderr_ready()
                ):
                    channel.status_event.wait(0.1)
        finally:
            _close(channel)
        code = channel.recv_exit_status() if channel.exit_status_ready() else -1
        if code == -1:
            if not self._transport.is_active():
                raise UnreachableError(self.host, f"connection lost while running {command!r}")
            raise HostError(self.host, f"{command!r} ended without an exit status (killed?)")
        return code

    # -- byte pipes -------------------------------------------------------------------------
    def splice(self, argv: Sequence[str], sock: socket.socket) -> int:
        """Run ``argv`` with its stdin and stdout joined to ``sock``, until both ends close.

        The way to reach a host's Unix socket over this connection, e.g. the Docker API
        through ``docker system dial-stdio``, as the docker CLI's ``ssh://`` hosts do.
        Returns the command's exit code (-1 when it gave none); ``sock`` is closed.
        """
        channel, _ = self._start(argv, None)
        _join(channel, sock)
        return channel.recv_exit_status() if channel.exit_status_ready() else -1

    def forward_remote(self, port: int, target: tuple[str, int]) -> int:
        """Listen on the host's ``127.0.0.1:port`` and join each connection to ``target``.

        ``target`` is an address the controller connects to (OpenSSH's ``ssh -R``); ``port``
        0 lets sshd choose. Returns the host's port; :meth:`cancel_forward` ends it.
        """

        def accept(channel: paramiko.Channel, origin: Any, server: Any) -> None:
            # Called on paramiko's transport thread: connect and copy elsewhere.
            threading.Thread(
                target=_join_target,
                args=(channel, target),
                name=f"forward-{self.host}",
                daemon=True,
            ).start()

        with translated(
            self.host,
            f"sshd refused to forward 127.0.0.1:{port} to the controller",
            self._transport,
            fix="allow it in the host's sshd_config (AllowTcpForwarding yes, the default)",
        ):
            return int(self._transport.request_port_forward("127.0.0.1", port, handler=accept))

    def cancel_forward(self, port: int) -> None:
        """Stop listening on the host's ``127.0.0.1:port``; open connections go on."""
        with contextlib.suppress(*LIBRARY_ERRORS):
            self._transport.cancel_port_forward("127.0.0.1", port)

    def close(self) -> None:
        self._transport.close()
        if self._jump is not None:
            self._jump.close()


def _close(channel: paramiko.Channel) -> None:
    """Close ``channel``; closing sends a message, which fails again on a dead connection.

    The caller reports the lost connection from the exit status and the transport state.
    """
    with contextlib.suppress(*LIBRARY_ERRORS):
        channel.close()


def _join_target(channel: paramiko.Channel, target: tuple[str, int]) -> None:
    try:
        sock = socket.create_connection(target, timeout=DEFAULT_CONNECT_TIMEOUT)
    except OSError:
        _close(channel)  # the host's client sees the connection refused
        return
    sock.settimeout(None)
    _join(channel, sock)


def _join(channel: paramiko.Channel, sock: socket.socket) -> None:
    """Copy bytes both ways between ``channel`` and ``sock`` until the channel's end closes.

    One thread per direction: a direction that blocks (its reader is busy) never stalls
    the other, which a single select loop with blocking sends would. The joined protocols
    (HTTP) never half-close, so once the channel's side has ended, the socket is cut too.
    """

    def copy_out() -> None:  # socket -> channel
        try:
            while data := sock.recv(_READ_CHUNK):
                channel.sendall(data)
            channel.shutdown_write()
        except LIBRARY_ERRORS:
            _close(channel)

    sender = threading.Thread(target=copy_out, name="splice-out", daemon=True)
    sender.start()
    try:
        while data := channel.recv(_READ_CHUNK):
            sock.sendall(data)
    except LIBRARY_ERRORS:
        pass  # one side went away: close both
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes the sender's recv
        sender.join()
        _close(channel)
        sock.close()


class _Capped:
    """One output stream of a command, held up to :data:`MAX_OUTPUT` bytes."""

    def __init__(self, host: str, command: str) -> None:
        self._host, self._command = host, command
        self._chunks: list[bytes] = []
        self._size = 0

    def append(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > MAX_OUTPUT:
            raise too_much_output(self._host, self._command)
        self._chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")


def _stalled(blocked_since: float | None, limit: float | None) -> float | None:
    """How long the writer has waited on the host, once that is past ``limit``."""
    if blocked_since is None or limit is None:
        return None
    waited = time.monotonic() - blocked_since
    return waited if waited > limit else None


class _LineBuffer:
    """Bytes in, whole decoded lines out (an endless line is cut at ``_MAX_LINE``)."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._pending = b""

    def feed(self, data: bytes) -> None:
        self._pending += data
        while True:
            cut = self._pending.find(b"\n")
            if cut < 0:
                if len(self._pending) >= _MAX_LINE:
                    cut = _MAX_LINE - 1
                else:
                    return
            line, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
            self._on_line(line.rstrip(b"\r\n").decode("utf-8", "replace"))

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, b""
            self._on_line(line.rstrip(b"\r\n").decode("utf-8", "replace"))


def _readable(fds: Sequence[int], timeout: float) -> set[int]:
    """Which of ``fds`` can be read within ``timeout`` seconds. poll, not select: with a
    thousand hosts connected, a channel's descriptor is past select's limit of 1024."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(max(0, int(timeout * 1000)))}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- resolving connection settings (paramiko's ssh config parser; the rest: fleet.ssh.endpoint)
def load_ssh_config(path: str | Path = "~/.ssh/config") -> paramiko.SSHConfig:
    """The user's ssh config, or an empty one."""
    resolved = Path(os.path.expanduser(str(path)))
    if resolved.is_file():
        return paramiko.SSHConfig.from_path(str(resolved))
    return paramiko.SSHConfig()


def endpoint_for(
    name: str,
    hostvars: Mapping[str, Any],
    *,
    config: paramiko.SSHConfig | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    command_timeout: float | None = None,
    extra_known_hosts: Sequence[str] = (),
    become_password: str | None = None,
) -> Endpoint:
    """Resolve a host's connection settings as OpenSSH under Ansible would.

    Inventory variables win over ``~/.ssh/config``, which wins over the defaults;
    ``become_password`` (-K's) is used where the inventory gives none.
    """
    config = config if config is not None else load_ssh_config()
    return resolve(
        name,
        hostvars,
        lookup=config.lookup,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        extra_known_hosts=extra_known_hosts,
        become_password=become_password,
    )

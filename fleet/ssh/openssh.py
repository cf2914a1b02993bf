"""The system's OpenSSH client as a :class:`~fleet.ssh.base.Transport`, for quick read-only fan-out.

Commands go through a *control master* (OpenSSH's connection sharing, as Ansible uses
it: ``ControlMaster=auto``, ``ControlPersist=300s``): the first command to a host is an
``ssh`` process that authenticates and leaves the connection open in the background until
it has been idle for 5 minutes; later commands, of this run or of the next, are sessions
asked of that master directly (:mod:`fleet.ssh.mux`: no handshake and no ``ssh`` process,
a tenth of the controller's CPU per command). Repeated ``fleet audit`` runs are cheap that
way, and a run of several minutes still finds the masters it opened. Such sessions carry
no environment, as paramiko's do (``ssh`` would send ``SendEnv``'s locale). The key
exchange is X25519 (``curve25519-sha256``, what the paramiko transport uses): OpenSSH's
default post-quantum hybrid costs the controller about 4x the CPU per new connection
(measured by ``bench/scale.py``: 105 against 25 ms per host). Bulk transfers stay with
paramiko (:mod:`fleet.ssh.paramiko_client`).

The policy is the paramiko transport's:

- Host keys are always verified: ``StrictHostKeyChecking=yes``, or ``accept-new`` when
  the run accepts new keys (a changed key is refused either way), against the endpoint's
  known_hosts files in their order (``UserKnownHostsFile``; accept-new writes to the
  first) and no global file.
- The remote command is :func:`fleet.ssh.endpoint.command_line` (quoted argv, ``sudo -n``
  when becoming), one argument after ``--``: never a shell string from unquoted input.
- Control sockets live in a directory only the user can enter (0700). A socket is named
  by a hash of everything that decides whom it reaches and how that was checked (user,
  address, port, key files, known_hosts files, strictness, jump host), so a master opened
  under other settings (e.g. without strict checking) is never reused.

Failures become fleet's errors with ssh's own words as evidence: a refused host key is a
:class:`HostKeyError`; any other failure of ssh itself (exit 255 with no master left) an
:class:`UnreachableError`; a timeout a :class:`HostError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shlex
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fleet.errors import CommandError, HostError, HostKeyError, UnreachableError
from fleet.ssh import mux
from fleet.ssh.base import MAX_OUTPUT, CommandResult, fix_for, too_much_output
from fleet.ssh.endpoint import (
    DEFAULT_CONNECT_TIMEOUT,
    USER_KNOWN_HOSTS,
    ConfigLookup,
    Endpoint,
    command_line,
    no_config,
    resolve,
)
from fleet.ssh.process import ExitWatch

if TYPE_CHECKING:
    from fleet.hosts.model import Host

SSH = "ssh"
CONTROL_PERSIST = "300s"
# The paramiko transport's key exchanges, X25519 first (the module's docstring says why);
# the others for hosts whose sshd predates it.
KEX = "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,diffie-hellman-group14-sha256"
_KEEPALIVE = 15
# Linux's sun_path holds 108 bytes, and ssh first binds NAME.<16 random characters>.
_NAME_LENGTH = 24
_MAX_DIR = 107 - 1 - _NAME_LENGTH - 17
_EXIT_SSH = 255
_READ_SIZE = 256 * 1024
_TIMEOUT_FIX = "raise --timeout, or look at the host: it may be frozen or overloaded"


def default_control_dir() -> Path:
    """Where control sockets live: ``$XDG_RUNTIME_DIR/fleet-ssh`` or ``~/.cache/fleet/ssh``.

    A socket path must fit in 108 bytes: a long home directory falls back to
    ``/tmp/fleet-ssh-UID`` (checked to be the user's own, like any other).
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    for candidate in (
        Path(runtime) / "fleet-ssh" if runtime else None,
        Path.home() / ".cache" / "fleet" / "ssh",
    ):
        if candidate is not None and len(str(candidate)) <= _MAX_DIR:
            return candidate
    return Path(tempfile.gettempdir()) / f"fleet-ssh-{os.geteuid()}"


def private_dir(path: Path, host: str) -> Path:
    """``path`` as a directory only this user can enter (created 0700 when missing).

    Anyone who can enter it can use the connections its sockets hold.
    """
    if len(str(path)) > _MAX_DIR:
        raise UnreachableError(
            host,
            f"the ssh control directory {path} is too long a path for a socket "
            f"(at most {_MAX_DIR} characters)",
            fix="choose a shorter directory",
        )
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
            if stat.S_IMODE(info.st_mode) & 0o077:
                path.chmod(0o700)
            return path
    except OSError as exc:
        raise UnreachableError(
            host, f"cannot make the ssh control directory {path}: {exc}"
        ) from exc
    raise UnreachableError(
        host,
        f"the ssh control directory {path} is not a directory of this user's own "
        "(a symlink, or another user's)",
        fix=f"remove {path}, or use the paramiko client: FLEET_SSH_CLIENT=paramiko",
    )


def _config_value(text: str) -> str:
    """A path as an ssh ``-o`` value: ``%`` escaped (ssh expands tokens), quoted if needed."""
    text = text.replace("%", "%%")
    if any(c.isspace() or c in "\"'\\" for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _identity(endpoint: Endpoint) -> list[Any]:
    """What decides whom a connection reaches and how it was checked (not timeouts)."""
    jump = _identity(endpoint.jump) if endpoint.jump is not None else None
    return [
        endpoint.user,
        endpoint.address,
        endpoint.port,
        list(endpoint.key_files),
        list(endpoint.known_hosts_files),
        jump,
    ]


def _host_key_refused(stderr: str) -> bool:
    text = stderr.lower()
    return (
        "host key verification failed" in text or "remote host identification has changed" in text
    )


def _host_key_evidence(stderr: str) -> str:
    """ssh's lines about the host key: the offered fingerprint, the file that disagrees."""
    words = ("fingerprint", "sha256:", "offending", "host key")
    lines = [line.strip() for line in stderr.splitlines()]
    noise = ("it is also possible", "add correct host key")
    return "; ".join(
        line
        for line in lines
        if any(w in line.lower() for w in words) and not line.lower().startswith(noise)
    )


def _evidence(stderr: str, count: int = 4) -> str:
    """ssh's own last words: its last lines, without the banner of '@' lines."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip().strip("@")]
    return "; ".join(lines[-count:]) or "no message"


class OpenSSHTransport:
    """A host reached through the system's ``ssh``, sharing one persistent connection."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        accept_new: bool = False,
        control_dir: Path | None = None,
        ssh: str = SSH,
    ) -> None:
        self.endpoint = endpoint
        self.accept_new = accept_new
        self.ssh = ssh
        directory = private_dir(control_dir or default_control_dir(), endpoint.name)
        digest = hashlib.sha256(json.dumps([_identity(endpoint), accept_new]).encode()).hexdigest()
        self.control_path = directory / digest[:_NAME_LENGTH]
        self._check_key_files(endpoint)
        self._argv = [*self.options(endpoint, master=True), "--", endpoint.address]

    @property
    def host(self) -> str:
        return self.endpoint.name

    def needs_handshake(self) -> bool:
        """Whether the next command authenticates anew: no shared connection is there."""
        return not self.control_path.is_socket()

    # -- the ssh command line ---------------------------------------------------------
    def options(self, endpoint: Endpoint, *, master: bool) -> list[str]:
        """ssh's options for ``endpoint``; ``master``: share connections through the socket."""
        # No file named: the user's own, which the paramiko transport also writes to.
        named = endpoint.known_hosts_files or (USER_KNOWN_HOSTS,)
        files = [os.path.expanduser(f) for f in named]
        argv = [
            self.ssh,
            "-T",  # no terminal: output arrives as the command wrote it
            "-x",
            "-a",
            "-o",
            "BatchMode=yes",
            "-o",
            f"StrictHostKeyChecking={'accept-new' if self.accept_new else 'yes'}",
            "-o",
            "UserKnownHostsFile=" + " ".join(_config_value(f) for f in dict.fromkeys(files)),
            "-o",
            "GlobalKnownHostsFile=/dev/null",  # the paramiko transport reads none either
            "-o",
            "HashKnownHosts=no",
            "-o",
            "LogLevel=ERROR",  # no notices in the command's stderr; errors stay
            "-o",
            "ClearAllForwardings=yes",
            "-o",
            f"KexAlgorithms={KEX}",
            "-o",
            f"ConnectTimeout={max(1, math.ceil(endpoint.connect_timeout))}",
            "-o",
            f"ServerAliveInterval={_KEEPALIVE}",
            "-p",
            str(endpoint.port),
            "-l",
            endpoint.user,
        ]
        for key in endpoint.key_files:
            argv += ["-i", os.path.expanduser(key).replace("%", "%%")]
        if master:
            argv += [
                "-o",
                "ControlMaster=auto",
                "-o",
                f"ControlPersist={CONTROL_PERSIST}",
                "-o",
                "ControlPath=" + _config_value(str(self.control_path)),
            ]
        else:
            argv += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        if endpoint.jump is not None:
            # The jump host is verified with the same files and strictness; ssh expands
            # %h and %p, and runs the line with sh: every word is quoted.
            inner = [*self.options(endpoint.jump, master=False), "-W", "%h:%p"]
            inner += ["--", endpoint.jump.address]
            line = " ".join(
                "%h:%p" if word == "%h:%p" else shlex.quote(word).replace("%", "%%")
                for word in inner
            )
            argv += ["-o", f"ProxyCommand={line}"]
        return argv

    def _check_key_files(self, endpoint: Endpoint) -> None:
        # ssh would only warn and try other keys; the paramiko transport refuses, so do we.
        for name in endpoint.key_files:
            path = Path(os.path.expanduser(name))
            if not path.is_file():
                raise UnreachableError(
                    endpoint.name,
                    f"private key file {path} does not exist",
                    fix="fix ansible_ssh_private_key_file in the inventory",
                )
        if endpoint.jump is not None:
            self._check_key_files(endpoint.jump)

    def _spawn(self, command: str, stdin: int, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                [*self._argv, command], stdin=stdin, stdout=subprocess.PIPE, stderr=stderr
            )
        except OSError as exc:
            raise UnreachableError(
                self.host,
                f"cannot run the OpenSSH client {self.ssh!r}: {exc.strerror or exc}",
                fix="install openssh-client, or use the paramiko client: FLEET_SSH_CLIENT=paramiko",
            ) from exc

    # -- running ----------------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        command = command_line(self.endpoint, argv)
        timeout = timeout if timeout is not None else self.endpoint.command_timeout
        started = time.monotonic()
        if self.control_path.is_socket():
            with contextlib.suppress(mux.Unavailable):  # nothing ran: ssh tries instead
                return self._run_shared(command, stdin, timeout, check, started)
        # stderr goes to a file, not a pipe: a master started by this command may keep a
        # jump host's ProxyCommand (which inherited stderr) for its whole life.
        with tempfile.TemporaryFile() as errors:
            proc = self._spawn(
                command, subprocess.PIPE if stdin is not None else subprocess.DEVNULL, errors
            )
            assert proc.stdout is not None
            reader = _CappedReader(proc, proc.stdout)
            try:
                with ExitWatch(proc) as watch:
                    if stdin is not None:
                        assert proc.stdin is not None
                        with contextlib.suppress(BrokenPipeError):
                            proc.stdin.write(stdin)
                        with contextlib.suppress(BrokenPipeError):
                            proc.stdin.close()
                    if not watch.exited(timeout):
                        raise self._timed_out(command, timeout)
            except BaseException:
                _kill(proc)
                raise
            finally:
                reader.join()
                proc.stdout.close()
            stdout = reader.output(self.host, command)
            stderr = _read(errors, self.host, command)
        return self._result(command, proc.returncode, stdout, stderr, started, check)

    def _run_shared(
        self, command: str, stdin: bytes | None, timeout: float | None, check: bool, started: float
    ) -> CommandResult:
        """``command`` as a session of the running master, spoken to directly (no ``ssh``)."""
        with tempfile.TemporaryFile() as errors:
            done = mux.run(
                self.control_path,
                command,
                stdin=stdin,
                stderr=errors.fileno(),
                timeout=timeout,
                connect_timeout=self.endpoint.connect_timeout,
                limit=MAX_OUTPUT,
            )
            if done.overflowed:
                raise too_much_output(self.host, command)
            if done.timed_out:
                raise self._timed_out(command, timeout)
            stderr = _read(errors, self.host, command)
        if done.lost or (done.code is None and not self.master_running()):
            when = f"while opening a session ({done.lost})" if done.lost else "before it did"
            raise UnreachableError(
                self.host,
                self._failed(f"the shared connection ended running {command!r}, {when}"),
            )
        # The master said how the command ended (no status: a signal, as ssh says it, 255):
        # none of ssh's own failures, so nothing to guess from an exit of 255.
        code = _EXIT_SSH if done.code is None else done.code
        return self._result(command, code, done.stdout, stderr, started, check, by_ssh=False)

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

        ``stall_timeout``: fail when the host has not taken a chunk for that long.
        """
        command = command_line(self.endpoint, argv)
        timeout = timeout if timeout is not None else self.endpoint.command_timeout
        started = time.monotonic()
        with tempfile.TemporaryFile() as errors:
            proc = self._spawn(command, subprocess.PIPE, errors)
            pipe_in, pipe_out = proc.stdin, proc.stdout
            assert pipe_in is not None and pipe_out is not None
            writer_error: list[BaseException] = []
            blocked_since: list[float | None] = [None]

            def write() -> None:
                try:
                    for chunk in chunks:
                        blocked_since[0] = time.monotonic()
                        pipe_in.write(chunk)
                        blocked_since[0] = None
                    pipe_in.close()
                except BaseException as exc:
                    blocked_since[0] = None
                    writer_error.append(exc)
                    with contextlib.suppress(OSError):
                        pipe_in.close()

            writer = threading.Thread(target=write, name=f"stdin-{self.host}", daemon=True)
            writer.start()
            reader = _CappedReader(proc, pipe_out)
            threads: list[threading.Thread] = [writer, reader]
            try:
                self._wait(proc, command, started, timeout, blocked_since, stall_timeout)
            except BaseException:
                _kill(proc)
                raise
            finally:
                for thread in threads:
                    thread.join(timeout=5)
                pipe_out.close()
            stdout = reader.output(self.host, command)
            stderr = _read(errors, self.host, command)
        code = proc.returncode
        if writer_error and code == 0:
            raise HostError(self.host, f"sending input to {command!r} failed: {writer_error[0]}")
        return self._result(command, code, stdout, stderr, started, check)

    def _wait(
        self,
        proc: subprocess.Popen[bytes],
        command: str,
        started: float,
        timeout: float | None,
        blocked_since: list[float | None],
        stall_timeout: float | None,
    ) -> None:
        with ExitWatch(proc) as watch:
            while not watch.exited(0.05):
                if timeout is not None and time.monotonic() - started > timeout:
                    raise self._timed_out(command, timeout)
                since = blocked_since[0]
                idle = 0.0 if since is None else time.monotonic() - since
                if stall_timeout is not None and idle > stall_timeout:
                    raise HostError(
                        self.host,
                        f"stalled: the host took no data for {idle:.0f}s while running {command!r}",
                        fix="look at the host: it may be frozen, out of disk or overloaded",
                    )

    def _result(
        self,
        command: str,
        code: int,
        stdout: bytes,
        stderr_bytes: bytes,
        started: float,
        check: bool,
        *,
        by_ssh: bool = True,
    ) -> CommandResult:
        """The result of ``command``; ``by_ssh``: the code is an ``ssh`` process's, whose 255
        may be ssh's own failure."""
        stderr = stderr_bytes.decode("utf-8", "replace")
        if code < 0:
            raise HostError(self.host, f"ssh was killed (signal {-code}) running {command!r}")
        if code == _EXIT_SSH and by_ssh:
            self._raise_if_ssh_failed(stderr)
        result = CommandResult(
            command, code, stdout.decode("utf-8", "replace"), stderr, time.monotonic() - started
        )
        if check and code != 0:
            raise CommandError(self.host, command, code, result.stdout, stderr, fix=fix_for(stderr))
        return result

    def _timed_out(self, command: str, timeout: float | None) -> HostError:
        return HostError(
            self.host, f"timed out after {timeout:g}s running {command!r}", fix=_TIMEOUT_FIX
        )

    def _failed(self, why: str) -> str:
        """A lost or refused connection's reason, naming whom it tried to reach."""
        ep = self.endpoint
        return f"ssh to {ep.user}@{ep.address}:{ep.port} failed: {why}"

    def _raise_if_ssh_failed(self, stderr: str) -> None:
        """Exit 255 is ssh's own failure, unless the command said it through a live master."""
        ep = self.endpoint
        if _host_key_refused(stderr):
            name = shlex.quote(ep.known_hosts_name)
            if "has changed" in stderr.lower():
                what = "CHANGED; refusing to connect"
                fix = (
                    f"if the host was really reinstalled, remove its line with "
                    f"'ssh-keygen -R {name}' and connect again"
                )
            else:
                what = "unknown"
                fix = (
                    "verify the fingerprint, then rerun with --accept-new-host-keys "
                    "(records it, like OpenSSH's StrictHostKeyChecking=accept-new)"
                )
            raise HostKeyError(
                self.host,
                f"host key for {ep.known_hosts_name} {what} (ssh: {_host_key_evidence(stderr)})",
                fix=fix,
            )
        if self.master_running():
            return  # the remote command itself exited 255
        reason = self._failed(_evidence(stderr))
        if "permission denied" in stderr.lower():
            raise UnreachableError(
                self.host,
                reason,
                fix="set ansible_ssh_private_key_file/ansible_user in the inventory, or add "
                "your public key to the host's authorized_keys",
            )
        raise UnreachableError(self.host, reason)

    # -- the shared connection --------------------------------------------------------
    def _control(self, operation: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                self.ssh,
                "-o",
                "ControlPath=" + _config_value(str(self.control_path)),
                "-O",
                operation,
                "--",
                self.endpoint.address,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=self.endpoint.connect_timeout,
            check=False,
        )

    def master_running(self) -> bool:
        """Whether a control master holds a connection to the host (``ssh -O check``)."""
        try:
            return self._control("check").returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def stop_master(self) -> None:
        """Close the shared connection now (``ssh -O exit``) instead of after 60 idle seconds."""
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self._control("exit")

    def close(self) -> None:
        """Nothing to close: the shared connection outlives the run on purpose (5 min idle)."""


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired, OSError, ValueError):
        proc.communicate(timeout=5)


def _read(handle: IO[bytes], host: str, command: str) -> bytes:
    """What the command wrote to its stderr file, up to :data:`MAX_OUTPUT`."""
    handle.seek(0)
    data = handle.read(MAX_OUTPUT + 1)
    if len(data) > MAX_OUTPUT:
        raise too_much_output(host, command)
    return data


class _CappedReader(threading.Thread):
    """Reads a command's stdout as it comes, up to :data:`MAX_OUTPUT`; past it, kills ssh."""

    def __init__(self, proc: subprocess.Popen[bytes], pipe: IO[bytes]) -> None:
        super().__init__(name="stdout-reader", daemon=True)
        self._proc, self._pipe = proc, pipe
        self._chunks: list[bytes] = []
        self._size = 0
        self.overflowed = False
        self.start()

    def run(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # the pipe closed under us
            while chunk := os.read(self._pipe.fileno(), _READ_SIZE):
                self._size += len(chunk)
                if self._size > MAX_OUTPUT:
                    self.overflowed = True
                    _kill(self._proc)
                    return
                self._chunks.append(chunk)

    def output(self, host: str, command: str) -> bytes:
        """All of stdout; the host's error when it printed too much."""
        if self.overflowed:
            raise too_much_output(host, command)
        return b"".join(self._chunks)


# -- connecting inventory hosts ---------------------------------------------------------
@dataclass
class OpenSSHConnector:
    """Opens :class:`OpenSSHTransport` connections to inventory hosts with one run's settings.

    Endpoints are resolved as for paramiko (:func:`fleet.ssh.endpoint.resolve`), with the
    user's ``~/.ssh/config`` read by paramiko's parser only when there is one.
    """

    accept_new: bool = False
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    command_timeout: float | None = None
    control_dir: Path | None = None
    ssh_config: Path = field(default_factory=lambda: Path.home() / ".ssh" / "config")
    _lookup: ConfigLookup | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def lookup(self) -> ConfigLookup:
        """The ssh config's entries, parsed once per run."""
        with self._lock:
            if self._lookup is None:
                if self.ssh_config.is_file():
                    from fleet.ssh.paramiko_client import load_ssh_config

                    self._lookup = load_ssh_config(self.ssh_config).lookup
                else:
                    self._lookup = no_config
            return self._lookup

    def endpoint(self, name: str, hostvars: Mapping[str, Any]) -> Endpoint:
        return resolve(
            name,
            hostvars,
            lookup=self.lookup(),
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
        )

    def __call__(self, host: Host) -> OpenSSHTransport:
        return OpenSSHTransport(
            self.endpoint(host.name, host.vars),
            accept_new=self.accept_new,
            control_dir=self.control_dir,
        )

"""Fan-out: run one task on many hosts at once, and turn whatever happens into results.

A task is a function of a :class:`HostContext` that returns a :class:`HostResult`. The
runner bounds concurrency (``forks``), connects each host once and reuses the connection
for every task of the run, and converts every failure into a value: an unreachable host
is ``unreachable``, a failed command ``failed`` with its evidence, an unexpected bug
``failed`` with its type. One host's trouble never stops the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fleet.errors import (
    FleetError,
    HostError,
    Interrupted,
    InventoryError,
    UnreachableError,
    UsageError,
)
from fleet.hosts.model import Host
from fleet.results import FleetResult, HostResult, Outcome, Payload
from fleet.ssh.base import CommandResult, Transport, fix_for
from fleet.ssh.endpoint import BECOME_PASSWORD_VARS, DEFAULT_CONNECT_TIMEOUT

if TYPE_CHECKING:
    from fleet.ssh.known_hosts import KnownHosts

# Which SSH client reaches a host (see ClientConnector).
SSH_CLIENTS = ("openssh", "paramiko")
SSH_CLIENT_VAR = "fleet_ssh_client"
SSH_CLIENT_ENV = "FLEET_SSH_CLIENT"

DEFAULT_FORKS = 20
# New SSH handshakes at once, whatever the forks: a bastion's sshd (and any sshd under
# MaxStartups' default 10:30:100) drops unauthenticated connections past its limit, and
# handshakes are the controller's costliest CPU (Kamal's max_concurrent_starts, 30).
DEFAULT_MAX_STARTS = 30


class Events(Protocol):
    """What a reporter hears while a run goes on (called from worker threads)."""

    def started(self, host: str, step: str) -> None: ...

    def progress(
        self, host: str, step: str, note: str = "", done: int = 0, total: int = 0
    ) -> None: ...

    def finished(self, result: HostResult) -> None: ...


class NoEvents:
    """A reporter that hears nothing."""

    def started(self, host: str, step: str) -> None:
        return None

    def progress(self, host: str, step: str, note: str = "", done: int = 0, total: int = 0) -> None:
        return None

    def finished(self, result: HostResult) -> None:
        return None


Connect = Callable[[Host], Transport]


def _known_hosts() -> KnownHosts:
    # fleet.ssh.paramiko_client imports paramiko: only when a paramiko connection is wanted.
    from fleet.ssh.known_hosts import KnownHosts

    return KnownHosts()


@dataclass
class SSHConnector:
    """Opens verified SSH connections to inventory hosts with one run's settings."""

    known_hosts: KnownHosts = field(default_factory=_known_hosts)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    command_timeout: float | None = None
    # -K's answer: sudo's password for hosts whose inventory gives none.
    become_password: str | None = field(default=None, repr=False)

    def __call__(self, host: Host) -> Transport:
        from fleet.ssh.paramiko_client import SSHTransport, endpoint_for

        endpoint = endpoint_for(
            host.name,
            host.vars,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            become_password=self.become_password,
        )
        return SSHTransport(endpoint, self.known_hosts)


@dataclass
class ClientConnector:
    """Connects each host with the SSH client chosen for it: for short commands on many hosts.

    The host's ``fleet_ssh_client`` variable (``openssh`` or ``paramiko``) wins, then
    ``$FLEET_SSH_CLIENT``, then ``default``. ``openssh`` is the system's ssh with shared
    connections kept for 5 minutes (:mod:`fleet.ssh.openssh`); as the default it falls back to
    paramiko (:class:`SSHConnector`) when no ``ssh`` is on PATH. With ``reuse`` and paramiko
    as the default, a host whose shared connection is open (an earlier command opened it)
    is reached through it: no handshake at all, the cheapest of the three ways.
    """

    accept_new: bool = False
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    command_timeout: float | None = None
    default: str = "openssh"
    reuse: bool = False
    control_dir: Path | None = None  # the shared connections' sockets (None: fleet's own)
    become_password: str | None = field(default=None, repr=False)
    _connectors: dict[str, Connect] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def client(self, host: Host) -> str:
        """The SSH client for ``host``: one of :data:`SSH_CLIENTS`."""
        chosen = self._chosen(host)
        if chosen is not None:
            return chosen
        if self.default == "openssh" and shutil.which("ssh") is None:
            return "paramiko"
        return self.default

    def _chosen(self, host: Host) -> str | None:
        """The client the host's settings or the environment name, None when neither does.

        A host that becomes with a password gets paramiko: only it answers sudo's prompt.
        """
        if host.become and (
            self.become_password is not None
            or any(host.vars.get(k) is not None for k in BECOME_PASSWORD_VARS)
        ):
            return "paramiko"
        chosen = host.vars.get(SSH_CLIENT_VAR)
        if chosen is not None:
            if chosen not in SSH_CLIENTS:
                raise InventoryError(
                    f"host {host.name}: {SSH_CLIENT_VAR} {chosen!r} is not an SSH client",
                    fix=f"set it to one of: {', '.join(SSH_CLIENTS)}",
                )
            return str(chosen)
        chosen = os.environ.get(SSH_CLIENT_ENV) or None
        if chosen is not None:
            if chosen not in SSH_CLIENTS:
                raise UsageError(
                    f"${SSH_CLIENT_ENV} {chosen!r} is not an SSH client",
                    fix=f"set it to one of: {', '.join(SSH_CLIENTS)}",
                )
            return chosen
        return None

    def __call__(self, host: Host) -> Transport:
        name = self.client(host)
        if name == "paramiko" and self.reuse and self._chosen(host) is None:
            shared = self._open_shared(host)
            if shared is not None:
                return shared
        return self._connector_for(name)(host)

    def _open_shared(self, host: Host) -> Transport | None:
        """The host's shared connection when one is open, else None (nothing is opened)."""
        if shutil.which("ssh") is None:
            return None
        try:
            transport = self._connector_for("openssh")(host)
        except FleetError:
            return None  # paramiko connects and says what is wrong in its own words
        if getattr(transport, "needs_handshake", lambda: True)():
            transport.close()
            return None
        return transport

    def _connector_for(self, name: str) -> Connect:
        with self._lock:
            connector = self._connectors.get(name)
            if connector is None:
                connector = self._connectors[name] = self._connector(name)
        return connector

    def _connector(self, name: str) -> Connect:
        if name == "openssh":
            from fleet.ssh.openssh import OpenSSHConnector

            return OpenSSHConnector(
                accept_new=self.accept_new,
                connect_timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                control_dir=self.control_dir,
            )
        from fleet.ssh.known_hosts import KnownHosts

        return SSHConnector(
            known_hosts=KnownHosts(accept_new=self.accept_new),
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            become_password=self.become_password,
        )


@dataclass
class HostContext:
    """What a task gets: its host, a (lazily opened, reused) connection, and a voice."""

    host: Host
    _runner: Runner
    step: str = ""
    # Wraps the connection for work that may only go on under a condition (a held lease).
    _wrap: Callable[[Transport], Transport] | None = None

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def transport(self) -> Transport:
        transport = self._runner.transport(self.host)
        return transport if self._wrap is None else self._wrap(transport)

    def guarded(self, wrap: Callable[[Transport], Transport]) -> HostContext:
        """This context, whose connection is ``wrap(connection)``: e.g. every command first
        checks the lease of the host's deploy lock."""
        return dataclasses.replace(self, _wrap=wrap)

    def reconnect(self) -> Transport:
        """A new connection to the host, in place of one that was lost."""
        self._runner.drop(self.name)
        return self._runner.transport(self.host)

    @property
    def cancelled(self) -> bool:
        """Whether the run was interrupted: a task checks it between its steps."""
        return self._runner.stopping.is_set()

    def progress(self, note: str = "", done: int = 0, total: int = 0) -> None:
        self._runner.events.progress(self.name, self.step, note, done, total)

    def result(
        self,
        outcome: Outcome,
        reason: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        stdout: str = "",
        stderr: str = "",
        fix: str | None = None,
        payload: Payload | None = None,
    ) -> HostResult:
        return HostResult(
            self.name,
            outcome,
            reason,
            fix,
            details=payload.to_json() if payload is not None else details or {},
            stdout=stdout,
            stderr=stderr,
            payload=payload,
        )

    def run_command(self, argv: Sequence[str]) -> HostResult:
        """Run a command for its own sake (``fleet exec``): changed, or failed with its code."""
        ran = self.transport.run(argv, check=False)
        return self.result(
            Outcome.CHANGED if ran.ok else Outcome.FAILED,
            None if ran.ok else f"command exited {ran.exit_code}: {ran.command}",
            details={"exit_code": ran.exit_code},
            stdout=ran.stdout,
            stderr=ran.stderr,
            # sudo wanting a password, docker's socket refused: the known fixes.
            fix=None if ran.ok else fix_for(ran.stderr),
        )


Task = Callable[[HostContext], HostResult]


class Runner:
    """Runs tasks on hosts, ``forks`` at a time, keeping one connection per host."""

    def __init__(
        self,
        connect: Connect | None = None,
        *,
        forks: int = DEFAULT_FORKS,
        events: Events | None = None,
        max_starts: int = DEFAULT_MAX_STARTS,
    ) -> None:
        if forks < 1 or max_starts < 1:
            raise ValueError("forks and max_starts must be at least 1")
        self.connect: Connect = connect or SSHConnector()
        self.forks = forks
        self.events: Events = events or NoEvents()
        self._transports: dict[tuple[str, bool, str, bool], Transport] = {}
        self._dead: dict[str, UnreachableError] = {}
        self._lock = threading.Lock()
        self._starts = threading.BoundedSemaphore(max_starts)
        self.stopping = threading.Event()
        self._phases = 0

    @contextlib.contextmanager
    def phases(self) -> Iterator[None]:
        """Runs inside are phases of a longer operation (a push's inspection, a deploy's
        push): no host is done at a phase's end, so the reporter hears it as progress. The
        operation tells each host's end with :meth:`settle` once it knows it."""
        self._phases += 1
        try:
            yield
        finally:
            self._phases -= 1

    def settle(self, results: Iterable[HostResult]) -> None:
        """Report these hosts as done: results of phases, or made without a run. Inside
        :meth:`phases` it is left to the enclosing operation, which settles them itself."""
        if self._phases == 0:
            for result in results:
                self.events.finished(result)

    def transport(self, host: Host) -> Transport:
        """The host's connection, opened on first use and reused after (one per way of
        becoming another user: a playbook's ``become`` task gets its own)."""
        key = _connection_key(host)
        with self._lock:
            existing = self._transports.get(key)
            dead = self._dead.get(host.name)
        if existing is not None:
            return existing
        if dead is not None:
            raise dead
        try:
            if key[3]:
                opened = _local(host, key)
            else:
                with self._starts:  # a client that handshakes as it connects (paramiko)
                    opened = self.connect(host)
                if _lazy(opened):
                    opened = _FirstCommandGated(opened, self._starts)
        except UnreachableError as exc:
            with self._lock:
                self._dead[host.name] = exc
            raise
        with self._lock:
            self._transports[key] = opened
        return opened

    def drop(self, host: str) -> None:
        """Forget a host's connection (after it broke), so the next use reconnects."""
        with self._lock:
            keys = [key for key in self._transports if key[0] == host]
            transports = [self._transports.pop(key) for key in keys]
            self._dead.pop(host, None)
        for transport in transports:
            transport.close()

    def run(self, command: str, hosts: Sequence[Host], task: Task) -> FleetResult:
        """Run ``task`` on every host; returns every host's result, in ``hosts`` order."""
        started = time.monotonic()
        results: dict[str, HostResult] = {}
        pool = ThreadPoolExecutor(max_workers=min(self.forks, max(1, len(hosts))))
        futures: dict[Future[HostResult], Host] = {}
        try:
            phase = self._phases > 0
            for host in hosts:
                futures[pool.submit(self._one, command, host, task, phase)] = host
            # In submission order, each future waited for on its own: wait(FIRST_COMPLETED)
            # over all pending futures costs O(hosts) per wake, O(hosts^2) per run. The
            # timeout only lets Ctrl-C in.
            for future in futures:
                while True:
                    try:
                        result = future.result(timeout=0.2)
                    except FutureTimeout:
                        continue
                    results[result.host] = result
                    break
        except KeyboardInterrupt:
            # Hosts not started yet are skipped; hosts in the middle of a step finish it,
            # so none is left half-switched. A second Ctrl-C abandons them.
            self.stopping.set()
            for future in futures:
                future.cancel()
            try:
                for future in futures:
                    if not future.cancelled():
                        result = future.result()
                        results[result.host] = result
            except KeyboardInterrupt:
                pass
            for host in hosts:
                if host.name not in results:
                    results[host.name] = HostResult(
                        host.name, Outcome.SKIPPED, "interrupted (Ctrl-C) before it started"
                    )
            raise Interrupted(FleetResult.of(command, (results[h.name] for h in hosts))) from None
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return FleetResult.of(command, (results[h.name] for h in hosts), time.monotonic() - started)

    def _one(self, command: str, host: Host, task: Task, phase: bool) -> HostResult:
        started = time.monotonic()
        self.events.started(host.name, command)
        context = HostContext(host, self, command)
        try:
            result = task(context)
        except UnreachableError as exc:
            self.drop(host.name)
            with self._lock:
                self._dead[host.name] = exc
            result = HostResult(host.name, Outcome.UNREACHABLE, exc.reason, exc.fix)
        except HostError as exc:
            result = HostResult(host.name, Outcome.FAILED, exc.reason, exc.fix)
        except FleetError as exc:
            result = HostResult(host.name, Outcome.FAILED, exc.message, exc.fix)
        except Exception as exc:
            result = HostResult(
                host.name, Outcome.FAILED, f"internal error: {type(exc).__name__}: {exc}"
            )
        result = _with_seconds(result, time.monotonic() - started)
        if phase:
            note = "done" if result.succeeded else str(result.outcome)
            self.events.progress(host.name, command, note)
        else:
            self.events.finished(result)
        return result

    def close(self) -> None:
        """Close every connection this runner opened."""
        with self._lock:
            transports = list(self._transports.values())
            self._transports.clear()
        for transport in transports:
            with contextlib.suppress(Exception):  # closing is best effort
                transport.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connection_key(host: Host) -> tuple[str, bool, str, bool]:
    """What a connection to ``host`` is: its name, the user its commands become, and
    whether they run on the controller itself (``ansible_connection: local``)."""
    become = str(host.vars.get("ansible_become", "")).lower() in ("1", "true", "yes", "on")
    local = host.vars.get("ansible_connection") == "local"
    return host.name, become, str(host.vars.get("ansible_become_user") or ""), local


def _lazy(transport: Transport) -> bool:
    """Whether ``transport`` handshakes on its first command (the system's ssh, without a
    shared connection yet)."""
    needs = getattr(transport, "needs_handshake", None)
    return bool(needs()) if callable(needs) else False


class _FirstCommandGated:
    """A transport whose first command makes its connection: that command takes one of
    the runner's start slots. (Only for the system's ssh, which fleet uses for short
    read-only commands; it has none of the other transport's capabilities to hide.)"""

    def __init__(self, inner: Transport, starts: threading.BoundedSemaphore) -> None:
        self._inner = inner
        self._starts = starts
        self._connected = False

    @property
    def host(self) -> str:
        return self._inner.host

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        if self._connected:
            return self._inner.run(argv, stdin=stdin, timeout=timeout, check=check)
        with self._starts:
            try:
                return self._inner.run(argv, stdin=stdin, timeout=timeout, check=check)
            finally:
                self._connected = True

    def stream(
        self,
        argv: Sequence[str],
        chunks: Iterable[bytes],
        *,
        timeout: float | None = None,
        check: bool = True,
        stall_timeout: float | None = None,
    ) -> CommandResult:
        if not self._connected:  # a first command that is a stream: connect with a no-op
            self.run(["true"], check=False)
        return self._inner.stream(
            argv, chunks, timeout=timeout, check=check, stall_timeout=stall_timeout
        )

    def close(self) -> None:
        self._inner.close()


def _local(host: Host, key: tuple[str, bool, str, bool]) -> Transport:
    from fleet.ssh.local import LocalTransport

    return LocalTransport(host.name, become=key[1], become_user=key[2])


def _with_seconds(result: HostResult, seconds: float) -> HostResult:
    return replace(result, seconds=seconds)

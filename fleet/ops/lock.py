"""A host's deploy lock: a lease that lives only while the run holding it does.

A deploy, rollback or prune holds the host's lock (``/var/lib/fleet/deploy.lock``) while
it changes the host. The lock is a *lease* of :data:`DEFAULT_TTL` seconds:

* it is written by the host under ``flock`` (exactly one of two controllers wins), with
  who holds it: user, controller host, PID (and the process's start time), run id;
* the holder renews it every TTL/4 from a thread of its own, over the connection the run
  already holds (one short command; the steps themselves make no extra round trip);
* its age is the host's own clock (the lock file's mtime, compared with the host's
  ``date``): the controller's clock is never compared with the host's;
* a run that dies, whatever the cause, stops renewing, and its lease lapses within one
  TTL; a rerun from the same controller sees at once that the holder's process is gone
  and takes the lock over, saying so (and the host's history records whose it was);
* a holder acts on the host only while its lease is certainly valid: every command of
  the locked work first checks, without a round trip, that the last renewal the host
  confirmed was sent less than TTL minus a margin ago, on a clock that also counts while
  the machine sleeps (a suspended laptop wakes up *without* its leases). A holder whose
  lease lapsed does nothing more on that host, renewing included: the host refuses to
  renew a lapsed lease, even one nobody took over.

``fleet lock status`` shows each host's lock; ``fleet lock release`` removes exactly the
locks it showed (under the same ``flock``), and the host's history records who released
whose.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fleet.errors import FleetError, HostError, LeaseLostError, UnreachableError
from fleet.hostoutput import parses_host_output
from fleet.ops.containers import LOCK_FILE, LOCK_GUARD, STATE_DIR
from fleet.ops.history import record
from fleet.ops.records import LockDocument
from fleet.programs import program
from fleet.results import HostResult, Outcome
from fleet.runner import HostContext
from fleet.ssh.base import CommandResult, Transport
from fleet.units import utc_now

DEFAULT_TTL = 60.0
# Renewals per TTL: three may fail in a row before the lease is in danger.
_RENEWALS = 4
# Take-overs tried at once, one after another, before a run waits like for a held lock.
_MAX_TAKE_OVERS = 3
_ARGS = (STATE_DIR, LOCK_FILE, LOCK_GUARD)

# Take the lock (stdin: our lock document), under flock of the guard file, so that taking,
# taking over and releasing never interleave between controllers. With a checksum ($4), a
# lock with exactly that content (the one the controller judged stale) is replaced by ours;
# any other lock is left alone. Exit 0: ours (prints its checksum); 1: held (prints its
# checksum, age in seconds and content); 3: no state directory; 4: no flock; 5: busy;
# 8: our document arrived cut short (nothing taken).
LOCK_SCRIPT = program("lock.sh")
# Renew: only our own lock, only before it lapsed (exit 6: not ours; 7: lapsed).
RENEW_SCRIPT = program("lock_renew.sh")
# Release only the lock whose checksum is given: another controller's is never removed.
UNLOCK_SCRIPT = program("unlock.sh")
# Read the lock without changing it.
STATE_SCRIPT = program("lock_state.sh")

# This process: one run id for every lock it takes.
RUN_ID = uuid.uuid4().hex[:12]


def _clock() -> float:
    """Seconds on a clock that also counts while the machine is suspended."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):  # not Linux
        return time.monotonic()


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), None when there is none:
    with the PID, it names one process even after the PID is reused."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def controller_identity() -> str:
    """``user@controller`` for locks and history (never a credential)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _parse_time(text: str) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class LockState:
    """What a host said of its lock: checksum, age (host clock) and document."""

    checksum: str
    age: float | None
    raw: str
    document: LockDocument

    @classmethod
    @parses_host_output("the deploy lock's state")
    def parse(cls, text: str) -> LockState:
        head, marker, raw = text.partition("@@lock\n")
        fields = dict(line.partition(" ")[::2] for line in head.splitlines())
        age = fields.get("@@age", "").strip()
        return cls(
            checksum=fields.get("@@sum", "").strip(),
            age=float(age) if age.lstrip("-").isdigit() else None,
            raw=raw if marker else "",
            document=LockDocument.parse(raw if marker else ""),
        )

    @property
    def ttl(self) -> float | None:
        """The lease's TTL, None for a lock of an older fleet (a fixed expiry) or garbage."""
        return self.document.ttl

    def left(self) -> float | None:
        """Seconds until the lease lapses, by the host's clock (None when unknown)."""
        if self.ttl is None or self.age is None:
            return None
        return self.ttl - self.age

    def stale(self, fallback_ttl: float) -> bool:
        """Lapsed: a lease older than its TTL (host clock), an older fleet's lock past its
        expiry, or a lock without either older than ``fallback_ttl`` on the host."""
        if self.ttl is not None:
            return self.age is not None and self.age > self.ttl
        expires = _parse_time(self.document.expires)
        if expires is not None:
            return expires < time.time()
        return self.age is not None and self.age > fallback_ttl

    def holder_gone(self) -> bool:
        """The holder ran on this controller, and its process is no more."""
        document = self.document
        if document.get("host") != socket.gethostname() or document.pid is None:
            return False
        started = process_start(document.pid)
        return started is None or started != str(document.fields.get("pid_start", started))

    def holder(self) -> str:
        return self.document.holder

    def describe(self) -> str:
        """``root@vm (pid 4242, run 1a2b3c) deploy 0.2.7 since 12:00:00Z``."""
        document = self.document
        who = self.holder()
        pid, run = document.get("pid"), document.get("run")
        if pid or run:
            who += f" (pid {pid or '?'}, run {run or '?'})"
        return f"{who} {document.said('what')} since {document.said('since')}"

    def to_json(self) -> dict[str, Any]:
        return {
            "holder": self.holder(),
            "what": self.document.get("what"),
            "since": self.document.get("since"),
            "pid": self.document.get("pid"),
            "run": self.document.get("run"),
            "age": self.age,
            "ttl": self.ttl,
            "left": self.left(),
            "expires": self.document.get("expires"),
        }


def _crc_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def cksum(data: bytes) -> str:
    """What POSIX ``cksum < file`` prints for a file holding ``data`` ("CRC SIZE"): the
    lock scripts name a lock by it."""
    crc = 0
    length = len(data)
    tail = b""
    while length:
        tail += bytes([length & 0xFF])
        length >>= 8
    for byte in data + tail:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return f"{~crc & 0xFFFFFFFF} {len(data)}"


@dataclass
class Lease:
    """A host's lock, held by this run, renewed from a thread while the run lives."""

    host: str
    transport: Transport
    token: str
    checksum: str
    ttl: float = DEFAULT_TTL
    reconnect: Callable[[], Transport] | None = None
    # _clock() when the last take or renewal that the host confirmed was sent.
    confirmed: float = dataclasses.field(default_factory=_clock)
    lost: str = ""
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def margin(self) -> float:
        """How long before the lease lapses its holder stops acting: a command sent then
        still starts on the host in time."""
        return min(10.0, self.ttl / 6)

    def valid(self) -> bool:
        return not self.lost and _clock() < self.confirmed + self.ttl - self.margin

    def check(self) -> None:
        """Raise :class:`LeaseLostError` unless the lease is certainly still this run's."""
        if self.valid():
            return
        why = self.lost or (
            f"no renewal confirmed by the host for {_clock() - self.confirmed:.0f}s "
            f"(the lease lasts {self.ttl:g}s): this controller was stopped or suspended, or "
            "the host stopped answering"
        )
        raise LeaseLostError(
            self.host,
            f"the deploy lock's lease is no longer this run's ({why}); nothing more was done "
            "on the host",
            fix="rerun: the next run finds what this one left and converges it",
        )

    def start(self) -> Lease:
        """Renew the lease every TTL/4 until :meth:`release`."""
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"lease-{self.host}", daemon=True
        )
        self._thread.start()
        return self

    def renew(self) -> None:
        """One renewal; ``lost`` says why when the host refuses it."""
        sent = _clock()
        argv = ["sh", "-c", RENEW_SCRIPT, "fleet-renew", *_ARGS, self.checksum, f"{self.ttl:.0f}"]
        try:
            ran = self.transport.run(argv, check=False, timeout=self.ttl / _RENEWALS)
        except FleetError:
            return  # the next renewal may get through; if none does, the lease runs out
        if ran.exit_code == 0:
            self.confirmed = sent
        elif ran.exit_code == 6:
            self.lost = "the host's lock is not ours any more (taken over, or released)"
        elif ran.exit_code == 7:
            self.lost = "the lease lapsed on the host before a renewal reached it"

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / _RENEWALS) and not self.lost:
            self.renew()

    def guard(self, transport: Transport) -> Transport:
        """``transport``, each of whose commands first checks the lease."""
        return LeasedTransport(transport, self)

    def release(self) -> None:
        """Stop renewing; remove the lock if it is still ours (best effort: a lock left
        behind lapses within one TTL).

        A connection lost while the lock was held (the host's SSH sessions killed, a
        network blip) is opened again, once: a rerun should not wait for the lapse.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
        _unlock(self.transport, self.checksum, self.reconnect)


def _unlock(
    transport: Transport, checksum: str, reconnect: Callable[[], Transport] | None
) -> CommandResult | None:
    for attempt in range(3):
        try:
            ran = transport.run(
                ["sh", "-c", UNLOCK_SCRIPT, "fleet-unlock", *_ARGS, checksum], check=False
            )
        except UnreachableError:
            if reconnect is None:
                return None
            try:
                transport, reconnect = reconnect(), None
            except UnreachableError:
                return None
            continue
        if ran.exit_code != 5:
            return ran
        time.sleep(0.5 * (attempt + 1))
    return None


class LeasedTransport:
    """A transport whose every command first checks that the lease is still held."""

    def __init__(self, inner: Transport, lease: Lease) -> None:
        self._inner = inner
        self._lease = lease

    def run(self, argv: Sequence[str], **options: Any) -> CommandResult:
        self._lease.check()
        return self._inner.run(argv, **options)

    def stream(self, argv: Sequence[str], chunks: Iterable[bytes], **options: Any) -> CommandResult:
        self._lease.check()
        return self._inner.stream(argv, chunks, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def acquire(
    ctx: HostContext,
    what: str,
    *,
    controller: str,
    wait: float = 0.0,
    ttl: float = DEFAULT_TTL,
) -> Lease:
    """Take the host's lock, waiting up to ``wait`` seconds; HostError if held.

    A lapsed lock, or one whose holder ran here and is gone, is taken over atomically: the
    host replaces exactly the lock this run judged, so of two controllers taking over one
    lock, one wins and the other sees a fresh lease. The host's history records whose lock
    was taken over, and why. Every try but a take-over's sleeps first, and the deadline
    holds in every branch.
    """
    token = uuid.uuid4().hex
    deadline = time.monotonic() + max(0.0, wait)
    take_over = ""
    taken_over: set[str] = set()
    judged: LockState | None = None
    while True:
        content = _document(token, controller, what, ttl)
        sent = _clock()
        try:
            ran = ctx.transport.run(
                ["sh", "-c", LOCK_SCRIPT, "fleet-lock", *_ARGS, take_over],
                stdin=content,
                check=False,
            )
        except UnreachableError:
            # The answer was lost, maybe not the lock: if the host wrote ours, it is the
            # only lock with our content's checksum, and is released over a new connection.
            _unlock(ctx.transport, cksum(content), ctx.reconnect)
            raise
        state = LockState.parse(ran.stdout)
        if ran.exit_code == 0:
            lease = Lease(ctx.name, ctx.transport, token, state.checksum, ttl, ctx.reconnect)
            lease.confirmed = sent
            if take_over and judged is not None:
                _record_take_over(ctx, judged, controller, ttl)
            return lease
        if ran.exit_code == 4:
            raise HostError(
                ctx.name,
                f"cannot take the deploy lock: {ran.stderr.strip()}",
                fix="install util-linux (flock) on the host",
            )
        if ran.exit_code == 8:
            # Our document was cut on its way (a broken stdin): nothing was taken.
            raise HostError(ctx.name, f"cannot take the deploy lock: {ran.stderr.strip()}")
        if ran.exit_code not in (1, 5):
            raise HostError(
                ctx.name,
                f"cannot take the deploy lock in {STATE_DIR} (exit {ran.exit_code}): "
                f"{ran.stderr.strip() or ran.stdout.strip()[:200]}",
                fix=f"{STATE_DIR} is made by root and shared with the docker group: deploy "
                "once as root (ansible_become) so that docker-group users may too, or set "
                "ansible_become",
            )
        take_over = ""
        if (
            ran.exit_code == 1
            and state.checksum
            and (state.stale(ttl) or state.holder_gone())
            and state.checksum not in taken_over
            and len(taken_over) < _MAX_TAKE_OVERS
        ):
            # Replace exactly this lock on the next try, at once (bounded by the set).
            taken_over.add(state.checksum)
            take_over, judged = state.checksum, state
            continue
        if time.monotonic() >= deadline:
            raise _held(ctx.name, state, ttl, busy=ran.exit_code == 5)
        ctx.progress(f"waiting for the lock of {state.holder()}")
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))


def _document(token: str, controller: str, what: str, ttl: float) -> bytes:
    pid = os.getpid()
    document = {
        "token": token,
        "holder": controller,
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": process_start(pid),
        "run": RUN_ID,
        "what": what,
        "since": utc_now(),  # for people; the lease's age is the host's clock
        "ttl": ttl,
    }
    return json.dumps(document).encode() + b"\n"


def _record_take_over(ctx: HostContext, judged: LockState, controller: str, ttl: float) -> None:
    why = "its process is gone" if judged.holder_gone() else "its lease lapsed"
    ctx.progress(f"took over the lock of {judged.describe()}: {why}")
    record(
        ctx.transport,
        {
            "time": utc_now(),
            "by": controller,
            "action": "lock_taken_over",
            "outcome": "lock",
            "why": why,
            "previous_holder": judged.to_json(),
        },
    )


def _held(host: str, state: LockState, ttl: float, *, busy: bool) -> HostError:
    """The error of a lock this run could not take before its deadline."""
    if busy:
        return HostError(
            host,
            f"the deploy lock's guard {LOCK_GUARD} stayed busy",
            fix="rerun with --wait SECONDS; if it persists, look for a hung fleet on the host",
        )
    document = state.document
    left = state.left()
    if left is not None:
        return HostError(
            host,
            f"deploy lock held by {state.describe()}; its lease lapses in {max(0.0, left):.0f}s "
            "unless its run renews it",
            fix="wait for that run to finish, rerun with --wait SECONDS, or, if that run is "
            "dead on another controller, 'fleet lock release' this host",
        )
    if _parse_time(document.expires) is None:
        shown = state.raw.strip()[:200] or "(empty)"
        return HostError(
            host,
            f"deploy lock {LOCK_FILE} has no readable lease ({shown!r}); it counts as held "
            f"until it is {ttl:g}s old",
            fix="wait, rerun with --wait SECONDS, or 'fleet lock release' this host if no "
            "deploy runs there",
        )
    return HostError(
        host,
        f"deploy lock held by {state.holder()} ({document.said('what')}) "
        f"since {document.said('since')}, expires {document.said('expires')}",
        fix="wait for that deploy to finish, rerun with --wait SECONDS, or 'fleet lock "
        "release' this host if it is dead",
    )


def read(ctx: HostContext) -> LockState | None:
    """The host's lock as it is now, None when there is none."""
    ran = ctx.transport.run(["sh", "-c", STATE_SCRIPT, "fleet-lock-state", *_ARGS], check=False)
    if ran.exit_code != 0:
        raise HostError(
            ctx.name,
            f"cannot read the deploy lock (exit {ran.exit_code}): {ran.stderr.strip()[:200]}",
        )
    state = LockState.parse(ran.stdout)
    return state if state.checksum else None


def status(ctx: HostContext) -> HostResult:
    """One host's lock, as a result: ok and free, or ok and held (by whom, until when)."""
    state = read(ctx)
    if state is None:
        return ctx.result(Outcome.OK, "free", details={"lock": None})
    left = state.left()
    until = (
        f"lapses in {max(0.0, left):.0f}s"
        if left is not None
        else f"expires {state.document.said('expires')}"
    )
    gone = "; its process is gone" if state.holder_gone() else ""
    lapsed = "; lapsed" if state.stale(DEFAULT_TTL) else ""
    return ctx.result(
        Outcome.OK,
        f"held by {state.describe()}, {until}{lapsed}{gone}",
        details={"lock": state.to_json(), "checksum": state.checksum},
    )


def release(ctx: HostContext, checksum: str, controller: str) -> HostResult:
    """Remove the host's lock if it is still the one with ``checksum`` (what was shown);
    the host's history records who released whose."""
    state = read(ctx)
    if state is None:
        return ctx.result(Outcome.OK, "no lock to release")
    if state.checksum != checksum:
        return ctx.result(
            Outcome.FAILED,
            f"the lock changed since it was shown: now held by {state.describe()}",
            fix="run 'fleet lock status' again, then release what it shows",
        )
    ran = _unlock(ctx.transport, checksum, None)
    if ran is None or not ran.ok or read(ctx) is not None:
        return ctx.result(Outcome.FAILED, "the lock could not be released", fix="rerun")
    unrecorded = record(
        ctx.transport,
        {
            "time": utc_now(),
            "by": controller,
            "action": "lock_released",
            "outcome": "lock",
            "previous_holder": state.to_json(),
        },
    )
    return ctx.result(
        Outcome.CHANGED, f"released the lock of {state.describe()}", details=dict(unrecorded)
    )


__all__ = [
    "DEFAULT_TTL",
    "RUN_ID",
    "Lease",
    "LeasedTransport",
    "LockState",
    "acquire",
    "cksum",
    "controller_identity",
    "read",
    "release",
    "status",
]

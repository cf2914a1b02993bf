"""The deploy lock: take-over of stale and malformed locks, deadlines, and races (no lab).

The lock scripts run for real, in this machine's ``sh`` with its ``flock``, against a
temporary directory standing in for the host's state directory: a fake of fleet's
Transport (``LocalHost``) that maps the state directory's path, nothing else.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fleet.errors import HostError, LeaseLostError, UnreachableError
from fleet.hosts.model import Host
from fleet.ops import deploy
from fleet.ops import lock as leases
from fleet.ops.containers import LOCK_FILE, STATE_DIR
from fleet.ops.records import LockDocument
from fleet.runner import HostContext, Runner
from fleet.ssh.base import CommandResult
from tests.fakes import FakeTransport

# More commands than this for one lock is a livelock (each try is one command).
COMMAND_LIMIT = 60


class LocalHost(FakeTransport):
    """A host whose state directory is ``root``: fleet's ``sh -c`` scripts run locally."""

    def __init__(self, name: str, root: Path, path: str | None = None) -> None:
        super().__init__(name)
        self.root = root
        self.path = path

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        if len(self.commands) > COMMAND_LIMIT:
            raise AssertionError(f"{len(self.commands)} lock commands: a livelock")
        assert argv[:2] == ["sh", "-c"], argv  # only fleet's own scripts run here
        local = [word.replace(STATE_DIR, str(self.root)) for word in argv]
        env = dict(os.environ)
        if self.path:
            env["PATH"] = f"{self.path}:{env['PATH']}"
        done = subprocess.run(
            local, input=stdin or b"", capture_output=True, env=env, timeout=60, check=False
        )
        return CommandResult(
            " ".join(argv),
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
            0.0,
        )


def context(transport: FakeTransport) -> HostContext:
    return HostContext(Host(transport.host), Runner(lambda _: transport))


def options(wait: float = 0.0, controller: str = "bob@ctl") -> deploy.DeployOptions:
    return deploy.DeployOptions(repository="cauchy", wait_lock=wait, controller=controller)


def take(ctx: HostContext, given: deploy.DeployOptions) -> leases.Lease:
    """The host's lock, as a deploy with these options takes it."""
    return leases.acquire(
        ctx,
        "deploy 0.2.2",
        controller=given.controller,
        wait=given.wait_lock,
        ttl=given.lock_ttl,
    )


def lock_path(root: Path) -> Path:
    return root / Path(LOCK_FILE).relative_to(STATE_DIR)


def lock_document(token: str | None, expires: str, **fields: str) -> dict[str, str]:
    document = {"holder": "alice@laptop", "what": "deploy 0.2.1", "since": "2001-01-01T00:00:00Z"}
    if token is not None:
        document["token"] = token
    return {**document, "expires": expires, **fields}


EXPIRED = "2001-01-01T00:00:10Z"
FUTURE = "2999-01-01T00:00:00Z"


@pytest.mark.hostile
@pytest.mark.parametrize(
    "content",
    [
        json.dumps(lock_document("t0", EXPIRED)) + "\n",  # what fleet writes
        json.dumps(lock_document("t0", EXPIRED), separators=(",", ":")) + "\n",  # compact
        json.dumps(lock_document(None, EXPIRED)),  # no token, no newline
        json.dumps(lock_document("", EXPIRED), indent=2),  # several lines
    ],
    ids=["fleet", "compact", "no-token", "indented"],
)
def test_an_expired_lock_of_any_format_is_taken_over_in_a_few_commands(
    tmp_path: Path, content: str
) -> None:
    tmp_path.joinpath("deploy.lock").write_text(content)
    host = LocalHost("gpu1", tmp_path)
    lock = take(context(host), options(wait=0))
    assert len(host.commands) <= 3
    held = json.loads(lock_path(tmp_path).read_text())
    assert held["token"] == lock.token and held["holder"] == "bob@ctl"
    lock.release()
    assert not lock_path(tmp_path).exists()


@pytest.mark.hostile
@pytest.mark.parametrize("content", ["", "garbage \x01\x1b[2J", "[1, 2]", '{"token": "x"}'])
def test_a_lock_without_a_readable_expiry_is_held_until_it_is_older_than_the_ttl(
    tmp_path: Path, content: str
) -> None:
    path = lock_path(tmp_path)
    path.write_text(content)
    host = LocalHost("gpu1", tmp_path)
    with pytest.raises(HostError, match="no readable lease") as caught:
        take(context(host), options(wait=0))
    assert len(host.commands) == 1
    assert caught.value.fix is not None and "fleet lock release" in caught.value.fix
    assert path.read_text() == content
    # Older than the lock's TTL (an unfinished write of a controller long gone): taken over.
    old = time.time() - leases.DEFAULT_TTL - 60
    os.utime(path, (old, old))
    lock = take(context(host), options(wait=0))
    assert json.loads(path.read_text())["token"] == lock.token
    assert len(host.commands) <= 4


def test_a_held_lock_is_waited_for_with_sleeps_until_the_deadline(tmp_path: Path) -> None:
    lock_path(tmp_path).write_text(json.dumps(lock_document("t0", FUTURE)) + "\n")
    host = LocalHost("gpu1", tmp_path)
    started = time.monotonic()
    with pytest.raises(HostError, match="held by alice@laptop") as caught:
        take(context(host), options(wait=1.5))
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 10
    assert 2 <= len(host.commands) <= 4  # a try, sleeps, a try at the deadline
    assert caught.value.fix is not None and "--wait" in caught.value.fix


def test_a_lock_freed_while_waiting_is_taken(tmp_path: Path) -> None:
    path = lock_path(tmp_path)
    path.write_text(json.dumps(lock_document("t0", FUTURE)) + "\n")
    freer = threading.Timer(0.5, path.unlink)
    freer.start()
    host = LocalHost("gpu1", tmp_path)
    lock = take(context(host), options(wait=30))
    freer.join()
    assert json.loads(path.read_text())["token"] == lock.token


def test_release_removes_only_the_lock_this_run_wrote(tmp_path: Path) -> None:
    host = LocalHost("gpu1", tmp_path)
    lock = take(context(host), options())
    path = lock_path(tmp_path)
    # Another controller's lock now (ours was taken over, say): release must leave it.
    other = json.dumps(lock_document("other", FUTURE)) + "\n"
    path.write_text(other)
    lock.release()
    assert path.read_text() == other


class LostHost(LocalHost):
    """A host whose SSH connection is lost after ``alive`` commands, as when its sessions
    are killed: each later command fails to start, like a dead connection's."""

    def __init__(self, name: str, root: Path, alive: int) -> None:
        super().__init__(name, root)
        self.alive = alive

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        if len(self.commands) > self.alive:
            raise UnreachableError(self.host, "connection lost: cannot start the command")
        return super().answer(argv, stdin)


def test_a_lock_whose_connection_was_lost_is_released_over_a_new_one(tmp_path: Path) -> None:
    lost = LostHost("gpu1", tmp_path, alive=1)
    fresh = LocalHost("gpu1", tmp_path)
    connections = iter([lost, fresh])
    ctx = HostContext(Host("gpu1"), Runner(lambda _: next(connections)))
    lock = take(ctx, options())
    assert lock_path(tmp_path).exists()
    lock.release()  # the held connection is gone: a new one releases the lock
    assert not lock_path(tmp_path).exists()
    assert fresh.commands and fresh.commands[0][:2] == ["sh", "-c"]
    # Unreachable for good: one new connection is tried, then the release gives up
    # quietly (the lock expires).
    gone = LostHost("gpu2", tmp_path, alive=1)
    again = take(context(gone), options())
    again.release()
    assert lock_path(tmp_path).exists()
    assert len(gone.commands) == 3  # the lock, then one try on each connection


class AnswerLostHost(LocalHost):
    """A host that runs the first command but whose answer is lost with the connection
    (its SSH sessions killed right then)."""

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        if len(self.commands) == 1:
            super().answer(argv, stdin)  # it ran on the host ...
        raise UnreachableError(self.host, "connection lost")  # ... and the connection is gone


def test_a_lock_written_when_the_answer_was_lost_is_released_over_a_new_one(
    tmp_path: Path,
) -> None:
    lost = AnswerLostHost("gpu1", tmp_path)
    fresh = LocalHost("gpu1", tmp_path)
    connections = iter([lost, fresh])
    ctx = HostContext(Host("gpu1"), Runner(lambda _: next(connections)))
    with pytest.raises(UnreachableError):
        take(ctx, options())
    assert len(lost.commands) == 2 and fresh.commands  # the unlock went over a new one
    assert not lock_path(tmp_path).exists()


@pytest.mark.parametrize("size", [0, 1, 255, 256, 70000])
def test_the_lock_checksum_is_what_the_cksum_program_prints(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    printed = subprocess.run(["cksum"], input=data, capture_output=True, check=True)
    assert leases.cksum(data) == printed.stdout.decode().strip()


def _slow_rm(directory: Path) -> Path:
    """An ``rm`` that takes long, the second one longer: widens any check-then-remove race."""
    shims = directory / "shims"
    shims.mkdir()
    script = shims / "rm"
    script.write_text(
        "#!/bin/sh\n"
        f'if mkdir "{directory}/first-rm" 2>/dev/null; then sleep 0.2; else sleep 1; fi\n'
        'exec /bin/rm "$@"\n'
    )
    script.chmod(0o755)
    return shims


def _race(
    take: Callable[[str], leases.Lease], controllers: list[str]
) -> dict[str, leases.Lease | BaseException]:
    outcomes: dict[str, leases.Lease | BaseException] = {}
    start = threading.Barrier(len(controllers))

    def run(controller: str) -> None:
        start.wait()
        try:
            outcomes[controller] = take(controller)
        except BaseException as exc:  # recorded, asserted on below
            outcomes[controller] = exc

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in controllers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a controller never finished"
    return outcomes


@pytest.mark.hostile
@pytest.mark.parametrize("compact", [False, True], ids=["fleet", "compact"])
def test_two_controllers_taking_over_one_stale_lock_one_wins(tmp_path: Path, compact: bool) -> None:
    state = tmp_path / "state"
    state.mkdir()
    separators = (",", ":") if compact else None
    lock_path(state).write_text(
        json.dumps(lock_document("t0", EXPIRED), separators=separators) + "\n"
    )
    shims = _slow_rm(tmp_path)

    def take_as(controller: str) -> leases.Lease:
        host = LocalHost("gpu1", state, path=str(shims))
        return take(context(host), options(0, controller))

    outcomes = _race(take_as, ["a@ctl", "b@ctl"])
    won = {c: o for c, o in outcomes.items() if isinstance(o, leases.Lease)}
    lost = {c: o for c, o in outcomes.items() if not isinstance(o, leases.Lease)}
    assert len(won) == 1, outcomes
    [(winner, lock)] = won.items()
    [(loser, error)] = lost.items()
    assert isinstance(error, HostError) and f"held by {winner}" in error.reason, error
    # The loser removed nothing: the lock on the host is the winner's, until it releases.
    held = json.loads(lock_path(state).read_text())
    assert held["token"] == lock.token and held["holder"] == winner != loser
    lock.release()
    assert not lock_path(state).exists()


# -- the lease -------------------------------------------------------------------------------
def test_a_lease_names_its_holder_and_lasts_its_ttl_on_the_hosts_clock(tmp_path: Path) -> None:
    host = LocalHost("gpu1", tmp_path)
    lease = leases.acquire(context(host), "deploy 0.2.2", controller="bob@ctl", ttl=30)
    held = json.loads(lock_path(tmp_path).read_text())
    assert held["holder"] == "bob@ctl" and held["pid"] == os.getpid()
    assert held["host"] == socket.gethostname() and held["run"] == leases.RUN_ID
    assert held["ttl"] == 30 and "expires" not in held  # no controller clock in it
    assert held["pid_start"]
    document = LockDocument.parse(lock_path(tmp_path).read_text())
    assert document.holder == "bob@ctl" and document.pid == os.getpid() and document.ttl == 30
    state = leases.LockState(lease.checksum, 29.0, "", document)
    assert not state.stale(1) and state.left() == 1.0
    assert leases.LockState(lease.checksum, 31.0, "", document).stale(3600)
    lease.release()
    assert not lock_path(tmp_path).exists()


def test_a_held_lease_is_renewed_while_its_run_lives(tmp_path: Path) -> None:
    host = LocalHost("gpu1", tmp_path)
    lease = leases.acquire(context(host), "deploy 0.2.2", controller="bob@ctl", ttl=2).start()
    path = lock_path(tmp_path)
    try:
        time.sleep(3)  # longer than the TTL: only renewals keep it
        age = time.time() - path.stat().st_mtime
        assert age < 1.5 and lease.valid()
        renewals = [c for c in host.commands if "fleet-renew" in c]
        assert len(renewals) >= 3
    finally:
        lease.release()
    assert not path.exists()


@pytest.mark.parametrize("what", ["taken over", "lapsed"])
def test_a_lease_the_host_will_not_renew_is_lost_and_acts_no_more(
    tmp_path: Path, what: str
) -> None:
    host = LocalHost("gpu1", tmp_path)
    lease = leases.acquire(context(host), "deploy 0.2.2", controller="bob@ctl", ttl=30)
    path = lock_path(tmp_path)
    if what == "taken over":
        path.write_text(json.dumps(lock_document("other", FUTURE)) + "\n")
    else:  # nobody took it, but it lapsed: its holder may not bring it back
        old = time.time() - 60
        os.utime(path, (old, old))
    lease.renew()
    assert not lease.valid() and lease.lost
    guarded = lease.guard(host)
    before = len(host.commands)
    with pytest.raises(LeaseLostError, match="no longer this run's") as caught:
        guarded.run(["docker", "stop", "cauchy_service"])
    assert len(host.commands) == before  # the command never reached the host
    assert caught.value.fix and "rerun" in caught.value.fix


def test_a_controller_stopped_past_its_lease_does_nothing_when_it_wakes(tmp_path: Path) -> None:
    host = LocalHost("gpu1", tmp_path)
    lease = leases.acquire(context(host), "deploy 0.2.2", controller="bob@ctl", ttl=30)
    lease.confirmed -= 25  # the last renewal the host confirmed was sent 25 s ago ...
    assert not lease.valid()  # ... past the margin: no command is sent any more
    with pytest.raises(LeaseLostError, match=r"no renewal confirmed by the host for 2[56]s"):
        lease.check()


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_lock_whose_holder_process_is_gone_is_taken_over_at_once(tmp_path: Path) -> None:
    """The soak's blocked reruns: a controller killed mid-deploy, then run again."""
    dead = {
        "token": "t0",
        "holder": "bob@ctl",
        "host": socket.gethostname(),
        "pid": _dead_pid(),
        "pid_start": "1",
        "run": "deadbeef",
        "what": "deploy 0.2.1",
        "since": "2026-12-06T12:00:00Z",
        "ttl": 60,
    }
    lock_path(tmp_path).write_text(json.dumps(dead) + "\n")
    host = LocalHost("gpu1", tmp_path)
    lease = take(context(host), options())
    assert json.loads(lock_path(tmp_path).read_text())["token"] == lease.token
    [line] = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert line["action"] == "lock_taken_over" and line["why"] == "its process is gone"
    assert line["previous_holder"]["run"] == "deadbeef" and line["outcome"] == "lock"
    lease.release()
    # A live holder of this controller (this very process) is waited for, not taken over.
    alive = {**dead, "pid": os.getpid(), "pid_start": leases.process_start(os.getpid())}
    lock_path(tmp_path).write_text(json.dumps(alive) + "\n")
    # The lease's time left is counted from when it was seen: a slow machine may show 59s.
    with pytest.raises(HostError, match=r"lapses in (59|60)s"):
        take(context(LocalHost("gpu1", tmp_path)), options())


def test_lock_status_and_release_of_exactly_what_was_shown(tmp_path: Path) -> None:
    host = LocalHost("gpu1", tmp_path)
    assert leases.status(context(host)).reason == "free"
    held = leases.acquire(context(host), "deploy 0.2.1", controller="alice@laptop")
    shown = leases.status(context(host))
    assert shown.reason is not None and shown.reason.startswith("held by alice@laptop (pid")
    assert "deploy 0.2.1" in shown.reason and re.search(r"lapses in (59|60)s", shown.reason)
    # Another lock took its place meanwhile: release refuses, and removes nothing.
    path = lock_path(tmp_path)
    original = path.read_text()
    path.write_text(json.dumps(lock_document("other", FUTURE)) + "\n")
    refused = leases.release(context(host), held.checksum, "root@admin")
    assert refused.outcome == "failed" and "changed since it was shown" in str(refused.reason)
    path.write_text(original)
    done = leases.release(context(host), held.checksum, "root@admin")
    assert done.outcome == "changed" and not path.exists()
    [line] = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert line["action"] == "lock_released" and line["by"] == "root@admin"
    assert line["previous_holder"]["holder"] == "alice@laptop"


@pytest.mark.parametrize(
    ("text", "holder", "shown"),
    [
        (
            '{"holder": "bob@ctl", "ttl": 30, "pid": 7}',
            "bob@ctl",
            {"holder": "bob@ctl", "ttl": 30, "pid": 7},
        ),
        ("[1, 2]", "?", {"raw": "[1, 2]"}),
        (
            "garbage from a hand edit",
            "garbage from a hand edit",
            {"raw": "garbage from a hand edit"},
        ),
        ('{"ttl": true, "pid": "7"}', "?", {"ttl": True, "pid": "7"}),
    ],
)
def test_a_lock_document_is_read_whatever_the_host_holds(
    text: str, holder: str, shown: dict[str, object]
) -> None:
    document = LockDocument.parse(text)
    assert document.holder == holder and document.to_json() == shown
    # Only a number is a TTL, only a positive integer a pid: the host's file is its word.
    assert document.ttl in (None, 30.0) and document.pid in (None, 7)


@pytest.mark.hostile
@pytest.mark.parametrize("held", [False, True], ids=["free", "stale lock"])
def test_a_lock_document_cut_on_its_way_leaves_the_host_as_it_was(
    tmp_path: Path, held: bool
) -> None:
    """A connection cut while the document arrives never leaves an empty or cut lock (one
    that would count as held for a whole TTL): the lock is ours whole, or as it was."""
    state = tmp_path / "state"
    state.mkdir()
    before = json.dumps(lock_document("t0", EXPIRED)) + "\n"
    if held:
        lock_path(state).write_text(before)
    stale = leases.cksum(before.encode()) if held else ""
    document = json.dumps({"token": "t1", "holder": "bob@ctl", "ttl": 60}) + "\n"
    host = LocalHost("gpu1", state)
    for cut in (0, 1, len(document) // 2, len(document) - 1):
        ran = host.run(
            ["sh", "-c", leases.LOCK_SCRIPT, "fleet-lock", *leases._ARGS, stale],
            stdin=document[:cut].encode(),
            check=False,
        )
        assert ran.exit_code == 8 and "cut short" in ran.stderr, ran
        assert sorted(p.name for p in lock_path(state).parent.iterdir()) == sorted(
            ["deploy.lock.guard", *(["deploy.lock"] if held else [])]
        ), "a partial lock or its temporary file was left"
        if held:
            assert lock_path(state).read_text() == before
    whole = host.run(
        ["sh", "-c", leases.LOCK_SCRIPT, "fleet-lock", *leases._ARGS, stale],
        stdin=document.encode(),
        check=False,
    )
    assert whole.exit_code == 0, whole
    assert lock_path(state).read_text() == document
    assert [p.name for p in lock_path(state).parent.iterdir() if p.name.endswith(".new")] == []

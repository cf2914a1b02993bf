"""Everyday views of the fleet: what runs, what each host holds, the logs, a shell.

Per host everything starts from one :func:`fleet.ops.containers.gather` round trip (the
framework's containers, images and history); what is shown is derived from it here, as
JSON-ready values the CLI prints with ``--json`` and ``fleet.report.views`` renders:

- ``ps``: the framework containers (with ``--all`` every container), each with its
  health as a deploy judges it (the image's run command names the port, the settings the
  path) unless the container has a Docker HEALTHCHECK of its own;
- ``images --on``: the framework images on each host, which one runs and which one
  ``fleet rollback`` would go back to (:func:`fleet.ops.containers.previous_version`);
- ``logs``: the framework container's log, or followed (``docker logs --follow``) from
  every host at once until the run is stopped;
- ``shell``: ``docker exec -it`` in the framework container over the host's SSH session;
- the version picker of ``fleet deploy``/``fleet rollback``: the menu's rows are computed
  by pure functions (:func:`deploy_menu`, :func:`rollback_menu`, :func:`choose`).

Everything read from a host is untrusted: container names and labels are only ever passed
as single argv words, never interpreted by a shell.
"""

from __future__ import annotations

import contextlib
import os
import re
import termios
import threading
import tty
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from fleet.errors import FleetError, HostError, Interrupted, UnreachableError, UsageError
from fleet.hosts.model import Host
from fleet.images import runspec
from fleet.images.labels import ImageVersion
from fleet.images.runspec import HealthCheck
from fleet.ops import containers, health
from fleet.ops.containers import FrameworkContainer, FrameworkImage, HostFramework
from fleet.programs import program
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, Runner, Task
from fleet.ssh.base import Transport
from fleet.ssh.paramiko_client import FOLLOW_STOPPED

LABEL_COMMIT = "org.label-schema.vcs-ref"
LABEL_BUILD_DATE = "org.label-schema.build-date"

# Every container of the host, in the output format of ``containers.SCRIPT`` so that
# ``containers.parse`` reads it.
ALL_CONTAINERS_SCRIPT = program("all_containers.sh")

# The container's log with its stdout and stderr in the order they were written.
LOGS_SCRIPT = 'exec "$@" 2>&1'

# An interactive shell: bash where the image has it, else sh.
DEFAULT_SHELL = ("sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi")

# What ``docker logs --since`` takes: a Go duration (10m, 1h30m), a Unix time, or a date.
_SINCE = re.compile(
    r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+"
    r"|\d+(?:\.\d+)?"
    r"|\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?"
)


@dataclass(frozen=True)
class ViewOptions:
    """What the views look at: the framework's repository, and how."""

    repository: str
    all_containers: bool = False
    probe_health: bool = True
    timeout: float | None = None


def gather_state(ctx: HostContext, options: ViewOptions) -> HostFramework:
    """The framework's state on one host, or HostError when its engine is not usable."""
    state = containers.gather(ctx.transport, options.repository, timeout=options.timeout)
    if not state.engine_ok:
        raise HostError(
            ctx.name,
            f"Docker engine not usable: {state.engine_error}",
            fix="start the host's Docker engine (e.g. 'systemctl start docker')",
        )
    return state


# -- ps -----------------------------------------------------------------------------------
def container_view(container: FrameworkContainer, *, framework: bool) -> dict[str, Any]:
    """One container as ``fleet ps`` shows it (the JSON form)."""
    return {
        "name": container.name,
        "id": container.id[:12],
        "image": container.image,
        "tag": container.tag,
        "version": container.version,
        "framework": framework,
        "state": container.status,
        "exit_code": container.exit_code,
        "health": container.health,
        "health_detail": "docker HEALTHCHECK" if container.health else "",
        "started_at": container.started_at,
        "finished_at": container.finished_at,
        "restarts": container.restart_count,
        "restart_policy": _restart_policy(container),
    }


def _restart_policy(container: FrameworkContainer) -> str:
    policy = container.host_config.get("RestartPolicy")
    return str(policy.get("Name") or "") if isinstance(policy, Mapping) else ""


def probe_health(
    ctx: HostContext, state: HostFramework, container: FrameworkContainer, timeout: float | None
) -> tuple[str, str]:
    """(health, detail) of a running framework container, checked as a deploy checks it."""
    if container.health:
        return container.health, "docker HEALTHCHECK"
    image = state.image_by_tag(container.tag)
    if image is None or image.id != container.image_id:
        image = next((i for i in state.images if i.id == container.image_id), image)
    if image is None:
        return "unknown", "its image is not on the host any more"
    try:
        spec = runspec.run_spec_for(ctx.host, image, container.image)
        check = HealthCheck.from_settings(ctx.host.vars)
    except FleetError as exc:
        return "unknown", exc.message
    if spec.port is None:
        return "", "no port to check"
    url = f"http://127.0.0.1:{spec.port}{check.path}"
    ran = ctx.transport.run(
        # Its state was read a moment ago (gather_state): no name, no second inspect.
        ["sh", "-c", health.HEALTH_SCRIPT, "fleet-health", url, ""],
        check=False,
        timeout=timeout,
    )
    values = dict(line.split(" ", 1) for line in ran.stdout.splitlines() if " " in line)
    code = values.get("http", "000").strip()
    return ("healthy" if code == "200" else "unhealthy"), f"GET {check.path} -> {code}"


def ps_task(options: ViewOptions) -> Task:
    """``fleet ps`` on one host: its framework containers (or all), with their health."""

    def task(ctx: HostContext) -> HostResult:
        state = gather_state(ctx, options)
        rows: list[dict[str, Any]] = []
        for container in state.containers:
            row = container_view(container, framework=True)
            if options.probe_health and container.status == "running":
                row["health"], row["health_detail"] = probe_health(
                    ctx, state, container, options.timeout
                )
            rows.append(row)
        if options.all_containers:
            ran = ctx.transport.run(
                ["sh", "-c", ALL_CONTAINERS_SCRIPT, "fleet-ps"],
                check=False,
                timeout=options.timeout,
            )
            known = {c.id for c in state.containers}
            everything = containers.parse(ran.stdout)
            rows += [
                container_view(c, framework=False)
                for c in everything.containers
                if c.id not in known
            ]
        running = sum(1 for r in rows if r["framework"] and r["state"] == "running")
        return ctx.result(
            Outcome.OK,
            f"{running} framework container(s) running",
            details={"engine": state.engine_version, "containers": rows},
        )

    return task


# -- images --on --------------------------------------------------------------------------
def image_view(
    image: FrameworkImage, state: HostFramework, rollback_target: str | None
) -> dict[str, Any]:
    """One framework image on a host as ``fleet images --on`` shows it (the JSON form)."""
    users = [c for c in state.containers if c.image_id == image.id]
    return {
        "tag": image.tag,
        "id": image.id,
        "references": list(image.tags),
        "size": image.size,
        "created": image.created,
        "build_date": image.labels.get(LABEL_BUILD_DATE, ""),
        "commit": image.labels.get(LABEL_COMMIT, ""),
        "dirty": image.dirty,
        "running": any(c.running for c in users),
        "containers": [{"name": c.name, "state": c.status} for c in users],
        "rollback_target": bool(image.tag) and image.tag == rollback_target,
    }


def images_task(options: ViewOptions) -> Task:
    """``fleet images --on`` on one host: its framework images, the running one, the target."""

    def task(ctx: HostContext) -> HostResult:
        state = gather_state(ctx, options)
        target = containers.previous_version(state)
        rows = [image_view(image, state, target) for image in state.images]
        running = sorted({c.tag for c in state.running if c.tag})
        return ctx.result(
            Outcome.OK,
            f"{len(rows)} framework image(s)",
            details={"images": rows, "running": running, "rollback_target": target},
        )

    return task


# -- logs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogOptions:
    """``fleet logs``: how much of the log, and whether to follow it."""

    tail: str = "all"
    since: str | None = None
    timestamps: bool = False
    follow: bool = False

    def __post_init__(self) -> None:
        if self.tail != "all" and not (self.tail.isascii() and self.tail.isdigit()):
            raise UsageError(
                f"--tail {self.tail!r}: expected a number of lines or 'all'", fix="e.g. --tail 100"
            )
        if self.since is not None and not _SINCE.fullmatch(self.since):
            raise UsageError(
                f"--since {self.since!r}: expected a duration, a Unix time or a date",
                fix="e.g. --since 10m, --since 1h30m, --since 2026-11-28T10:00:00",
            )


def log_container(state: HostFramework) -> FrameworkContainer | None:
    """The container whose log ``fleet logs`` shows: the running one, else the last started."""
    if state.running:
        return state.running[0]
    if not state.containers:
        return None
    return max(state.containers, key=lambda c: c.started_at)


def logs_argv(container: FrameworkContainer, options: LogOptions) -> list[str]:
    """``docker logs`` of ``container`` (by ID: a name from the host is never reinterpreted)."""
    argv = ["docker", "logs", "--tail", options.tail]
    if options.follow:
        argv.append("--follow")
    if options.since is not None:
        argv += ["--since", options.since]
    if options.timestamps:
        argv.append("--timestamps")
    return [*argv, container.id]


def _no_container(ctx: HostContext, options: ViewOptions) -> HostResult:
    return ctx.result(Outcome.SKIPPED, f"no {options.repository} container on this host")


def logs_task(options: ViewOptions, log: LogOptions) -> Task:
    """``fleet logs`` (not following) on one host: the log, in ``stdout``."""

    def task(ctx: HostContext) -> HostResult:
        container = log_container(gather_state(ctx, options))
        if container is None:
            return _no_container(ctx, options)
        ran = ctx.transport.run(
            ["sh", "-c", LOGS_SCRIPT, "fleet-logs", *logs_argv(container, log)],
            check=False,
            timeout=options.timeout,
        )
        details = {"container": container.name, "tag": container.tag, "exit_code": ran.exit_code}
        if not ran.ok:
            return ctx.result(
                Outcome.FAILED,
                f"docker logs exited {ran.exit_code}: {ran.stdout.strip()[-300:]}",
                details=details,
            )
        return ctx.result(Outcome.OK, None, details=details, stdout=ran.stdout)

    return task


@runtime_checkable
class Following(Protocol):
    """A transport that can stream a command's output line by line (SSHTransport)."""

    def follow(
        self, argv: Sequence[str], on_line: Callable[[str], None], stop: threading.Event
    ) -> int: ...


def follow_logs(
    runner: Runner,
    hosts: Sequence[Host],
    options: ViewOptions,
    log: LogOptions,
    on_line: Callable[[str, str], None],
    on_end: Callable[[HostResult], None],
) -> FleetResult:
    """Follow the framework's log on every host at once, until stopped (Ctrl-C).

    Lines go to ``on_line(host, line)`` as they arrive, from worker threads. A host whose
    log cannot be followed, or stops (unreachable, the container gone), is handed to
    ``on_end`` at once while the others keep streaming. Ctrl-C ends the run normally.
    """
    log = replace(log, follow=True)
    located: dict[str, FrameworkContainer] = {}

    def locate(ctx: HostContext) -> HostResult:
        container = log_container(gather_state(ctx, options))
        if container is None:
            return _no_container(ctx, options)
        located[ctx.name] = container
        return ctx.result(Outcome.OK, None, details={"container": container.name})

    with runner.phases():
        found = runner.run("logs", hosts, locate)
    runner.settle(r for r in found.results if r.host not in located)
    for row in found.results:
        if row.outcome is not Outcome.OK:
            on_end(row)
    ready = [h for h in hosts if h.name in located]
    # Every stream lasts until the end: all of them at once (connections are open by now).
    runner.forks = max(runner.forks, len(ready))

    def stream(ctx: HostContext) -> HostResult:
        container = located[ctx.name]
        transport = ctx.transport
        details = {"container": container.name}
        try:
            if not isinstance(transport, Following):
                raise HostError(ctx.name, "this connection cannot stream output")
            code = transport.follow(
                logs_argv(container, log), lambda line: on_line(ctx.name, line), runner.stopping
            )
        except HostError as exc:
            outcome = Outcome.UNREACHABLE if isinstance(exc, UnreachableError) else Outcome.FAILED
            ended = ctx.result(outcome, exc.reason, details=details)
            on_end(replace(ended, fix=exc.fix))
            return ended
        if code == FOLLOW_STOPPED:
            return ctx.result(Outcome.OK, "stopped", details=details)
        reason = f"the log of {container.name} ended (docker logs exited {code})"
        ended = ctx.result(Outcome.OK if code == 0 else Outcome.FAILED, reason, details=details)
        on_end(ended)
        return ended

    try:
        streamed = runner.run("logs", ready, stream) if ready else FleetResult.of("logs", [])
    except Interrupted as exc:
        streamed = exc.partial
    by_host = {r.host: r for r in found.results} | {r.host: r for r in streamed.results}
    return FleetResult.of("logs", (by_host[h.name] for h in hosts), found.seconds)


# -- shell --------------------------------------------------------------------------------
@runtime_checkable
class Interactive(Protocol):
    """A transport that can wire a remote command to local file descriptors (SSHTransport)."""

    def interactive(
        self,
        argv: Sequence[str],
        *,
        stdin_fd: int,
        stdout_fd: int,
        stderr_fd: int | None = None,
        term: str | None = None,
        size: Callable[[], tuple[int, int]] | None = None,
    ) -> int: ...


def shell_container(host: str, state: HostFramework, repository: str) -> FrameworkContainer:
    """The running framework container to open a shell in, or HostError naming the fix."""
    if state.running:
        return state.running[0]
    stopped = ", ".join(f"{c.name} ({c.status})" for c in state.containers) or "none"
    raise HostError(
        host,
        f"no {repository} container runs here (framework containers: {stopped})",
        fix=f"'fleet ps {host}' shows what is there; 'fleet deploy {host}' starts one",
    )


def shell_argv(container: FrameworkContainer, command: Sequence[str], *, tty: bool) -> list[str]:
    """``docker exec -i[t] CONTAINER CMD...``: the command, or an interactive shell."""
    flags = ["-it"] if tty else ["-i"]
    return ["docker", "exec", *flags, container.id, *(command or DEFAULT_SHELL)]


def terminal_size(fd: int) -> tuple[int, int]:
    """(columns, rows) of the terminal on ``fd``; 80x24 when it has none."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return (80, 24)
    if not size.columns or not size.lines:  # a terminal nobody gave a size
        return (80, 24)
    return (size.columns, size.lines)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal on ``fd`` in raw mode (keys go to the remote side), restored after."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_shell(
    transport: Transport,
    argv: Sequence[str],
    *,
    tty_mode: bool,
    stdin_fd: int = 0,
    stdout_fd: int = 1,
    stderr_fd: int = 2,
    term: str = "xterm",
) -> int:
    """Run ``argv`` on the host wired to this process's terminal; its exit code."""
    if not isinstance(transport, Interactive):
        raise HostError(transport.host, "this connection cannot open an interactive session")
    if not tty_mode:
        return transport.interactive(
            argv, stdin_fd=stdin_fd, stdout_fd=stdout_fd, stderr_fd=stderr_fd
        )
    with raw_terminal(stdin_fd):
        return transport.interactive(
            argv,
            stdin_fd=stdin_fd,
            stdout_fd=stdout_fd,
            term=term,
            size=lambda: terminal_size(stdout_fd),
        )


# -- the version picker --------------------------------------------------------------------
@dataclass(frozen=True)
class MenuRow:
    """One choice of the version picker."""

    key: str  # what the user types
    tag: str | None  # the version picked; None: each host's own previous version
    label: str
    commit: str = ""
    date: str = ""
    running_on: tuple[str, ...] = ()
    note: str = ""
    default: bool = False


def _date(text: str) -> str:
    """``2026-11-28T04:26:53Z`` -> ``2026-11-28 04:26`` (anything else as it is)."""
    if len(text) >= 16 and text[10] == "T":
        return f"{text[:10]} {text[11:16]}"
    return text


def _running_on(states: Mapping[str, HostFramework | None], tag: str) -> tuple[str, ...]:
    return tuple(
        host
        for host, state in states.items()
        if state is not None and any(c.tag == tag for c in state.running)
    )


def deploy_menu(
    versions: Sequence[ImageVersion], states: Mapping[str, HostFramework | None]
) -> list[MenuRow]:
    """The picker of ``fleet deploy``: the built versions, newest first and preselected.

    ``states`` holds each selected host's framework (None: the host did not answer).
    """
    rows: list[MenuRow] = []
    for version in versions:
        if not version.tagged:
            continue
        notes = []
        if not rows:
            notes.append("newest")
        if version.dirty:
            notes.append("dirty tree")
        rows.append(
            MenuRow(
                key=str(len(rows) + 1),
                tag=version.tag,
                label=version.tag,
                commit=version.short_commit,
                date=_date(version.build_date or version.created),
                running_on=_running_on(states, version.tag),
                note=", ".join(notes),
                default=not rows,
            )
        )
    return rows


def rollback_menu(states: Mapping[str, HostFramework | None]) -> list[MenuRow]:
    """The picker of ``fleet rollback``: each host's previous version (preselected), or one
    version for all, from the framework images present on the hosts, newest first."""
    answered = {h: s for h, s in states.items() if s is not None}
    targets = [f"{h} -> {containers.previous_version(s) or 'none'}" for h, s in answered.items()]
    rows = [
        MenuRow(
            key="1",
            tag=None,
            label="previous",
            note="each host's own: " + (", ".join(targets) or "no host answered"),
            default=True,
        )
    ]
    by_tag: dict[str, FrameworkImage] = {}
    holders: dict[str, list[str]] = {}
    for host, state in answered.items():
        for image in state.images:
            if image.tag:
                by_tag.setdefault(image.tag, image)
                holders.setdefault(image.tag, []).append(host)
    ordered = sorted(by_tag.values(), key=lambda i: (-i.commit_count, i.tag))
    for image in ordered:
        missing = [h for h in answered if h not in holders[image.tag]]
        rows.append(
            MenuRow(
                key=str(len(rows) + 1),
                tag=image.tag,
                label=image.tag,
                commit=image.labels.get(LABEL_COMMIT, ""),
                date=_date(image.labels.get(LABEL_BUILD_DATE, "") or image.created),
                running_on=_running_on(answered, image.tag),
                note=f"not on {', '.join(missing)}" if missing else "",
            )
        )
    return rows


def choose(rows: Sequence[MenuRow], answer: str) -> MenuRow | None:
    """The row an answer picks: empty for the default, its number, or its label."""
    text = answer.strip()
    if not text:
        return next((r for r in rows if r.default), None)
    for row in rows:
        if text in (row.key, row.label):
            return row
    return None


def prompt(
    rows: Sequence[MenuRow],
    read_line: Callable[[], str],
    write: Callable[[str], None],
    *,
    question: str = "version",
    attempts: int = 3,
) -> MenuRow:
    """Ask until an answer picks a row; UsageError at end of input or after ``attempts``."""
    default = next((r for r in rows if r.default), rows[0] if rows else None)
    if default is None:
        raise UsageError("nothing to choose from")
    for _ in range(attempts):
        write(f"{question} [{default.key}: {default.label}]: ")
        line = read_line()
        if not line:
            write("\n")
            raise UsageError(
                "no version picked (end of input)", fix="name the version on the command line"
            )
        picked = choose(rows, line)
        if picked is not None:
            return picked
        write(f"{line.strip()!r} is not one of the choices: type its number or its version\n")
    raise UsageError("no version picked", fix="name the version on the command line")

"""Everything fleet shows a person: live progress, recaps, tables. The only user of rich.

On a terminal, a run shows a live per-host view (host, step, what it does, and for bytes
moved a bar, bytes, rate and ETA: rich.progress columns); piped or in CI, a plain line per
host and phase, and one as each host finishes. At the end: a recap table (one row per host), a
one-line summary, and the failed and unreachable hosts with their reason and fix, at the
bottom where they are seen. ``--json`` output is written by the CLI, never through here.

Every string that came from a host, an image label or the inventory is shown through
:mod:`fleet.report.untrusted`: as a ``Text`` (rich markup is never parsed in it) with its
terminal controls escaped. The consoles made here parse no markup and no emoji codes in
plain strings either, so a ``print(str)`` cannot go wrong.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from fleet.hosts.nodeset import folded
from fleet.ops.gpu import in_use, reading
from fleet.report.untrusted import first_line, safe_text, visible
from fleet.results import FleetResult, HostResult, Outcome
from fleet.units import format_size

STYLES: Mapping[Outcome, str] = {
    Outcome.OK: "green",
    Outcome.CHANGED: "yellow",
    Outcome.SKIPPED: "cyan",
    Outcome.FAILED: "bold red",
    Outcome.UNREACHABLE: "bold magenta",
}


# Piped or in CI, lines are not folded at 80 columns: a host's recap row stays one line (a
# CI log is read with grep), its note cut and marked at NOTE_WIDTH.
PIPED_WIDTH = 400
NOTE_WIDTH = 160


def clipped_line(text: str, width: int = NOTE_WIDTH) -> str:
    """The first line of ``text``, cut at ``width`` characters and marked "…" when cut."""
    line = first_line(text)
    return line if len(line) <= width else line[: width - 1] + "…"


def console(file: IO[str] | None = None, *, width: int | None = None) -> Console:
    """A console on ``file`` (stderr by default: stdout is kept for data)."""
    made = Console(
        file=file or sys.stderr,
        width=width,
        highlight=False,
        soft_wrap=False,
        markup=False,
        emoji=False,
    )
    if width is None and not made.is_terminal:
        made.width = PIPED_WIDTH
    return made


class _Status(ProgressColumn):
    """The host's outcome once it has one (styled), else what it is doing now."""

    def render(self, task: Task) -> Text:
        outcome = task.fields.get("outcome")
        if outcome is not None:
            return Text(str(outcome), style=STYLES[outcome])
        return Text(task.fields.get("note", ""))


class _WhenBytes(ProgressColumn):
    """A rich column shown only while the host moves bytes (its phase gave a total, and it
    is not finished). The row's ``moving`` field says so: rich keeps a task's total once
    set (``update(total=None)`` leaves it), so a later phase without bytes (a push's load
    after its send) would show the send's total with nothing done."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self.column = column

    def render(self, task: Task) -> RenderableType:
        if not task.fields.get("moving") or task.fields.get("outcome") is not None:
            return Text("")
        return self.column.render(task)


class _Elapsed(ProgressColumn):
    """Time since the host began: it advances across phases, and stands still once the host
    has its outcome (rich's own elapsed column stops for good at a task's first stop)."""

    def render(self, task: Task) -> Text:
        since = task.fields.get("since")
        if since is None:
            return Text("-:--:--", style="progress.elapsed")
        until = task.fields.get("until") or time.monotonic()
        return Text(str(timedelta(seconds=int(until - since))), style="progress.elapsed")


class _FoldingProgress(Progress):
    """rich's progress view that folds: past the terminal's height, a line of counts (how
    many hosts wait, run in each phase, ended with each outcome), then the hosts that ended
    badly and those running longest (the ones a person watches for), then as many others
    as fit."""

    def get_renderables(self) -> Iterable[RenderableType]:
        tasks = self.tasks
        if not hasattr(self, "live"):  # rich renders once while it makes the view
            yield self.make_tasks_table(tasks)
            return
        room = max(3, self.console.size.height - 3)
        if len(tasks) <= room:
            yield self.make_tasks_table(tasks)
            return
        waiting, ended, running = [], [], []
        for task in tasks:
            if task.fields.get("outcome") is not None:
                ended.append(task)
            elif task.fields.get("since") is None:
                waiting.append(task)
            else:
                running.append(task)
        yield _counts(len(tasks), waiting, running, ended)
        bad = [t for t in ended if t.fields["outcome"] in (Outcome.FAILED, Outcome.UNREACHABLE)]
        running.sort(key=lambda t: t.fields["since"])
        watched = [*bad[: room // 3], *running]
        # The rest of the room: the hosts that wait, then those done, in inventory order.
        seen = {t.id for t in watched}
        rest = [t for t in tasks if t.id not in seen]
        yield self.make_tasks_table([*watched, *rest][: room - 1])


def _counts(total: int, waiting: list[Task], running: list[Task], ended: list[Task]) -> Text:
    """``500 hosts: 200 waiting · 250 running (send 200, load 50) · 50 done (ok 48, failed 2)``."""
    phases = Counter(
        visible(t.fields.get("note") or t.fields.get("step") or "started") for t in running
    )
    outcomes = Counter(t.fields["outcome"] for t in ended)
    text = Text(f"{total} hosts: {len(waiting)} waiting · {len(running)} running")
    if phases:
        text.append(" (" + ", ".join(f"{p} {n}" for p, n in phases.most_common(4)) + ")")
    text.append(f" · {len(ended)} done")
    if outcomes:
        text.append(" (")
        for index, outcome in enumerate(o for o in STYLES if outcomes[o]):
            text.append(", " if index else "")
            text.append(f"{outcome} {outcomes[outcome]}", style=STYLES[outcome])
        text.append(")")
    return text


class LiveReporter:
    """Hears a run's events and shows them: live on a terminal, plain lines otherwise.

    Live: one row per host (rich.progress): host, step, what it does or its outcome and,
    while it moves bytes (a push's send), a bar, bytes done of the total, rate and ETA, and
    the time since the host began. A host's outcome shows once it is done: the end of a
    phase (a push's inspection inside a deploy) is progress, and the next phase's start
    takes the row back. More hosts than the terminal has lines fold into a line of counts
    and the rows worth watching. Plain: a line when a host starts a new phase, and one when
    it finishes.
    """

    def __init__(
        self, hosts: Sequence[str], out: Console | None = None, *, live: bool | None = None
    ) -> None:
        self.console = out or console()
        self.hosts = list(hosts)
        self._lock = threading.Lock()
        self._phase: dict[str, tuple[str, str]] = {}
        use_live = self.console.is_terminal if live is None else live
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._since: dict[str, float] = {}
        if use_live:
            self._progress = _FoldingProgress(
                TextColumn("{task.fields[host]}", markup=False),
                TextColumn("{task.fields[step]}", markup=False),
                _Status(),
                _WhenBytes(BarColumn(bar_width=20)),
                _WhenBytes(DownloadColumn(binary_units=True)),
                _WhenBytes(TransferSpeedColumn()),
                _WhenBytes(TimeRemainingColumn()),
                _Elapsed(),
                console=self.console,
                transient=True,
                refresh_per_second=8,
            )
            for host in self.hosts:
                self._task(host, "waiting")

    def __enter__(self) -> LiveReporter:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _task(self, host: str, note: str = "") -> tuple[Progress, TaskID] | None:
        """The live view and the host's row in it (made on first use); None when plain."""
        if self._progress is None:
            return None
        with self._lock:
            if host not in self._tasks:
                self._tasks[host] = self._progress.add_task(
                    "",
                    start=False,
                    total=None,
                    host=visible(host),
                    step="",
                    note=note,
                    outcome=None,
                    since=None,
                    until=None,
                    moving=False,
                )
            return self._progress, self._tasks[host]

    def started(self, host: str, step: str) -> None:
        live = self._task(host)
        if live is not None:
            view, task = live
            view.start_task(task)
            since = self._since.setdefault(host, time.monotonic())
            view.update(
                task,
                step=visible(step),
                note="",
                completed=0,
                outcome=None,
                since=since,
                until=None,
                moving=False,
            )

    def progress(self, host: str, step: str, note: str = "", done: int = 0, total: int = 0) -> None:
        live = self._task(host)
        if live is not None:
            view, task = live
            view.update(
                task,
                step=visible(step),
                note=visible(note),
                total=total or None,
                completed=done,
                moving=bool(total),
            )
            return
        with self._lock:
            new = self._phase.get(host) != (step, note)
            self._phase[host] = (step, note)
        if new and note:
            line = safe_text(host)
            line.append(f": {visible(step)} {visible(note)}")
            if total and not done:
                line.append(f" ({format_size(total)})", style="dim")
            self.console.print(line)

    def finished(self, result: HostResult) -> None:
        live = self._task(result.host)
        if live is not None:
            view, task = live
            view.update(task, outcome=result.outcome, until=time.monotonic())
            return
        self.console.print(_plain_line(result))


def _plain_line(result: HostResult) -> Text:
    line = safe_text(result.host)
    line.append(": ")
    line.append(str(result.outcome), style=STYLES[result.outcome])
    line.append(f" ({result.seconds:.1f}s)")
    if result.reason and not result.succeeded:
        line.append(f" {visible(clipped_line(result.reason))}")
    return line


# A summary line names at most about this many characters of hosts (a fleet of 500 folds).
SUMMARY_WIDTH = 300


def grouped_hosts(pairs: Iterable[tuple[str, str]], width: int = SUMMARY_WIDTH) -> str:
    """Hosts with what each has, grouped and folded: ``lab[1-2] (no_engine), lab3 (behind)``.

    One entry per label, in the order labels first came, its hosts folded into ranges;
    past ``width`` the rest is counted: ``… and 497 more``. Show it with ``visible``."""
    by_label: dict[str, list[str]] = {}
    for host, label in pairs:
        by_label.setdefault(label, []).append(host)
    entries: list[str] = []
    used = 0
    for index, (label, hosts) in enumerate(by_label.items()):
        entry = f"{folded(hosts, width // 2)} ({label})" if label else folded(hosts, width // 2)
        if entries and used + len(entry) > width:
            rest = sum(len(h) for h in list(by_label.values())[index:])
            return f"{', '.join(entries)} … and {rest} more"
        entries.append(entry)
        used += len(entry) + 2
    return ", ".join(entries)


def human_size(count: float) -> str:
    """A byte count as people read it (1.5MiB)."""
    return format_size(count)


def recap(
    result: FleetResult, detail_columns: Sequence[str] = (), *, title: str | None = None
) -> RenderableType:
    """The end of every run: a row per host, the summary, then what went wrong."""
    heading = f"RECAP {title or result.command}"
    table = Table(title=heading, title_justify="left", box=None, pad_edge=False)
    table.add_column("host")
    table.add_column("outcome")
    table.add_column("time", justify="right")
    for column in detail_columns:
        table.add_column(column)
    table.add_column("note")
    for row in result.results:
        note = ""
        if row.succeeded and row.reason:
            note = clipped_line(row.reason)
        elif not row.succeeded:
            note = "see below"
        cells = [safe_text(row.details.get(c, "")) for c in detail_columns]
        table.add_row(
            safe_text(row.host),
            Text(str(row.outcome), style=STYLES[row.outcome]),
            f"{row.seconds:.1f}s",
            *cells,
            safe_text(note),
        )
    parts: list[RenderableType] = [table, summary_line(result)]
    parts += problem_lines(result)
    return Group(*parts)


# Where a reason's second and later lines start: deeper than "  fix:".
REASON_INDENT = "    "


# Kinds of outcome listed under a summary (failures, drift); past this, a count: --json
# has every host's.
MAX_GROUPS = 8


def group_head(hosts: Sequence[str], what: str, style: str) -> Text:
    """A group of hosts that ended alike: their names folded, what they are, how many."""
    text = safe_text(folded(hosts, 80), style="bold")
    text.append(" ")
    text.append(visible(what), style=style)
    if len(hosts) > 1:
        text.append(f" ({len(hosts)} hosts)")
    return text


def groups_left(groups: Sequence[Sequence[str]], kind: str) -> list[Text]:
    """The line that counts the groups past :data:`MAX_GROUPS` (none if there are none)."""
    left = groups[MAX_GROUPS:]
    if not left:
        return []
    return [
        Text(
            f"… and {sum(map(len, left))} more hosts in {len(left)} other kinds of {kind} "
            "(--json has every host's)",
            style="dim",
        )
    ]


def problem_lines(result: FleetResult) -> list[Text]:
    """The failed and unreachable hosts: each reason, then the fix, hosts that failed
    alike together (folded: ``gpu[001-500] unreachable (500 hosts): ...``).

    The reason's own lines (a command's output tail) are indented under it, deeper than
    the fix, so no line of a host's output can pass for another host or for a fix.
    """
    groups: dict[tuple[Outcome, str, str], list[str]] = {}
    for row in (*result.failed, *result.unreachable):
        key = (row.outcome, row.reason or "no reason given", row.fix or "")
        groups.setdefault(key, []).append(row.host)
    parts: list[Text] = []
    for (outcome, reason, fix), hosts in list(groups.items())[:MAX_GROUPS]:
        text = group_head(hosts, str(outcome), STYLES[outcome])
        text.append(": ")
        text.append(visible(reason, lines=True, indent=REASON_INDENT))
        if fix:
            text.append("\n  fix: ", style="dim")
            text.append(visible(fix, lines=True, indent=REASON_INDENT), style="dim")
        parts.append(text)
    return parts + groups_left(list(groups.values()), "failure")


def summary_line(result: FleetResult) -> Text:
    """``3 hosts in 1.2s: ok=2 changed=0 failed=1 unreachable=0 skipped=0``."""
    counts = result.counts()
    text = Text(f"{len(result.results)} hosts in {result.seconds:.1f}s:")
    for outcome in (
        Outcome.OK,
        Outcome.CHANGED,
        Outcome.FAILED,
        Outcome.UNREACHABLE,
        Outcome.SKIPPED,
    ):
        count = counts[outcome]
        text.append(" ")
        text.append(f"{outcome}={count}", style=STYLES[outcome] if count else "")
    return text


def command_output(result: FleetResult, *, raw: bool = False) -> RenderableType:
    """``fleet exec`` output: each host's stdout/stderr under its name.

    ``raw`` passes the output to the terminal as it came, as ssh does (the operator asked
    to see it there); otherwise its controls are escaped like any host's text. The
    ``--- host`` headers are fleet's own lines: always escaped.
    """
    parts: list[RenderableType] = []
    for row in result.results:
        if row.outcome is Outcome.UNREACHABLE:
            continue
        header = Text("--- ", style="bold")
        header.append(visible(row.host))
        header.append(" ")
        header.append(str(row.outcome), style=STYLES[row.outcome])
        code = row.details.get("exit_code")
        if code is not None:
            header.append(f" rc={visible(code)}")
        parts.append(header)
        for stream, style in ((row.stdout, ""), (row.stderr, "red")):
            if stream:
                body = stream.rstrip("\n")
                parts.append(Text(body, style=style) if raw else safe_text(body, style, lines=True))
    return Group(*parts)


def facts_table(rows: Iterable[tuple[str, Mapping[str, Any] | None]]) -> RenderableType:
    """``fleet facts``: one row per host."""
    table = Table(box=None, pad_edge=False)
    for column in (
        "host",
        "hostname",
        "kernel",
        "engine",
        "api",
        "store",
        "runtimes",
        "gpus",
        "free docker",
        "free /data",
        "framework",
    ):
        table.add_column(column)
    for host, facts in rows:
        if facts is None:
            table.add_row(safe_text(host), *([""] * 10))
            continue
        version = facts.get("engine_version")
        engine = safe_text(version) if version else Text("down", style="red")
        disk_docker = facts.get("disk_docker") or {}
        disk_data = facts.get("disk_data") or {}
        gpus = facts.get("gpus") or []
        running = [str(c.get("Image", "")) for c in facts.get("framework_containers") or []]
        table.add_row(
            safe_text(host),
            safe_text(facts.get("hostname", "")),
            safe_text(facts.get("kernel", "")),
            engine,
            safe_text(facts.get("api_version", "")),
            safe_text(facts.get("image_store", "")),
            safe_text(",".join(str(r) for r in facts.get("runtimes") or ())),
            safe_text(_gpus(gpus, facts.get("cuda_version") or "")),
            _free(disk_docker, "?"),
            _free(disk_data, "absent"),
            safe_text(",".join(running) or "-"),
        )
    return table


_GPUS_LISTED = 3


def _gpus(gpus: list[Mapping[str, Any]], cuda: str) -> str:
    """``8x NVIDIA A100-SXM4-80GB (CUDA 12.2), idle``, or which are in use and how much:
    ``..., 2 in use: 3 (40000/81920 MiB, 97 %), 5 (...)``. One short cell a row, so a table
    of hundreds of GPU servers keeps one line per host (``--json`` has every GPU)."""
    if not gpus:
        return "none"
    text = f"{len(gpus)}x {gpus[0].get('model', '?')}" + (f" (CUDA {cuda})" if cuda else "")
    if not any(g.get("memory_used") or g.get("utilization") for g in gpus):
        return text  # an older driver's list: no use to tell, so not "idle"
    busy = []
    for g in gpus:
        used, total = reading(str(g.get("memory_used", ""))), reading(str(g.get("memory", "")))
        utilization = reading(str(g.get("utilization", "")))
        if in_use(utilization, used, total):
            busy.append(
                f"{g.get('index')} ({used:.0f}/{total:.0f} MiB, {g.get('utilization')})"
                if used is not None and total is not None
                else f"{g.get('index')} ({g.get('utilization')})"
            )
    if not busy:
        return f"{text}, idle"
    more = f", {len(busy) - _GPUS_LISTED} more" if len(busy) > _GPUS_LISTED else ""
    return f"{text}, {len(busy)} in use: {', '.join(busy[:_GPUS_LISTED])}{more}"


def _free(disk: Mapping[str, Any], missing: str) -> str:
    free = disk.get("free")
    return human_size(free) if isinstance(free, int | float) else missing


def lab_table(hosts: Iterable[Any]) -> RenderableType:
    """``fleet lab status``."""
    table = Table(box=None, pad_edge=False)
    for column in ("host", "address", "engine", "version", "store", "GPUs", "state"):
        table.add_column(column)
    for host in hosts:
        address = f"{host.address}:{host.port}" if host.port else "-"
        state = safe_text(host.state, style="green" if host.state == "running" else "red")
        table.add_row(
            safe_text(host.name),
            address,
            safe_text(host.engine),
            safe_text(host.engine_version),
            safe_text(host.image_store),
            str(host.gpus),
            state,
        )
    return table

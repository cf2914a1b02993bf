"""``fleet top`` as people see it: one line of totals, then a row per host.

A row: the host, its GPUs busy of total, their utilisation and memory, the framework's
version and status as ``docker ps`` says it, and the compute jobs with their age. Sorted
by free GPUs (default), busy GPUs or host name; past the terminal's height the rest is
counted and its hosts folded into ranges. Everything from a host is shown as text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fleet.hosts.nodeset import folded
from fleet.ops.gpu import GPUProcess, age
from fleet.ops.top import HostLoad
from fleet.report import STYLES
from fleet.report.untrusted import safe_text
from fleet.results import HostResult, Outcome
from fleet.units import format_size

SORTS = ("free", "busy", "host")


def _load(row: HostResult) -> HostLoad | None:
    return row.typed(HostLoad) if row.succeeded else None


def _free(row: HostResult) -> int:
    load = _load(row)
    return len(load.gpus) - load.busy_count if load is not None else -1


def _busy(row: HostResult) -> int:
    load = _load(row)
    return load.busy_count if load is not None else -1


def ordered(rows: Sequence[HostResult], sort: str) -> list[HostResult]:
    """The rows in ``sort`` order (ties by host name); unreachable hosts last."""
    if sort == "host":
        return sorted(rows, key=lambda r: r.host)
    if sort == "busy":
        return sorted(rows, key=lambda r: (-_busy(r), r.host))
    return sorted(rows, key=lambda r: (-_free(r), r.host))


def _job(job: GPUProcess) -> str:
    since = age(job.seconds) if job.seconds is not None else "?"
    return f"{job.pid} {job.name} {format_size(job.used_mib << 20)} {since}"


def _mib(value: int | None) -> str:
    return format_size(value << 20) if value is not None else "?"


def top_view(
    rows: Sequence[HostResult], sort: str = "free", *, limit: int | None = None, note: str = ""
) -> RenderableType:
    """The totals line and the table, at most ``limit`` host rows."""
    loads = [load for load in (_load(r) for r in rows) if load is not None]
    total = sum(len(load.gpus) for load in loads)
    busy = sum(load.busy_count for load in loads)
    free_hosts = [r.host for r in rows if _free(r) > 0]
    head = Text(f"{len(rows)} hosts · GPUs {busy}/{total} busy")
    if free_hosts:
        head.append(" · free on ")
        head.append(safe_text(folded(free_hosts, 80), style="green"))
    down = [r.host for r in rows if not r.succeeded]
    if down:
        head.append(" · unreachable ")
        head.append(safe_text(folded(down, 60), style=STYLES[Outcome.UNREACHABLE]))
    head.append(f" · sorted by {sort}{note}", style="dim")
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("host", "GPUs", "util", "memory", "framework", "jobs"):
        table.add_column(
            column,
            no_wrap=column != "jobs",
            justify="right" if column in ("GPUs", "util") else "left",
        )
    shown = ordered(rows, sort)
    rest = shown[limit:] if limit is not None else []
    for row in shown[: limit if limit is not None else len(shown)]:
        table.add_row(*_cells(row))
    parts: list[RenderableType] = [head, table]
    if rest:
        parts.append(
            Text(f"… and {len(rest)} more: ", style="dim")
            + safe_text(folded([r.host for r in rest], 120), style="dim")
        )
    return Group(*parts)


def _cells(row: HostResult) -> list[Text]:
    host = safe_text(row.host)
    load = _load(row)
    if load is None:
        reason = safe_text(row.reason or str(row.outcome), style=STYLES[row.outcome])
        return [host, Text("-"), Text("-"), Text("-"), reason, Text("")]
    if load.driver:
        gpus, util, memory = Text("-"), Text("-"), safe_text(load.driver, style="dim")
    else:
        busy = load.busy_count
        gpus = Text(f"{busy}/{len(load.gpus)}", style="yellow" if busy else "green")
        known = [g.utilization for g in load.gpus if g.utilization is not None]
        util = Text(f"{round(sum(known) / len(known))}%" if known else "?")
        used = sum(g.used_mib or 0 for g in load.gpus)
        whole = sum(g.total_mib or 0 for g in load.gpus)
        memory = Text(f"{_mib(used)}/{_mib(whole)}")
    if load.engine:
        framework = safe_text(load.engine, style="red")
    elif load.framework:
        framework = safe_text(", ".join(f"{r.tag or r.name} {r.status}" for r in load.framework))
    else:
        framework = Text("not running", style="dim")
    jobs = safe_text("; ".join(_job(j) for j in load.jobs) or "-")
    return [host, gpus, util, memory, framework, jobs]


def watch(
    console: Console,
    fetch: Callable[[], Sequence[HostResult]],
    read_key: Callable[[float], str | None],
    *,
    interval: float,
    sort: str = "free",
) -> None:
    """The live view: fetch, show, wait ``interval`` for a key; ``q`` quits, ``s`` sorts
    by the next order. Rows past the terminal's height are counted, not shown."""
    rows = fetch()
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            room = max(3, console.size.height - 4)
            note = f" · every {interval:g}s · s: sort, q: quit"
            live.update(top_view(rows, sort, limit=room, note=note), refresh=True)
            key = read_key(interval)
            if key in ("q", "Q"):
                return
            if key in ("s", "S"):
                sort = SORTS[(SORTS.index(sort) + 1) % len(SORTS)]
                continue
            if key is None:
                rows = fetch()

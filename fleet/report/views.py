"""``fleet ps``, ``fleet images --on``, ``fleet logs`` and the version picker as people see them.

The tables are built from the JSON-ready details of ``fleet.ops.views`` (the same values
``--json`` prints), so what a person reads and what a script reads cannot drift apart.
Everything in them came from the hosts (container names, image labels, log lines): it is
shown through :mod:`fleet.report.untrusted`, as plain text (never rich markup) with its
control characters made visible, on a terminal or not (a piped log is read on a terminal
later), so a container cannot drive the operator's terminal or forge a row. ``--json``
carries the exact strings.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from fleet.hosts.nodeset import folded
from fleet.ops.views import MenuRow
from fleet.report import STYLES, human_size, problem_lines
from fleet.report.untrusted import first_line, safe_text, visible
from fleet.results import FleetResult, HostResult, Outcome

HOST_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan")
_STATE_STYLES = {"running": "green", "restarting": "yellow", "paused": "yellow", "dead": "red"}
_HEALTH_STYLES = {"healthy": "green", "unhealthy": "bold red", "starting": "yellow"}


def _parse_time(text: str) -> datetime | None:
    """Docker's RFC 3339 times (nanoseconds, Z); None for unset ("0001-01-01...")."""
    if not text or text.startswith("0001-"):
        return None
    try:
        return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def age(seconds: float) -> str:
    """A duration as people say it: 45s, 12m, 3h, 2d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def since(text: str, now: datetime) -> str:
    """``11-28 04:27 (5m)`` for a Docker time (with the year when not this one's); ``-``
    when unset. UTC, as Docker reports it."""
    when = _parse_time(text)
    if when is None:
        return "-"
    shown = f"{when:%m-%d %H:%M}" if when.year == now.year else f"{when:%Y-%m-%d}"
    return f"{shown} ({age((now - when).total_seconds())})"


def _state(row: Mapping[str, Any]) -> Text:
    state = str(row.get("state", ""))
    if state == "exited":
        return safe_text(f"exited ({row.get('exit_code', '?')})", style="dim")
    return safe_text(state, style=_STATE_STYLES.get(state, ""))


def _health(row: Mapping[str, Any]) -> Text:
    health = str(row.get("health", ""))
    if not health:
        return Text("-" if row.get("state") != "running" else "", style="dim")
    text = safe_text(health, style=_HEALTH_STYLES.get(health, ""))
    detail = str(row.get("health_detail", ""))
    if health == "unhealthy" and detail.startswith("GET "):
        text.append(f" (http {visible(detail.rpartition(' ')[2])})", style="dim")
    return text


def _host_failure(row: HostResult) -> Text:
    return Text(str(row.outcome), style=STYLES[row.outcome])


def ps_table(result: FleetResult, *, now: datetime | None = None) -> RenderableType:
    """``fleet ps``: one table for the fleet, the rows of each host together."""
    now = now or datetime.now(UTC)
    table = Table(box=None, pad_edge=False)
    for column in ("host", "name", "image", "version", "state", "health", "up since"):
        # Names are never cut: folded, if the terminal is really that narrow.
        table.add_column(
            column,
            no_wrap=column not in ("version", "health"),
            overflow="fold" if column in ("name", "image", "health") else "ellipsis",
        )
    table.add_column("restarts", justify="right", no_wrap=True)
    for host in result.results:
        rows = host.details.get("containers")
        name = safe_text(host.host)
        if not isinstance(rows, list):
            table.add_row(name, "", "", "", _host_failure(host), "", "", "")
            continue
        if not rows:
            table.add_row(name, "", "", "", Text("none", style="dim"), "", "", "")
            continue
        for index, row in enumerate(rows):
            style = "" if row.get("framework") else "dim"
            running = row.get("state") == "running"
            table.add_row(
                name if index == 0 else "",
                safe_text(row.get("name", ""), style=style),
                safe_text(row.get("image", ""), style=style),
                safe_text(str(row.get("version", "")) or "-", style=style),
                _state(row),
                _health(row),
                safe_text(since(str(row.get("started_at", "")), now) if running else "-"),
                safe_text(row.get("restarts", 0)),
            )
    return table


def images_on_table(result: FleetResult) -> RenderableType:
    """``fleet images --on``: each host's framework images, what runs, the rollback target."""
    table = Table(box=None, pad_edge=False)
    for column in ("host", "tag", "image id", "size", "built", "commit", "runs", "containers"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for host in result.results:
        rows = host.details.get("images")
        name = safe_text(host.host)
        if not isinstance(rows, list):
            table.add_row(name, _host_failure(host), *[""] * 6)
            continue
        if not rows:
            table.add_row(name, Text("no framework image", style="dim"), *[""] * 6)
            continue
        for index, row in enumerate(rows):
            marks = Text()
            if row.get("running"):
                marks.append("running", style="green")
            if row.get("rollback_target"):
                marks.append(("  " if marks else "") + "rollback target", style="yellow")
            kept = ", ".join(
                f"{c.get('name')} ({c.get('state')})" for c in row.get("containers") or ()
            )
            table.add_row(
                name if index == 0 else "",
                safe_text(row.get("tag") or "(no tag)"),
                safe_text(_short_id(str(row.get("id", "")))),
                human_size(_number(row.get("size"))),
                safe_text(_date(str(row.get("build_date") or row.get("created") or ""))),
                safe_text(row.get("commit") or "-"),
                marks,
                safe_text(kept or "-", style="dim"),
            )
    return Group(Text("on the hosts:", style="bold"), table)


def host_problems(result: FleetResult) -> RenderableType | None:
    """The failed and unreachable hosts with their reason and fix; None when there are none."""
    parts = problem_lines(result)
    return Group(*parts) if parts else None


class LogPrinter:
    """Prints log lines prefixed with their host, a colour per host on a terminal.

    Called from the threads that read the hosts; each line is printed whole.
    """

    def __init__(self, hosts: Sequence[str], out: Console) -> None:
        self.out = out
        self._width = max((len(visible(h)) for h in hosts), default=0)
        self._colours = {h: HOST_COLOURS[i % len(HOST_COLOURS)] for i, h in enumerate(hosts)}
        self._lock = threading.Lock()

    def line(self, host: str, line: str) -> None:
        text = Text(f"{visible(host):<{self._width}} | ", style=self._colours.get(host, "bold"))
        text.append(visible(line))
        with self._lock:
            self.out.print(text, soft_wrap=True)
            self.out.file.flush()  # piped, a followed line is passed on at once

    def host_log(self, result: HostResult) -> None:
        """A host's whole log (``fleet logs`` without ``--follow``)."""
        for line in result.stdout.splitlines():
            self.line(result.host, line)


def log_end(result: HostResult, *, following: Sequence[str] = ()) -> Text:
    """Why a host's log stopped, while the others go on."""
    text = Text(f"{visible(result.host)}: ", style="bold")
    if result.outcome is Outcome.OK:
        text.append(visible(result.reason or "log ended"))
    else:
        text.append(str(result.outcome), style=STYLES[result.outcome])
        text.append(f": {visible(first_line(result.reason or ''))}")
    if following:
        text.append(f"; still following {visible(', '.join(following))}", style="dim")
    return text


def version_menu(rows: Sequence[MenuRow], title: str) -> RenderableType:
    """The version picker's menu; the preselected row is marked ``>``."""
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in ("", "version", "commit", "built", "runs on", "note"):
        table.add_column(column, justify="right" if column == "" else "left")
    for row in rows:
        key = Text(f"{'>' if row.default else ' '} {row.key})", style="bold" if row.default else "")
        table.add_row(
            key,
            safe_text(row.label, style="bold" if row.default else ""),
            safe_text(row.commit or ""),
            safe_text(row.date or ""),
            safe_text(folded(row.running_on, 60) or "-"),
            safe_text(row.note, style="dim"),
        )
    return table


def _number(value: Any) -> float:
    """A size from the host's JSON: 0 unless it is a number."""
    return float(value) if isinstance(value, int | float) else 0.0


def _date(text: str) -> str:
    if len(text) >= 16 and text[10] == "T":
        return f"{text[:10]} {text[11:16]}"
    return text


def _short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12] or "-"

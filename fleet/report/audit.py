"""``fleet audit`` as people see it: one row per host, the summary under it, then why.

The table says what each host runs (version, commit, build date, dirty flag), how (state,
health, up since, restarts, image ID), whether that image is the controller's build, the
other versions it holds (rollback targets) and its last history line. Under it: how many
hosts run each version, how many drifted and why, and the unreachable hosts by name.

Everything in a row came from the host (its labels, its history file, its lock): it is
shown through :mod:`fleet.report.untrusted`, never as markup, its controls escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from fleet.hosts.nodeset import folded
from fleet.ops.audit import AuditReport
from fleet.ops.records import HistoryEntry
from fleet.ops.verdict import STATUS_ERROR, STATUS_OK, STATUS_UNREACHABLE, AuditRow
from fleet.report import MAX_GROUPS, REASON_INDENT, group_head, grouped_hosts, groups_left
from fleet.report.untrusted import safe_text, visible

_MATCH_STYLES = {
    "same": "green",
    "labels": "green",
    "superseded": "red",
    "different": "red",
    "unknown": "red",
}


def audit_view(report: AuditReport, *, now: datetime | None = None) -> RenderableType:
    """The table, the summary under it, and each drifted or unreachable host's reasons."""
    now = now or datetime.now(UTC)
    parts: list[RenderableType] = [audit_table(report.rows, now=now), Text("")]
    parts += summary_lines(report)
    details = drift_details(report.rows)
    if details:
        parts.append(Text(""))
        parts += details
    return Group(*parts)


def audit_table(rows: Sequence[AuditRow], *, now: datetime | None = None) -> Table:
    """One row per host."""
    now = now or datetime.now(UTC)
    table = Table(box=None, pad_edge=False)
    for column in (
        "host",
        "version",
        "commit",
        "built",
        "state",
        "up since",
        "restarts",
        "image",
        "controller",
        "other versions",
        "last deploy",
        "drift",
    ):
        table.add_column(column, justify="right" if column == "restarts" else "left")
    for row in rows:
        table.add_row(*_cells(row, now))
    return table


def _cells(row: AuditRow, now: datetime) -> list[str | Text]:
    return [safe_text(cell) if isinstance(cell, str) else cell for cell in _values(row, now)]


def _values(row: AuditRow, now: datetime) -> list[str | Text]:
    """The row's cells: ``Text`` where fleet styles them, else the host's own strings
    (made safe by ``_cells``)."""
    drift = _drift_cell(row)
    framework = row.framework
    state: str | Text
    if framework is None:
        state = "-"
        if row.status == STATUS_UNREACHABLE:
            state = Text("unreachable", style="bold magenta")
        elif row.status == STATUS_ERROR:
            state = Text("error", style="bold red")
        elif "no_engine" in row.codes:
            state = Text("no engine", style="red")
        elif "not_running" in row.codes:
            state = Text("not running", style="red")
        else:
            state = Text("not installed", style="red")
        return [
            row.host,
            "-",
            "",
            "",
            state,
            "",
            "",
            "",
            "",
            ",".join(row.other_versions),
            _last_deploy(row.last_deploy),
            drift,
        ]
    version = safe_text(framework.tag or "?")
    if framework.dirty:
        version.append(" dirty", style="bold yellow")
    commit = framework.short_commit or framework.commit[:7]
    if framework.branch:
        commit += f" {framework.branch}"
    status = safe_text(framework.state, style="green" if framework.running else "red")
    if framework.health:
        status.append(
            f" ({visible(framework.health)})",
            style="green" if framework.health == "healthy" else "red",
        )
    if not framework.running:
        status.append(f" ({framework.exit_code})")
    if row.busy:
        status.append(f" busy: {len(row.busy)} GPU job(s)", style="bold yellow")
    match = Text(
        row.controller_match or "-", style=_MATCH_STYLES.get(row.controller_match or "", "")
    )
    return [
        row.host,
        version,
        commit,
        framework.build_date[:10],
        status,
        _since(framework.since, now) if framework.running else "",
        str(framework.restart_count),
        framework.image_id.removeprefix("sha256:")[:12],
        match,
        ",".join(row.other_versions),
        _last_deploy(row.last_deploy),
        drift,
    ]


def _drift_cell(row: AuditRow) -> Text:
    if row.status == STATUS_OK:
        return Text("ok", style="green")
    if row.status == STATUS_UNREACHABLE:
        return Text("unreachable", style="bold magenta")
    return safe_text(",".join(row.codes), style="bold red")


def summary_lines(report: AuditReport) -> list[RenderableType]:
    """Hosts per version, drifted hosts, unreachable hosts, what was expected."""
    rows = report.rows
    versions = report.versions()
    line = Text(f"{len(rows)} hosts in {report.result.seconds:.1f}s: ")
    if versions:
        # Each version with its count and its hosts, folded: "0.2.7 x40 (gpu[01-40])".
        running = {
            tag: [r.host for r in rows if r.reachable and (r.tag or "none") == tag]
            for tag in versions
        }
        line.append(
            visible(
                ", ".join(
                    f"{'not running' if tag == 'none' else tag} x{n} ({folded(running[tag], 80)})"
                    for tag, n in versions.items()
                )
            )
        )
    else:
        line.append("none reached")
    lines: list[RenderableType] = [line]
    expected = report.options.expected
    builds = [v.tag for v in report.options.controller_versions if v.tagged]
    controller = Text(f"controller: {visible(report.options.repository)} ")
    controller.append(visible(f"builds {', '.join(builds)}") if builds else "has no build")
    if expected:
        controller.append(f"; expected {visible(expected)}")
    lines.append(controller)
    drifted = report.drifted
    if drifted:
        text = Text(f"drifted: {len(drifted)} of {len(rows)}: ", style="bold red")
        text.append(visible(grouped_hosts((r.host, ",".join(r.codes)) for r in drifted)))
        lines.append(text)
    else:
        lines.append(Text("drifted: none", style="green"))
    busy = [r for r in rows if r.busy]
    if busy:
        text = Text(f"busy GPUs: {len(busy)}: ", style="bold yellow")
        text.append(visible(grouped_hosts((r.host, ", ".join(r.busy)) for r in busy)))
        lines.append(text)
    unreachable = report.unreachable
    if unreachable:
        text = Text(f"unreachable: {len(unreachable)}: ", style="bold magenta")
        text.append(visible(grouped_hosts((r.host, "") for r in unreachable)))
        lines.append(text)
    if report.interrupted:
        lines.append(Text("interrupted (Ctrl-C): hosts not audited are marked", style="yellow"))
    return lines


def drift_details(rows: Sequence[AuditRow]) -> list[RenderableType]:
    """The drifted and unreachable hosts' reasons, hosts with the same reasons together
    (folded: ``light[001-500] drift``), and deploys in progress."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[str]] = {}
    for row in rows:
        if not row.ok:
            reasons = tuple((reason.code, reason.message) for reason in row.reasons)
            groups.setdefault((row.status, reasons), []).append(row.host)
    parts: list[RenderableType] = []
    for (status, reasons), hosts in list(groups.items())[:MAX_GROUPS]:
        style = "bold magenta" if status == STATUS_UNREACHABLE else "bold red"
        text = group_head(hosts, status, style)
        for code, message in reasons:
            text.append(f"\n  {visible(code)}: ", style="dim")
            text.append(visible(message, lines=True, indent=REASON_INDENT))
        parts.append(text)
    parts += groups_left(list(groups.values()), "drift")
    for row in rows:
        if row.lock:
            lock = row.lock
            parts.append(
                safe_text(
                    f"{row.host}: a deploy is in progress: lock of {lock.holder} "
                    f"({lock.said('what')}) since {lock.said('since')}",
                    style="yellow",
                )
            )
    return parts


def history_view(rows: Sequence[AuditRow]) -> RenderableType:
    """``--history N``: each host's last N history lines, oldest first."""
    parts: list[RenderableType] = [Text("history", style="bold")]
    for row in rows:
        parts.append(safe_text(row.host, style="bold"))
        if not row.history:
            parts.append(Text("  (unreachable)" if not row.reachable else "  (none)", style="dim"))
        for entry in row.history:
            parts.append(safe_text("  " + history_line(entry)))
    return Group(*parts)


def history_line(entry: HistoryEntry) -> str:
    """``2026-11-28T04:27:13Z deploy 0.2.6 -> 0.2.7 changed by alice@ctl (1.7s)``.

    The host's own words: show it with :func:`fleet.report.untrusted.safe_text`."""
    said = f"{entry.time or '?'} {entry.action or '?'}"
    if not entry.is_switch:
        previous = entry.get("previous_holder")
        holder = previous.get("holder", "?") if isinstance(previous, Mapping) else "?"
        why = f": {entry.get('why')}" if entry.get("why") else ""
        return f"{said} by {entry.by or '?'} (the lock of {holder}{why})"
    text = (
        f"{said} {entry.from_version or 'none'} -> {entry.to_version or '?'} "
        f"{entry.outcome or '?'} by {entry.by or '?'}"
    )
    if entry.get("seconds") is not None:
        text += f" ({entry.get('seconds')}s)"
    if entry.get("restored"):
        text += f", restored {entry.get('restored')}"
    return text


def _last_deploy(entry: HistoryEntry | None) -> str:
    if not entry:
        return "-"
    action = "" if entry.action == "deploy" else f"{entry.action or '?'} "
    arrow = f"{entry.from_version or 'none'}->{entry.to_version or '?'}"
    outcome = "" if entry.outcome == "changed" else f" {entry.outcome or '?'}"
    return f"{action}{arrow}{outcome} by {entry.by or '?'} {_when(entry.time or '')}"


def _when(timestamp: str) -> str:
    """``2026-11-28T04:24:52Z`` -> ``2026-11-28 04:24``."""
    if not timestamp:
        return ""
    return timestamp.replace("T", " ")[:16]


def _since(timestamp: str, now: datetime) -> str:
    if not timestamp:
        return ""
    try:
        started = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return timestamp
    return f"{_when(timestamp)} ({_age((now - started).total_seconds())})"


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


# -- CSV: `fleet audit --csv` ---------------------------------------------------------------
CSV_COLUMNS = (
    "host",
    "status",
    "reasons",
    "tag",
    "version",
    "commit",
    "branch",
    "build_date",
    "dirty",
    "state",
    "health",
    "since",
    "restart_count",
    "image_id",
    "controller_match",
    "expected",
    "other_versions",
    "rollback_to",
    "last_deploy_time",
    "last_deploy_by",
    "last_deploy_action",
    "last_deploy_to",
    "last_deploy_outcome",
    "config_diff",
    "message",
)


def csv_record(row: AuditRow) -> dict[str, str]:
    """One spreadsheet row (every value text; lists joined with spaces)."""
    framework = row.framework
    last = row.last_deploy
    values: dict[str, Any] = {
        "host": row.host,
        "status": row.status,
        "reasons": " ".join(row.codes),
        "expected": row.expected or "",
        "controller_match": row.controller_match or "",
        "other_versions": " ".join(row.other_versions),
        "rollback_to": row.rollback_to or "",
        "last_deploy_time": last.time if last else "",
        "last_deploy_by": last.by if last else "",
        "last_deploy_action": last.action if last else "",
        "last_deploy_to": last.to_version if last else "",
        "last_deploy_outcome": last.outcome if last else "",
        "config_diff": " ".join(d.field for d in row.config_diff),
        "message": row.reason_text(),
    }
    if framework is not None:
        values |= {
            "tag": framework.tag,
            "version": framework.version,
            "commit": framework.commit,
            "branch": framework.branch,
            "build_date": framework.build_date,
            "dirty": "true" if framework.dirty else "false",
            "state": framework.state,
            "health": framework.health,
            "since": framework.since,
            "restart_count": framework.restart_count,
            "image_id": framework.image_id,
        }
    return {column: _csv_text(values.get(column, "")) for column in CSV_COLUMNS}


def _csv_text(value: Any) -> str:
    text = "" if value is None else str(value)
    # A cell starting with = + - @ is a formula to a spreadsheet: host data must stay data.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text

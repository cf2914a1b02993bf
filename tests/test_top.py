"""fleet top's parse of a host's answer and its view, as a person reads it."""

from __future__ import annotations

import io

from fleet import report
from fleet.ops.top import HostLoad, Running, Usage, parse
from fleet.report.top import ordered, top_view
from fleet.results import HostResult, Outcome

# What the lab's driver and engine print (the program's sections, as a host answers).
ANSWER = """@@gpu_apps
4711, GPU-aaaa, 3072, python3
@@gpu_apps_rc 0
@@gpu_owners
4711 3725 0::/docker/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
@@gpus
0, GPU-aaaa, NVIDIA A100-SXM4-80GB, 97, 3076, 81920
1, GPU-bbbb, NVIDIA A100-SXM4-80GB, 0, 4, 81920
@@gpus_rc 0
@@framework
cauchy_service|0.2.7|Up 2 hours (healthy)
@@framework_rc 0
@@end
"""


def row(host: str, load: HostLoad | None, reason: str = "") -> HostResult:
    if load is None:
        return HostResult(host, Outcome.UNREACHABLE, reason or "cannot connect")
    return HostResult(host, Outcome.OK, details=load.to_json(), payload=load)


def render(renderable: object) -> str:
    buffer = io.StringIO()
    report.console(buffer, width=140).print(renderable)
    return buffer.getvalue()


def test_a_hosts_answer_becomes_its_load() -> None:
    load = parse(ANSWER)
    assert [g.index for g in load.gpus] == [0, 1]
    assert load.gpus[0] == Usage(0, "GPU-aaaa", "NVIDIA A100-SXM4-80GB", 97, 3076, 81920)
    assert load.busy_count == 1
    (job,) = load.jobs
    assert (job.pid, job.used_mib, job.seconds, job.container_id[:4]) == (4711, 3072, 3725, "0123")
    assert load.framework == (Running("cauchy_service", "0.2.7", "Up 2 hours (healthy)"),)
    assert (load.driver, load.engine) == ("", "")


def test_a_gpu_holding_a_job_is_busy_even_at_zero_utilisation() -> None:
    idle_but_held = ANSWER.replace("97, 3076", "0, 4")
    assert parse(idle_but_held).busy_count == 1


def test_no_driver_and_no_engine_are_said_not_guessed() -> None:
    answer = (
        "@@gpu_apps\n@@gpu_apps_rc absent\n@@gpus\n@@gpus_rc absent\n"
        "@@framework\nCannot connect to the Docker daemon at unix:///var/run/docker.sock\n"
        "@@framework_rc 1\n@@end\n"
    )
    load = parse(answer)
    assert load.gpus == () and load.busy_count == 0
    assert load.driver == "no NVIDIA driver (nvidia-smi is not installed)"
    assert load.engine.startswith("Cannot connect to the Docker daemon")


def test_the_view_totals_sorts_and_folds() -> None:
    busy, free = (
        parse(ANSWER),
        parse(ANSWER.replace("97, 3076", "0, 4").replace("4711, GPU-aaaa, 3072, python3\n", "")),
    )
    rows = [
        row("gpu01", busy),
        row("gpu02", free),
        row("gpu03", free),
        row("gpu04", None, "cannot connect to 10.0.0.4:22: timed out"),
    ]
    text = render(top_view(rows))
    lines = text.splitlines()
    assert lines[0] == (
        "4 hosts · GPUs 1/6 busy · free on gpu[01-03] · unreachable gpu04 · sorted by free"
    )
    # Most free GPUs first, the unreachable last; the job with its memory and age.
    assert [line.split()[0] for line in lines[2:]] == ["gpu02", "gpu03", "gpu01", "gpu04"]
    gpu01 = next(line for line in lines if line.startswith("gpu01"))
    assert "1/2" in gpu01 and "4711 python3 3.0GiB 1h02m" in gpu01
    assert "0.2.7 Up 2 hours (healthy)" in gpu01
    assert "cannot connect to 10.0.0.4:22" in text
    assert [r.host for r in ordered(rows, "busy")][:1] == ["gpu01"]
    folded = render(top_view(rows, "host", limit=2)).splitlines()
    assert folded[-1] == "… and 2 more: gpu[03-04]"


def test_what_a_host_says_is_shown_as_text() -> None:
    hostile = ANSWER.replace("0.2.7|Up", "0.2.7\x1b]0;owned\x07[bold]|Up")
    text = render(top_view([row("gpu01", parse(hostile))]))
    assert "\x1b" not in text and "\\x1b]0;owned\\x07[bold]" in text

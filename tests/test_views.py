"""fleet ps / images --on / logs / shell and the version picker, without a host.

The views run on a fake transport of fleet's own interface that answers the gather script
with recorded ``docker inspect`` documents; tables render to a fixed-width console.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

from fleet.cli import views as cli_views
from fleet.errors import HostError, UnreachableError, UsageError
from fleet.hosts.model import FrozenDict, Host
from fleet.images.labels import ImageVersion
from fleet.ops import containers, health, views
from fleet.report import views as report_views
from fleet.report.untrusted import visible
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import Runner
from fleet.ssh.base import CommandResult
from fleet.ssh.paramiko_client import FOLLOW_STOPPED, _LineBuffer
from tests import fakes
from tests.test_report import _SGR as SGR
from tests.test_report import FORGED, HOSTILE, HOSTILE_SHOWN, assert_harmless

REPO = "cauchy"
NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
CMD = (
    "docker run -d --name cauchy_service --restart unless-stopped --network host "
    "{image} python cauchy_services.py --port 8339"
)


# -- recorded host state --------------------------------------------------------------------
def image_doc(tag: str, count: int, ident: str) -> dict[str, Any]:
    return {
        "Id": ident,
        "RepoTags": [f"{REPO}:{tag}"],
        "Size": 212_000_000,
        "Created": f"2026-11-2{count}T10:00:00Z",
        "Config": {
            "Labels": {
                "io.fleet.framework": REPO,
                "io.fleet.tag": tag,
                "io.fleet.commit-count": str(count),
                "org.label-schema.version": f"v0.2-{count}-gabc{count}",
                "org.label-schema.vcs-ref": f"abc{count}",
                "org.label-schema.build-date": f"2026-11-2{count}T10:00:00Z",
                "org.label-schema.docker.cmd": CMD.format(image=f"{REPO}:{tag}"),
            }
        },
    }


def container_doc(
    name: str,
    tag: str,
    count: int,
    image_id: str,
    status: str,
    *,
    restarts: int = 0,
    framework: bool = True,
) -> dict[str, Any]:
    labels = (
        {"io.fleet.framework": REPO, "io.fleet.tag": tag, "io.fleet.commit-count": str(count)}
        if framework
        else {}
    )
    if framework:
        labels["org.label-schema.version"] = f"v0.2-{count}-gabc{count}"
    return {
        "Id": f"{name}-id".ljust(64, "0"),
        "Name": f"/{name}",
        "Image": image_id,
        "RestartCount": restarts,
        "Config": {"Image": f"{REPO}:{tag}" if framework else tag, "Labels": labels},
        "State": {
            "Status": status,
            "StartedAt": "2026-11-28T11:55:00.123456789Z",
            "FinishedAt": "0001-01-01T00:00:00Z" if status == "running" else "2026-11-28T11:54:00Z",
            "ExitCode": 0,
        },
        "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}},
    }


def gather_output(
    container_docs: Sequence[dict[str, Any]],
    image_docs: Sequence[dict[str, Any]],
    history: Sequence[dict[str, Any]] = (),
) -> str:
    lines = ["@@engine", "26.1.5", "@@engine_rc 0", "@@containers"]
    lines += [json.dumps(d) for d in container_docs]
    lines += ["@@images", *(json.dumps(d) for d in image_docs)]
    lines += ["@@lock", "", "@@history", *(json.dumps(h) for h in history), "@@end"]
    return "\n".join(lines) + "\n"


V1, V2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
MIXED = gather_output(
    [
        container_doc("cauchy_service", "0.2.2", 2, V2, "running", restarts=1),
        container_doc("cauchy_service-0.2.1", "0.2.1", 1, V1, "exited"),
    ],
    [image_doc("0.2.2", 2, V2), image_doc("0.2.1", 1, V1)],
    [{"action": "deploy", "outcome": "changed", "from": "0.2.1", "to": "0.2.2"}],
)


class FakeTransport(fakes.FakeTransport):
    """Answers fleet's scripts from recorded output; records every command."""

    def __init__(
        self,
        name: str,
        gather: str,
        *,
        http: str = "200",
        logs: str = "",
        everything: str = "",
        lines: Sequence[str] = (),
        lose_connection: bool = False,
    ) -> None:
        self.name = name
        self.gather = gather
        self.http = http
        self.logs = logs
        self.everything = everything
        self.lines = lines
        self.lose_connection = lose_connection
        super().__init__(name)

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        out = ""
        if argv[:3] == ["sh", "-c", containers.SCRIPT]:
            out = self.gather
        elif argv[:3] == ["sh", "-c", health.HEALTH_SCRIPT]:
            out = f"state running\nhttp {self.http}\n"
        elif argv[:3] == ["sh", "-c", views.ALL_CONTAINERS_SCRIPT]:
            out = self.everything
        elif argv[:3] == ["sh", "-c", views.LOGS_SCRIPT]:
            out = self.logs
        return CommandResult(" ".join(argv), 0, out, "", 0.0)

    def follow(
        self, argv: Sequence[str], on_line: Callable[[str], None], stop: threading.Event
    ) -> int:
        self.commands.append(list(argv))
        for line in self.lines:
            on_line(line)
        if self.lose_connection:
            raise UnreachableError(self.name, "connection lost while running 'docker logs'")
        stop.wait(10)
        return FOLLOW_STOPPED


def run_task(task: Any, transports: dict[str, FakeTransport]) -> FleetResult:
    hosts = [Host(name, FrozenDict()) for name in transports]
    with Runner(lambda host: transports[host.name]) as runner:
        return runner.run("view", hosts, task)


def render(renderable: Any, width: int = 120) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, highlight=False, soft_wrap=False).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


# -- ps -------------------------------------------------------------------------------------
def test_ps_lists_framework_containers_with_health_from_the_images_port() -> None:
    lab1 = FakeTransport("lab1", MIXED)
    result = run_task(views.ps_task(views.ViewOptions(REPO)), {"lab1": lab1})
    rows = result.results[0].details["containers"]
    assert [(r["name"], r["tag"], r["state"], r["restarts"]) for r in rows] == [
        ("cauchy_service", "0.2.2", "running", 1),
        ("cauchy_service-0.2.1", "0.2.1", "exited", 0),
    ]
    assert rows[0]["health"] == "healthy" and rows[0]["health_detail"] == "GET /health -> 200"
    assert rows[0]["restart_policy"] == "unless-stopped"
    assert rows[1]["health"] == ""  # a stopped container is not probed
    probe = next(c for c in lab1.commands if c[2] == health.HEALTH_SCRIPT)
    # The URL comes from the image's run command; no container is named: its state was
    # read in the same command, so the probe does not inspect it again.
    assert probe[4:] == ["http://127.0.0.1:8339/health", ""]


def test_ps_all_adds_the_other_containers_once() -> None:
    other = container_doc("registry", "registry:2", 0, "sha256:" + "9" * 64, "running")
    other["Config"]["Labels"] = {}
    framework = json.loads(MIXED.split("@@containers\n")[1].splitlines()[0])
    everything = gather_output([framework, {**other}], [])
    lab1 = FakeTransport("lab1", MIXED, everything=everything)
    options = views.ViewOptions(REPO, all_containers=True, probe_health=False)
    rows = run_task(views.ps_task(options), {"lab1": lab1}).results[0].details["containers"]
    assert [(r["name"], r["framework"]) for r in rows] == [
        ("cauchy_service", True),
        ("cauchy_service-0.2.1", True),
        ("registry", False),
    ]


def test_ps_engine_down_is_a_failed_host() -> None:
    down = "@@engine\nCannot connect to the Docker daemon\n@@engine_rc 1\n@@end\n"
    result = run_task(views.ps_task(views.ViewOptions(REPO)), {"lab1": FakeTransport("lab1", down)})
    assert result.results[0].outcome is Outcome.FAILED
    assert "Docker engine not usable" in (result.results[0].reason or "")


def test_ps_table_at_fixed_width() -> None:
    lab1 = FakeTransport("lab1", MIXED)
    failing = FakeTransport("gpu02", MIXED, http="503")
    result = run_task(views.ps_task(views.ViewOptions(REPO)), {"lab1": lab1, "gpu02": failing})
    result = FleetResult.of(
        "ps",
        [
            *result.results,
            HostResult("gpu03", Outcome.UNREACHABLE, "cannot connect to 10.0.0.3:22"),
            HostResult("gpu04", Outcome.OK, details={"containers": []}),
        ],
    )
    assert render(report_views.ps_table(result, now=NOW)).splitlines() == [
        "host   name                  image         version       state        health"
        "                up since          restarts",
        "lab1   cauchy_service        cauchy:0.2.2  v0.2-2-gabc2  running      healthy"
        "               11-28 11:55 (5m)         1",
        "       cauchy_service-0.2.1  cauchy:0.2.1  v0.2-1-gabc1  exited (0)   -"
        "                     -                        0",
        "gpu02  cauchy_service        cauchy:0.2.2  v0.2-2-gabc2  running      unhealthy (http 503)"
        "  11-28 11:55 (5m)         1",
        "       cauchy_service-0.2.1  cauchy:0.2.1  v0.2-1-gabc1  exited (0)   -"
        "                     -                        0",
        "gpu03                                                    unreachable",
        "gpu04                                                    none",
    ]
    problems = render(report_views.host_problems(result))
    assert problems == "gpu03 unreachable: cannot connect to 10.0.0.3:22"


def test_ps_json_is_the_fleet_document_with_containers() -> None:
    result = run_task(
        views.ps_task(views.ViewOptions(REPO)), {"lab1": FakeTransport("lab1", MIXED)}
    )
    document = json.loads(json.dumps(result.to_json()))
    row = document["hosts"]["lab1"]["details"]["containers"][0]
    assert document["schema"] == 1 and document["command"] == "view"
    assert set(row) >= {
        "name",
        "image",
        "tag",
        "version",
        "state",
        "health",
        "started_at",
        "restarts",
        "framework",
    }
    assert row["started_at"] == "2026-11-28T11:55:00.123456789Z"


def test_since_and_age() -> None:
    assert report_views.since("2026-11-28T09:00:00.5Z", NOW) == "11-28 09:00 (3h)"
    assert report_views.since("2025-12-31T23:00:00Z", NOW) == "2025-12-31 (331d)"
    assert report_views.since("0001-01-01T00:00:00Z", NOW) == "-"
    assert [report_views.age(s) for s in (5, 61, 7200, 200000)] == ["5s", "1m", "2h", "2d"]


# -- images --on ----------------------------------------------------------------------------
def test_images_on_marks_the_running_image_and_the_rollback_target() -> None:
    result = run_task(
        views.images_task(views.ViewOptions(REPO)), {"lab1": FakeTransport("lab1", MIXED)}
    )
    details = result.results[0].details
    assert details["running"] == ["0.2.2"] and details["rollback_target"] == "0.2.1"
    assert [(i["tag"], i["running"], i["rollback_target"]) for i in details["images"]] == [
        ("0.2.2", True, False),
        ("0.2.1", False, True),
    ]
    assert details["images"][1]["containers"] == [
        {"name": "cauchy_service-0.2.1", "state": "exited"}
    ]
    text = render(report_views.images_on_table(result))
    assert text.splitlines() == [
        "on the hosts:",
        "host  tag    image id          size  built             commit  runs             containers",
        "lab1  0.2.2  222222222222  202.2MiB  2026-11-22 10:00  abc2    running          cauchy_service (running)",
        "      0.2.1  111111111111  202.2MiB  2026-11-21 10:00  abc1    rollback target  cauchy_service-0.2.1 (exited)",
    ]


# -- logs -----------------------------------------------------------------------------------
def test_log_options_are_checked_before_any_host() -> None:
    views.LogOptions(tail="100", since="1h30m")
    views.LogOptions(since="2026-11-28T10:00:00Z")
    views.LogOptions(since="1732780000")
    with pytest.raises(UsageError, match="--tail"):
        views.LogOptions(tail="-5")
    with pytest.raises(UsageError, match="--since"):
        views.LogOptions(since="yesterday; rm -rf /")


def test_logs_argv_names_the_container_by_id() -> None:
    state = containers.parse(MIXED)
    container = views.log_container(state)
    assert container is not None and container.name == "cauchy_service"
    argv = views.logs_argv(
        container, views.LogOptions(tail="5", since="10m", timestamps=True, follow=True)
    )
    assert argv == [
        "docker",
        "logs",
        "--tail",
        "5",
        "--follow",
        "--since",
        "10m",
        "--timestamps",
        container.id,
    ]


def test_log_container_without_a_running_one_is_the_last_started() -> None:
    older = container_doc("cauchy_service-0.2.1", "0.2.1", 1, V1, "exited")
    newer = container_doc("cauchy_service", "0.2.2", 2, V2, "exited")
    newer["State"]["StartedAt"] = "2026-11-28T11:59:00Z"
    state = containers.parse(gather_output([older, newer], []))
    picked = views.log_container(state)
    assert picked is not None and picked.name == "cauchy_service"
    assert views.log_container(containers.parse(gather_output([], []))) is None


def test_logs_task_returns_the_log_and_skips_hosts_without_the_framework() -> None:
    lab1 = FakeTransport("lab1", MIXED, logs="one\ntwo\n")
    empty = FakeTransport("lab2", gather_output([], []))
    result = run_task(
        views.logs_task(views.ViewOptions(REPO), views.LogOptions(tail="2")),
        {"lab1": lab1, "lab2": empty},
    )
    assert result.results[0].stdout == "one\ntwo\n"
    assert result.results[0].details["container"] == "cauchy_service"
    assert result.results[1].outcome is Outcome.SKIPPED
    assert lab1.commands[-1][:4] == ["sh", "-c", views.LOGS_SCRIPT, "fleet-logs"]


@pytest.mark.hostile
def test_log_printer_prefixes_aligned_and_shows_control_characters_piped_or_not() -> None:
    plain = io.StringIO()
    printer = report_views.LogPrinter(["lab1", "gpu-long"], Console(file=plain, width=20))
    printer.line("lab1", "a line that is much longer than the console is wide")
    printer.line("gpu-long", "x\x1b[2Jy")
    # Piped too: a log saved to a file or grepped is read on a terminal later (--json
    # carries the exact line).
    assert plain.getvalue().splitlines() == [
        "lab1     | a line that is much longer than the console is wide",
        "gpu-long | x\\x1b[2Jy",
    ]
    terminal = io.StringIO()
    printer = report_views.LogPrinter(
        ["lab1"], Console(file=terminal, width=80, force_terminal=True, color_system="standard")
    )
    printer.line("lab1", "x\x1b[2Jy\x07")
    output = terminal.getvalue()
    assert "x\\x1b[2Jy\\x07" in output and "\x1b[2J" not in output and "\x07" not in output
    assert "\x1b[36m" in output  # the host's colour


def test_follow_merges_hosts_reports_the_one_that_goes_away_and_stops_on_request() -> None:
    lab1 = FakeTransport("lab1", MIXED, lines=["l1 a", "l1 b"])
    lab2 = FakeTransport("lab2", MIXED, lines=["l2 a"], lose_connection=True)
    empty = FakeTransport("lab3", gather_output([], []))
    transports = {"lab1": lab1, "lab2": lab2, "lab3": empty}
    hosts = [Host(name, FrozenDict()) for name in transports]
    seen: list[tuple[str, str]] = []
    ended: list[HostResult] = []
    runner = Runner(lambda host: transports[host.name], forks=1)

    def on_end(row: HostResult) -> None:
        ended.append(row)
        if row.host == "lab2":  # the others keep streaming until stopped
            threading.Timer(0.3, runner.stopping.set).start()

    started = time.monotonic()
    result = views.follow_logs(
        runner,
        hosts,
        views.ViewOptions(REPO),
        views.LogOptions(tail="0"),
        lambda host, line: seen.append((host, line)),
        on_end,
    )
    assert time.monotonic() - started < 30  # a hang guard: the stop must end every stream
    assert sorted(seen) == [("lab1", "l1 a"), ("lab1", "l1 b"), ("lab2", "l2 a")]
    assert [(r.host, r.outcome) for r in ended] == [
        ("lab3", Outcome.SKIPPED),
        ("lab2", Outcome.UNREACHABLE),
    ]
    assert {r.host: r.outcome for r in result.results} == {
        "lab1": Outcome.OK,
        "lab2": Outcome.UNREACHABLE,
        "lab3": Outcome.SKIPPED,
    }
    assert result.exit_code == 3
    assert "--follow" in lab1.commands[-1]
    # forks=1 did not keep the second stream waiting behind the first.
    assert runner.forks >= 2
    ending = render(report_views.log_end(ended[1], following=["lab1"]))
    assert ending == (
        "lab2: unreachable: connection lost while running 'docker logs'; still following lab1"
    )


def test_line_buffer_splits_lines_across_chunks_and_cuts_endless_ones() -> None:
    got: list[str] = []
    buffer = _LineBuffer(got.append)
    buffer.feed(b"one\ntw")
    buffer.feed(b"o\r\nthr")
    assert got == ["one", "two"]
    buffer.flush()
    assert got == ["one", "two", "thr"]
    buffer.feed(b"x" * (1 << 17))
    assert [len(line) for line in got[3:]] == [1 << 16, 1 << 16]


# -- shell ----------------------------------------------------------------------------------
def test_shell_runs_in_the_running_container_with_a_tty_only_on_a_terminal() -> None:
    state = containers.parse(MIXED)
    container = views.shell_container("lab1", state, REPO)
    assert views.shell_argv(container, ["cat", "/etc/hostname"], tty=False) == [
        "docker",
        "exec",
        "-i",
        container.id,
        "cat",
        "/etc/hostname",
    ]
    assert views.shell_argv(container, [], tty=True)[:4] == ["docker", "exec", "-it", container.id]
    assert views.shell_argv(container, [], tty=True)[4:] == list(views.DEFAULT_SHELL)


def test_shell_without_a_running_container_names_the_fix() -> None:
    stopped = containers.parse(
        gather_output([container_doc("cauchy_service", "0.2.2", 2, V2, "exited")], [])
    )
    with pytest.raises(HostError) as caught:
        views.shell_container("lab1", stopped, REPO)
    assert "cauchy_service (exited)" in str(caught.value)
    assert "fleet deploy lab1" in str(caught.value)


# -- the version picker ---------------------------------------------------------------------
def version(tag: str, count: int, *, tagged: bool = True, dirty: bool = False) -> ImageVersion:
    return ImageVersion(
        repository=REPO,
        tag=tag,
        image_id=f"sha256:{count}",
        created="",
        build_date=f"2026-11-2{count}T10:00:00Z",
        commit=f"abc{count}" * 5,
        short_commit=f"abc{count}",
        branch="main",
        dirty=dirty,
        commit_count=count,
        version="",
        size=0,
        tagged=tagged,
        docker_cmd="",
    )


def test_deploy_menu_newest_first_preselected_with_the_hosts_running_each() -> None:
    states = {"lab1": containers.parse(MIXED), "lab2": None}
    rows = views.deploy_menu(
        [version("0.2.3", 3, dirty=True), version("0.2.3", 3, tagged=False), version("0.2.2", 2)],
        states,
    )
    assert rows == [
        views.MenuRow(
            "1", "0.2.3", "0.2.3", "abc3", "2026-11-23 10:00", (), "newest, dirty tree", True
        ),
        views.MenuRow("2", "0.2.2", "0.2.2", "abc2", "2026-11-22 10:00", ("lab1",), "", False),
    ]
    assert render(report_views.version_menu(rows, "built versions"), 80).splitlines() == [
        "built versions",
        "      version  commit  built             runs on  note",
        "> 1)  0.2.3    abc3    2026-11-23 10:00  -        newest, dirty tree",
        "  2)  0.2.2    abc2    2026-11-22 10:00  lab1",
    ]


def test_rollback_menu_offers_each_hosts_previous_first_then_the_versions_there() -> None:
    only_v2 = gather_output(
        [container_doc("cauchy_service", "0.2.2", 2, V2, "running")], [image_doc("0.2.2", 2, V2)]
    )
    rows = views.rollback_menu(
        {"lab1": containers.parse(MIXED), "lab2": containers.parse(only_v2), "lab3": None}
    )
    assert [(r.key, r.tag, r.running_on, r.note, r.default) for r in rows] == [
        ("1", None, (), "each host's own: lab1 -> 0.2.1, lab2 -> none", True),
        ("2", "0.2.2", ("lab1", "lab2"), "", False),
        ("3", "0.2.1", (), "not on lab2", False),
    ]


def test_choose_and_prompt() -> None:
    rows = views.deploy_menu([version("0.2.3", 3), version("0.2.2", 2)], {})
    assert views.choose(rows, "\n") is rows[0]
    assert views.choose(rows, " 2 ") is rows[1]
    assert views.choose(rows, "0.2.2") is rows[1]
    assert views.choose(rows, "7") is None
    answers = iter(["nope\n", "2\n"])
    written: list[str] = []
    picked = views.prompt(rows, lambda: next(answers), written.append, question="deploy which")
    assert picked is rows[1]
    assert written[0] == "deploy which [1: 0.2.3]: "
    assert "'nope' is not one of the choices" in written[1]
    with pytest.raises(UsageError, match="end of input"):
        views.prompt(rows, lambda: "", written.append)


# -- hostile hosts and labels ---------------------------------------------------------------
def hostile_host() -> str:
    """A host whose framework container, image and labels carry markup and terminal controls."""
    running = container_doc(f"svc{HOSTILE}", f"0.2.2{HOSTILE}", 2, V2, "running")
    running["Config"]["Labels"]["org.label-schema.version"] = f"main[/]{FORGED}"
    stopped = container_doc("x[/red]", "0.2.1", 1, V1, "exited")
    newer = image_doc(f"0.2.2{HOSTILE}", 2, V2)
    newer["Config"]["Labels"]["org.label-schema.vcs-ref"] = "x[/red]"
    newer["Config"]["Labels"]["org.label-schema.build-date"] = "\x1b[2J"
    older = image_doc("0.2.1", 1, V1)
    history = [{"action": "deploy", "outcome": "changed", "from": "0.2.1", "to": HOSTILE}]
    return gather_output([running, stopped], [newer, older], history)


@pytest.mark.hostile
def test_ps_images_on_and_problems_show_what_hosts_said_as_text() -> None:
    transports = {
        HOSTILE: FakeTransport(HOSTILE, hostile_host()),
        "main[/]": FakeTransport("main[/]", MIXED, http="[/]"),
    }
    options = views.ViewOptions(REPO, probe_health=True)
    ps = run_task(views.ps_task(options), transports)
    images = run_task(views.images_task(options), transports)
    failed = HostResult("x[/red]", Outcome.FAILED, f"{HOSTILE}\nlab9 ok", fix=HOSTILE)
    ps = FleetResult.of("ps", [*ps.results, failed])
    images = FleetResult.of("images", [*images.results, failed])
    table = assert_harmless(
        report_views.ps_table(ps, now=NOW),
        *HOSTILE_SHOWN,
        "main[/]",
        "main[/]v1\\nlab9   ok",
        width=2000,
    )
    assert f"svc{visible(HOSTILE)}" in table and "x[/red]" in table
    assert not any(line.startswith("lab9") for line in table.splitlines())
    table = assert_harmless(
        report_views.images_on_table(images), *HOSTILE_SHOWN, "x[/red]", width=2000
    )
    assert f"0.2.2{visible(HOSTILE)}" in table and "\\x1b[2J" in table
    problems = assert_harmless(report_views.host_problems(ps), *HOSTILE_SHOWN, "x[/red] failed")
    assert "    lab9 ok" in problems.splitlines()
    # --json carries the exact strings, escaped by JSON: no ESC byte, nothing lost.
    for result in (ps, images):
        document = json.dumps(result.to_json())
        assert "\x1b" not in document and "\\u001b]0;title\\u0007" in document
        assert json.loads(document) == json.loads(json.dumps(result.to_json()))
    rows = ps.to_json()["hosts"][HOSTILE]["details"]["containers"]
    assert rows[0]["name"] == f"svc{HOSTILE}"


@pytest.mark.hostile
def test_logs_and_the_picker_show_hostile_hosts_and_labels_as_text() -> None:
    buffer = io.StringIO()
    printer = report_views.LogPrinter(
        [HOSTILE, "x[/red]"],
        Console(file=buffer, width=400, force_terminal=True, color_system="standard"),
    )
    printer.line(HOSTILE, f"line {HOSTILE}")
    printer.line("x[/red]", FORGED)
    written = buffer.getvalue()
    assert "\x1b" not in SGR.sub("", written)
    lines = SGR.sub("", written).splitlines()
    assert lines[0].startswith(f"{visible(HOSTILE)} | line [bold]b[/bold]")
    assert lines[1] == f"{'x[/red]':<{len(visible(HOSTILE))}} | v1\\nlab9   ok"
    ended = HostResult(HOSTILE, Outcome.UNREACHABLE, f"lost {HOSTILE}\nlab9 ok")
    assert_harmless(report_views.log_end(ended, following=["x[/red]"]), *HOSTILE_SHOWN, "x[/red]")
    assert_harmless(
        report_views.log_end(HostResult("main[/]", Outcome.OK, HOSTILE)), *HOSTILE_SHOWN
    )
    rows = [
        views.MenuRow("1", HOSTILE, HOSTILE, "x[/red]", FORGED, (HOSTILE, "main[/]"), HOSTILE),
        views.MenuRow("2", None, "main[/]", note="[link=http://evil.example]"),
    ]
    menu = assert_harmless(
        report_views.version_menu(rows, "pick"),
        *HOSTILE_SHOWN,
        "x[/red]",
        "v1\\nlab9   ok",
        width=1000,
    )
    assert len(menu.splitlines()) == 4


@pytest.mark.hostile
def test_the_pickers_question_shows_a_hostile_label_as_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        views.MenuRow("1", HOSTILE, HOSTILE, default=True),
        views.MenuRow("2", "0.2.1", "0.2.1"),
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\x1b[2J\n2\n"))
    assert cli_views._ask(rows, "roll back to", "roll back to") is rows[1]
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert f"roll back to [1: {visible(HOSTILE)}]: " in err
    assert "'\\x1b[2J' is not one of the choices" in err

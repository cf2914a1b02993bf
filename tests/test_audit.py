"""fleet audit without a lab: rows from facts recorded on the lab's real hosts, the fan-out
on a fake transport, the table, JSON and CSV, and the command line's exit codes."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleet import cli as fleet_cli
from fleet.errors import UnreachableError, UsageError
from fleet.hosts.model import Host
from fleet.images.labels import ImageVersion
from fleet.images.runspec import RunSpec
from fleet.ops import audit, containers, drift
from fleet.ops.audit import AuditOptions
from fleet.ops.records import HistoryEntry
from fleet.ops.verdict import AuditRow, audit_host
from fleet.report import audit as audit_report
from fleet.report import console
from fleet.results import Outcome
from fleet.runner import Runner
from fleet.ssh.base import CommandResult
from tests import fakes
from tests.conftest import run_cli, run_json
from tests.test_report import assert_harmless

FIXTURES = Path(__file__).parent / "fixtures" / "audit"
REPOSITORY = "fleet-auditdev-fw"
# The lab's own overrides (fleet.lab.inventory_document): no GPU, no memlock=-1.
LAB_VARS = {"fleet_run_overrides": {"runtime": None, "ulimits": {"memlock": None}}}
LAB_HOST = Host("gpu07", LAB_VARS)
NOW = datetime(2026, 11, 28, 5, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True, scope="module")
def audit_command() -> Iterator[None]:
    """Reach 'fleet audit' through fleet.cli even before it is registered there."""
    if "audit" in fleet_cli._COMMAND_MODULES:
        yield
        return
    patch = pytest.MonkeyPatch()
    patch.setattr(fleet_cli, "_COMMAND_MODULES", (*fleet_cli._COMMAND_MODULES, "audit"))
    yield
    patch.undo()


def facts(name: str) -> containers.HostFramework:
    return containers.parse((FIXTURES / f"{name}.txt").read_text())


def controller() -> list[ImageVersion]:
    return [ImageVersion(**v) for v in json.loads((FIXTURES / "controller.json").read_text())]


def version(tag: str) -> ImageVersion:
    return next(v for v in controller() if v.tag == tag)


def row(
    name: str,
    expected: str | None = None,
    versions: Sequence[ImageVersion] | None = None,
    host: Host = LAB_HOST,
) -> AuditRow:
    return audit_host(facts(name), controller() if versions is None else versions, expected, host)


# -- what the script says, parsed ------------------------------------------------------------
def test_the_image_store_and_config_digests_are_read() -> None:
    classic, containerd = facts("classic-v1"), facts("containerd-v2")
    assert (classic.store, containerd.store) == ("classic", "containerd")
    v1 = classic.image_by_tag("9.0.1")
    assert v1 is not None and v1.config_digest == v1.id == version("9.0.1").image_id
    v2 = containerd.image_by_tag("9.0.2")
    assert v2 is not None
    # On the containerd store the ID is a manifest digest; its config is the controller's ID.
    assert v2.id != version("9.0.2").image_id
    assert v2.config_digest == version("9.0.2").image_id
    assert len(v2.layers) == 7 and v2.config["Cmd"][0] == "python"


@pytest.mark.parametrize("name", ["classic-dirty", "containerd-v2"])
def test_the_python3_fast_path_says_what_the_docker_cli_says(name: str) -> None:
    by_cli = (FIXTURES / f"{name}.txt").read_text()
    fast = (FIXTURES / f"{name}-fast.txt").read_text()
    assert fast != by_cli  # recorded one after the other on the same host
    assert containers.parse(fast) == containers.parse(by_cli)


def test_output_of_the_previous_script_still_parses() -> None:
    for name in ("v0-classic-v1", "v0-containerd-v2"):
        old = facts(name)
        assert old.engine_ok and old.store == "" and old.running
        assert all(image.config_digest == "" for image in old.images)
        assert old.images and old.images[0].layers


# -- one host's row ----------------------------------------------------------------------------
def test_a_host_on_v1_deployed_by_fleet_is_ok() -> None:
    found = row("classic-v1")
    assert found.status == "ok" and found.reasons == ()
    framework = found.framework
    assert framework is not None
    assert (framework.tag, framework.short_commit, framework.branch) == ("9.0.1", "8bf0edb", "main")
    assert framework.build_date == "2026-11-28T04:24:52Z" and not framework.dirty
    assert (framework.state, framework.since, framework.restart_count) == (
        "running",
        "2026-11-28T04:26:28Z",
        0,
    )
    assert found.controller_match == "same" and found.config_diff == ()
    assert found.last_deploy is not None and found.last_deploy.to_version == "9.0.1"
    assert (found.engine_version, found.store) == ("20.10.24+dfsg1", "classic")


def test_containerd_host_matches_the_controller_by_config_digest() -> None:
    found = row("containerd-v2")
    assert found.status == "ok"
    assert found.controller_match == "same"
    assert found.controller_image_id == version("9.0.2").image_id
    assert found.other_versions == ("9.0.1",) and found.rollback_to == "9.0.1"


def test_a_containerd_controller_matches_hosts_of_both_stores_by_config_digest() -> None:
    # The controller's own engine names its builds by manifest digest: its versions carry
    # the config digest read from its content store (images.store.named_by_config).
    by_manifest = [
        dataclasses.replace(v, image_id=f"sha256:{'e' * 64}", config_digest=v.image_id)
        for v in controller()
    ]
    for name in ("classic-v1", "containerd-v2"):
        found = row(name, versions=by_manifest)
        assert found.controller_match == "same", name
    unread = [dataclasses.replace(v, config_digest="") for v in by_manifest]
    assert row("classic-v1", versions=unread).controller_match == "labels"


def test_without_the_content_store_the_labels_decide_and_say_so() -> None:
    text = (FIXTURES / "containerd-v2.txt").read_text()
    head, _, tail = text.partition("@@manifests\n")
    no_ctr = head + "@@manifests\n" + tail[tail.index("@@end") :]
    found = audit_host(containers.parse(no_ctr), controller(), None, LAB_HOST)
    assert found.controller_match == "labels" and found.status == "ok"
    assert row("v0-containerd-v2").controller_match == "labels"
    assert row("v0-classic-v1").controller_match == "same"  # the classic ID is the config digest


def test_a_version_the_controller_never_built() -> None:
    found = row("classic-v1", versions=[version("9.0.2"), version("9.0.3")])
    assert found.status == "drift" and found.codes == ("unknown_version",)
    assert found.controller_match == "unknown"


def test_another_build_of_a_known_tag() -> None:
    rebuilt = dataclasses.replace(
        version("9.0.1"), image_id="sha256:" + "1" * 64, build_date="2026-12-01T00:00:00Z"
    )
    found = row("classic-v1", versions=[rebuilt])
    assert found.codes == ("other_build",) and found.controller_match == "different"
    assert "not the controller's build (111111111111)" in found.reason_text()
    untagged = dataclasses.replace(version("9.0.1"), tagged=False)
    found = row("classic-v1", versions=[untagged, rebuilt])
    assert found.controller_match == "superseded" and found.codes == ("other_build",)


def test_expect_marks_other_versions() -> None:
    assert row("classic-v1", "9.0.1").status == "ok"
    found = row("classic-v1", "9.0.2")
    assert found.codes == ("version",) and found.reasons[0].message == "runs 9.0.1, expected 9.0.2"
    assert found.expected == "9.0.2"


def test_a_dirty_build_drifts_even_when_expected() -> None:
    found = row("classic-dirty", "9.0.3")
    assert found.codes == ("dirty",)
    assert found.framework is not None and found.framework.dirty
    assert found.controller_match == "same"


def test_a_hand_started_container_with_other_flags() -> None:
    found = row("classic-handstarted")
    assert found.codes == ("config",)
    framework = found.framework
    assert framework is not None and framework.container == "cauchy_manual"
    differences = {d.field: (d.expected, d.actual) for d in found.config_diff}
    assert differences == {
        "name": ("cauchy_service", "cauchy_manual"),
        "restart": ("unless-stopped", "always"),
        "hostname": ("colorai", "lab1"),
        "volumes": (["/data:/data"], []),
        "shm_size": (2 << 30, 1 << 30),
        "ulimits": ({"stack": (67108864, 67108864)}, {}),
        "env": ({}, {"DEBUG": "1"}),
    }
    assert "restart always (expected unless-stopped)" in found.reason_text()
    # The stopped container fleet started is listed, not compared.
    assert ("cauchy_service", "9.0.1", "exited") in found.containers


def test_the_hosts_overrides_are_what_it_is_compared_with() -> None:
    # Without the lab's overrides the label asks for the nvidia runtime and memlock=-1.
    found = row("classic-v1", host=Host("gpu07", {}))
    differences = {d.field: (d.expected, d.actual) for d in found.config_diff}
    assert differences == {
        "runtime": ("nvidia", "runc"),
        "ulimits": (
            {"memlock": (-1, -1), "stack": (67108864, 67108864)},
            {"stack": (67108864, 67108864)},
        ),
    }
    overrides = {"fleet_run_overrides": {**LAB_VARS["fleet_run_overrides"], "env": {"DEBUG": "1"}}}
    found = row("classic-handstarted", host=Host("gpu07", overrides))
    assert "env" not in {d.field for d in found.config_diff}


def test_a_refused_run_command_is_reported_not_compared() -> None:
    state = facts("classic-v1")
    image = state.images[0]
    hostile = dataclasses.replace(
        image,
        labels={
            **image.labels,
            "org.label-schema.docker.cmd": image.docker_cmd.replace("-d ", "-d --privileged ", 1),
        },
    )
    found = audit_host(dataclasses.replace(state, images=(hostile,)), controller(), None, LAB_HOST)
    assert "run_command" in found.codes
    assert "--privileged" in found.reason_text()


def test_a_stopped_framework_container() -> None:
    found = row("containerd-stopped", "9.0.2")
    assert found.codes == ("not_running",)
    assert found.tag is None
    framework = found.framework
    assert framework is not None and (framework.container, framework.state) == (
        "cauchy_service",
        "exited",
    )
    assert found.reasons[0].message == (
        "cauchy_service (9.0.2) is exited (exit code 0) since 2026-11-28T04:29:09Z"
    )


def test_only_versions_kept_for_rollback() -> None:
    state = facts("containerd-v2")
    kept_only = dataclasses.replace(
        state, containers=tuple(c for c in state.containers if c.name != "cauchy_service")
    )
    found = audit_host(kept_only, controller(), None, LAB_HOST)
    assert found.codes == ("not_running",) and found.framework is None
    assert "kept: cauchy_service-9.0.1 (exited)" in found.reason_text()


def test_no_framework_and_no_engine() -> None:
    found = row("containerd-none")
    assert found.codes == ("no_framework",) and found.framework is None
    assert found.last_deploy is not None  # the host's history is still told
    for name in ("engine-down", "nodocker"):
        found = row(name, "9.0.2")
        assert found.codes == ("no_engine",), name
    assert "Cannot connect to the Docker daemon" in row("engine-down").reason_text()
    assert "docker: not found" in row("nodocker").reason_text()


# -- comparing a container with a run command ----------------------------------------------------
def _container(
    config: dict[str, object], host_config: dict[str, object]
) -> containers.FrameworkContainer:
    return containers.FrameworkContainer(
        id="c1",
        name="svc",
        image="fw:1",
        image_id="sha256:" + "a" * 64,
        labels={},
        status="running",
        health="",
        started_at="",
        finished_at="",
        restart_count=0,
        exit_code=0,
        config={"Image": "fw:1", "Cmd": ["serve"], **config},
        host_config={
            "Runtime": "runc",
            "ShmSize": 64 << 20,
            "NetworkMode": "bridge",
            **host_config,
        },
    )


IMAGE = containers.FrameworkImage(
    id="sha256:" + "a" * 64,
    tags=("fw:1",),
    labels={},
    size=0,
    created="",
    config={"Cmd": ["serve"], "Env": ["PATH=/bin", "A=1"], "Volumes": {"/cache": {}}},
)


def test_docker_defaults_are_no_difference() -> None:
    found = drift.config_differences(_container({}, {}), IMAGE, RunSpec(name="svc"), "fw:1")
    assert found == []
    # Run by its ID, with the image's own variable repeated: still the same.
    same = _container({"Image": IMAGE.id, "Env": ["PATH=/bin", "A=1"]}, {})
    assert drift.config_differences(same, IMAGE, RunSpec(), "fw:1") == []


def test_ports_gpus_devices_capabilities_and_modes() -> None:
    spec = RunSpec(
        publish=("127.0.0.1:8080:80/udp", "9000-9001:9000-9001"),
        gpus="all",
        devices=("/dev/fuse",),
        cap_add=("SYS_PTRACE",),
        security_opt=("seccomp=unconfined",),
        ipc="host",
        restart="on-failure:3",
        volumes=("/data:/data:ro", "/scratch"),
    )
    matching = _container(
        {"Volumes": {"/scratch": {}, "/cache": {}}},
        {
            "PortBindings": {
                "80/udp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                "9000/tcp": [{"HostIp": "", "HostPort": "9000"}],
                "9001/tcp": [{"HostIp": "", "HostPort": "9001"}],
            },
            "DeviceRequests": [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}],
            "Devices": [
                {
                    "PathOnHost": "/dev/fuse",
                    "PathInContainer": "/dev/fuse",
                    "CgroupPermissions": "rwm",
                }
            ],
            "CapAdd": ["CAP_SYS_PTRACE"],
            "SecurityOpt": ["seccomp=unconfined"],
            "IpcMode": "host",
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
            "Binds": ["/data:/data:ro"],
        },
    )
    assert drift.config_differences(matching, IMAGE, spec, "fw:1") == []
    plain = _container({}, {"Privileged": True, "PidMode": "host"})
    fields = [d.field for d in drift.config_differences(plain, IMAGE, spec, "fw:1")]
    assert fields == [
        "restart",
        "volumes",
        "gpus",
        "publish",
        "privileged",
        "cap_add",
        "devices",
        "security_opt",
        "pid",
        "ipc",
    ]


def test_shm_sizes_are_read_as_docker_reads_them() -> None:
    assert drift.ram_bytes("2g") == 2 << 30
    assert drift.ram_bytes("512m") == 512 << 20
    assert drift.ram_bytes("1.5GB") == 3 << 29
    assert drift.ram_bytes("64") == 64


# -- the expected version ------------------------------------------------------------------------
def test_expect_names_a_tag_an_image_a_git_version_or_latest() -> None:
    versions = controller()
    assert audit.resolve_expected(None, versions) is None
    assert audit.resolve_expected("latest", versions) == "9.0.3"  # what 'fleet deploy' picks
    assert audit.resolve_expected("9.0.2", versions) == "9.0.2"
    assert audit.resolve_expected(f"{REPOSITORY}:9.0.1", versions) == "9.0.1"
    assert audit.resolve_expected("c6bb82d", versions) == "9.0.2"
    with pytest.raises(UsageError, match="never built that version"):
        audit.resolve_expected("9.9.9", versions)
    with pytest.raises(UsageError, match="no build"):
        audit.resolve_expected("latest", [])


# -- the fan-out ------------------------------------------------------------------------------------
class FakeTransport(fakes.FakeTransport):
    """Answers the audit script with a recorded output (an audit never streams)."""

    def __init__(self, host: str, output: str) -> None:
        super().__init__(host)
        self.output = output

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        return CommandResult(" ".join(argv), 0, self.output, "", 0.01)


LAB = {
    "lab1": "classic-v1",
    "lab2": "containerd-v2",
    "lab3": "classic-dirty",
    "lab4": "classic-handstarted",
    "lab5": "containerd-none",
}


def fake_lab(names: dict[str, str]) -> tuple[Runner, dict[str, FakeTransport], list[Host]]:
    transports: dict[str, FakeTransport] = {}

    def connect(host: Host) -> FakeTransport:
        if names[host.name] == "down":
            raise UnreachableError(host.name, "cannot connect to 127.0.0.1:9: Connection refused")
        transports[host.name] = FakeTransport(
            host.name, (FIXTURES / f"{names[host.name]}.txt").read_text()
        )
        return transports[host.name]

    hosts = [Host(name, LAB_VARS) for name in names]
    return Runner(connect, forks=4), transports, hosts  # type: ignore[arg-type]


def options(expected: str | None = None, history: int = 1) -> AuditOptions:
    return AuditOptions(REPOSITORY, tuple(controller()), expected, history)


def test_one_read_only_round_trip_per_host() -> None:
    runner, transports, hosts = fake_lab(LAB)
    report = audit.audit(runner, hosts, options(history=3))
    assert [r.host for r in report.rows] == list(LAB)
    for transport in transports.values():
        assert transport.commands == [
            [
                "sh",
                "-c",
                containers.SCRIPT,
                "fleet-framework",
                REPOSITORY,
                "3",
                containers.FAST_GATHER,
            ]
        ]
    # Nothing the host runs writes: no redirection into a file, no file opened to write.
    redirections = ("2>/dev/null", ">/dev/null", "2>&1")
    script = containers.SCRIPT
    for harmless in redirections:
        script = script.replace(harmless, "")
    assert ">" not in script
    assert 'open(path, "rb")' in containers.FAST_GATHER
    assert not any(mode in containers.FAST_GATHER for mode in ('"w', '"a', "'w", "'a"))
    assert [r.status for r in report.rows] == ["ok", "ok", "drift", "drift", "drift"]
    assert report.exit_code == 2


def test_exit_codes_and_the_json_document() -> None:
    runner, _, hosts = fake_lab({"lab1": "classic-v1", "lab2": "containerd-v2"})
    assert audit.audit(runner, hosts, options()).exit_code == 0
    runner, _, hosts = fake_lab({"lab1": "classic-v1", "lab2": "containerd-v2"})
    assert audit.audit(runner, hosts, options("9.0.2")).exit_code == 2
    runner, _, hosts = fake_lab({**LAB, "gone": "down"})
    report = audit.audit(runner, hosts, options("9.0.1"))
    assert report.exit_code == 3
    document = json.loads(json.dumps(report.to_json()))
    assert document["command"] == "audit" and document["exit_code"] == 3
    assert document["audit"] == {
        "repository": REPOSITORY,
        "expected": "9.0.1",
        "controller_versions": ["9.0.3", "9.0.2", "9.0.1"],
        "versions": {"9.0.1": 2, "9.0.2": 1, "9.0.3": 1, "none": 1},
        "ok": ["lab1"],
        "drifted": ["lab2", "lab3", "lab4", "lab5"],
        "unreachable": ["gone"],
    }
    hosts_json = document["hosts"]
    assert hosts_json["lab1"]["outcome"] == "ok" and hosts_json["lab2"]["outcome"] == "failed"
    gone = hosts_json["gone"]
    assert gone["outcome"] == "unreachable"
    assert gone["details"]["status"] == "unreachable"
    assert gone["details"]["reasons"][0]["code"] == "unreachable"
    lab4 = hosts_json["lab4"]["details"]
    assert [r["code"] for r in lab4["reasons"]] == ["config"]
    assert {"field": "restart", "expected": "unless-stopped", "actual": "always"} in lab4[
        "config_diff"
    ]
    lab2 = hosts_json["lab2"]["details"]
    assert set(lab2) == {
        "host",
        "status",
        "reasons",
        "engine",
        "framework",
        "controller",
        "config_diff",
        "expected",
        "containers",
        "other_versions",
        "rollback_to",
        "lock",
        "history",
        "last_deploy",
        "gpu_busy",
    }
    assert lab2["gpu_busy"] == []
    assert lab2["framework"]["config_digest"] == version("9.0.2").image_id
    assert lab2["controller"] == {"match": "same", "image_id": version("9.0.2").image_id}


def test_a_host_whose_audit_broke_is_an_error_row() -> None:
    def connect(host: Host) -> FakeTransport:
        transport = FakeTransport(host.name, "")

        def broken(argv: Sequence[str], **_: object) -> CommandResult:
            raise ValueError("boom")

        transport.run = broken  # type: ignore[method-assign,assignment]
        return transport

    report = audit.audit(Runner(connect), [Host("lab1")], options())  # type: ignore[arg-type]
    assert report.rows[0].status == "error" and "boom" in report.rows[0].reason_text()
    assert report.result.results[0].outcome is Outcome.FAILED and report.exit_code == 2


# -- how it is shown ----------------------------------------------------------------------------
def render(renderable: object, width: int = 200) -> str:
    buffer = io.StringIO()
    console(buffer, width=width).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def test_the_table_and_the_summary_under_it() -> None:
    runner, _, hosts = fake_lab({**LAB, "gone": "down"})
    report = audit.audit(runner, hosts, options("9.0.1"))
    text = render(audit_report.audit_view(report, now=NOW))
    lines = text.splitlines()
    assert lines[0].split() == [
        "host",
        "version",
        "commit",
        "built",
        "state",
        "up",
        "since",
        "restarts",
        "image",
        "controller",
        "other",
        "versions",
        "last",
        "deploy",
        "drift",
    ]
    assert lines[1].split() == [
        "lab1",
        "9.0.1",
        "8bf0edb",
        "main",
        "2026-11-28",
        "running",
        "2026-11-28",
        "04:26",
        "(33m)",
        "0",
        "2b8b2b7711fd",
        "same",
        "none->9.0.1",
        "by",
        "root@vm",
        "2026-11-28",
        "04:26",
        "ok",
    ]
    assert "9.0.3 dirty" in lines[3] and lines[3].endswith("dirty,version")
    assert lines[5].split()[:3] == ["lab5", "-", "not"]
    assert "gone" in lines[6] and "unreachable" in lines[6]
    assert "6 hosts in" in text
    assert "9.0.1 x2 (lab[1,4]), 9.0.2 x1 (lab2), 9.0.3 x1 (lab3), not running x1 (lab5)" in text
    assert f"controller: {REPOSITORY} builds 9.0.3, 9.0.2, 9.0.1; expected 9.0.1" in text
    assert (
        "drifted: 4 of 6: lab2 (version), lab3 (dirty,version), lab4 (config), lab5 (no_framework)"
    ) in text
    assert "unreachable: 1: gone" in text
    assert (
        "  config: the container differs from its image's run command: name cauchy_manual" in text
    )
    assert "  unreachable: cannot connect to 127.0.0.1:9: Connection refused" in text


def test_history_view() -> None:
    runner, _, hosts = fake_lab({"lab2": "containerd-v2", "gone": "down"})
    report = audit.audit(runner, hosts, options(history=5))
    text = render(audit_report.history_view(report.rows))
    assert text.splitlines() == [
        "history",
        "lab2",
        "  2026-11-28T04:27:00Z deploy none -> 9.0.1 changed by root@vm (1.4s)",
        "  2026-11-28T04:27:13Z deploy 9.0.1 -> 9.0.2 changed by root@vm (1.7s)",
        "gone",
        "  (unreachable)",
    ]


def test_csv_rows_keep_host_data_as_data() -> None:
    found = row("classic-v1")
    record = audit_report.csv_record(found)
    assert list(record) == list(audit_report.CSV_COLUMNS)
    assert record["tag"] == "9.0.1" and record["controller_match"] == "same"
    hostile = dataclasses.replace(
        found, history=(HistoryEntry({"by": "=HYPERLINK(1)", "to": "-1"}),)
    )
    record = audit_report.csv_record(hostile)
    assert record["last_deploy_by"] == "'=HYPERLINK(1)" and record["last_deploy_to"] == "'-1"


# -- the command line ---------------------------------------------------------------------------------
@pytest.fixture
def fake_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """'fleet audit' against the fake lab: the controller's builds from the fixture."""
    from fleet.cli import common

    names = {"lab1": "classic-v1", "lab2": "containerd-v2", "gone": "down"}
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        json.dumps({"all": {"hosts": {name: {} for name in names}, "vars": LAB_VARS}})
    )
    monkeypatch.setattr(audit, "local_versions", lambda repository: controller())

    def make_runner(args: object, events: object) -> Runner:
        return fake_lab(names)[0]

    monkeypatch.setattr(common, "make_runner", make_runner)
    return inventory


def test_cli_json_csv_table_and_exit_codes(
    fake_cli: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = ["-i", str(fake_cli), "--repository", REPOSITORY, "--retry-file", str(tmp_path / "r")]
    code, document = run_json(capsys, "audit", "lab1:lab2", *base)
    assert code == 0 and document["audit"]["ok"] == ["lab1", "lab2"]
    code, document = run_json(capsys, "audit", "all", *base, "--expect", "latest")
    assert code == 3 and document["audit"]["expected"] == "9.0.3"
    assert (tmp_path / "r").read_text() == "lab1\nlab2\ngone\n"
    code, out, _ = run_cli(capsys, "audit", "lab1:lab2", *base, "--expect", "9.0.1", "--csv")
    assert code == 2
    records = list(csv.DictReader(io.StringIO(out)))
    assert [(r["host"], r["status"], r["reasons"]) for r in records] == [
        ("lab1", "ok", ""),
        ("lab2", "drift", "version"),
    ]
    code, out, _ = run_cli(capsys, "audit", "lab2", *base, "--history")
    assert code == 0 and "drifted: none" in out and "history" in out
    assert "deploy 9.0.1 -> 9.0.2 changed by root@vm" in out


def test_cli_refuses_bad_options(fake_cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["-i", str(fake_cli), "--repository", REPOSITORY]
    code, _, err = run_cli(capsys, "audit", *base, "--json", "--csv")
    assert code == 5 and "--json and --csv" in err
    code, _, err = run_cli(capsys, "audit", *base, "--expect", "7.7.7")
    assert code == 5 and "never built that version" in err and "9.0.3, 9.0.2, 9.0.1" in err


# -- hostile hosts and labels -------------------------------------------------------------------
def hostile_output() -> str:
    """classic-v1 as a hostile host would tell it: markup and terminal controls in its labels
    (branch, tag, commit), its history line's ``by`` and its deploy lock."""
    output = (FIXTURES / "classic-v1.txt").read_text()
    for old, new in (
        ('"org.label-schema.vcs-branch":"main"', f'"org.label-schema.vcs-branch":"main[/]{ESC}"'),
        ('"io.fleet.tag":"9.0.1"', f'"io.fleet.tag":"9.0.1[bold]{ESC}"'),
        ('"org.label-schema.vcs-ref":"8bf0edb"', '"org.label-schema.vcs-ref":"x[/red]"'),
        ('"by":"root@vm"', f'"by":"x[/red]{ESC}{NEWLINE}"'),
        ("@@lock\n", f'@@lock\n{{"holder":"[link=http://evil.example]{ESC}","what":"[/]"}}\n'),
    ):
        assert old in output
        output = output.replace(old, new)
    return output


# JSON-escaped inside the recorded docker output: an OSC title, a CSI clear and cursor-up.
ESC = "\\u001b]0;title\\u0007\\u001b[2J\\u001b[1A"
NEWLINE = "\\nlab9 ok"
ESC_SHOWN = "\\x1b]0;title\\x07\\x1b[2J\\x1b[1A"


def hostile_report(history: int = 1) -> audit.AuditReport:
    names = {f"x[/red]{chr(27)}]0;t{chr(7)}": hostile_output(), "main[/]": hostile_output()}

    def connect(host: Host) -> FakeTransport:
        return FakeTransport(host.name, names[host.name])

    hosts = [Host(name, LAB_VARS) for name in names]
    return audit.audit(Runner(connect, forks=2), hosts, options(history=history))  # type: ignore[arg-type]


@pytest.mark.hostile
def test_hostile_labels_history_lock_and_host_names_are_shown_as_text() -> None:
    report = hostile_report()
    assert report.rows[0].framework is not None
    assert report.rows[0].framework.branch.startswith("main[/]\x1b]0;title")
    assert report.rows[0].lock is not None
    text = assert_harmless(
        audit_report.audit_view(report, now=NOW),
        "x[/red]\\x1b]0;t\\x07",
        f"9.0.1[bold]{ESC_SHOWN}",
        f"x[/red] main[/]{ESC_SHOWN}",
        f"by x[/red]{ESC_SHOWN}\\nlab9 ok",
        f"lock of [link=http://evil.example]{ESC_SHOWN} ([/])",
        f"9.0.1[bold]{ESC_SHOWN} x2",
        "drifted: 2 of 2: x[/red]\\x1b]0;t\\x07, main[/] (run_command)",
        width=1000,
    )
    assert not any(line.startswith("lab9") for line in text.splitlines())
    history = assert_harmless(
        audit_report.history_view(report.rows), f"by x[/red]{ESC_SHOWN}\\nlab9 ok", width=1000
    )
    assert len(history.splitlines()) == 5


@pytest.mark.hostile
def test_cli_table_of_hostile_hosts_is_text_and_json_has_the_exact_strings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleet.cli import common

    inventory = tmp_path / "inv.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"main]": {}}, "vars": LAB_VARS}}))
    monkeypatch.setattr(audit, "local_versions", lambda repository: controller())

    def connect(host: Host) -> FakeTransport:
        return FakeTransport(host.name, hostile_output())

    monkeypatch.setattr(common, "make_runner", lambda args, events: Runner(connect))
    base = ["audit", "-i", str(inventory), "--repository", REPOSITORY, "--retry-file", "/dev/null"]
    code, out, err = run_cli(capsys, *base, "--history")
    assert code == 2, out + err
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert f"lock of [link=http://evil.example]{ESC_SHOWN} ([/])" in out
    assert f"by x[/red]{ESC_SHOWN}\\nlab9 ok (3.8s)" in out
    code, document = run_json(capsys, *base)
    framework = document["hosts"]["main]"]["details"]["framework"]  # type: ignore[index]
    assert framework["branch"] == "main[/]\x1b]0;title\x07\x1b[2J\x1b[1A"
    assert framework["tag"] == "9.0.1[bold]\x1b]0;title\x07\x1b[2J\x1b[1A"
    code, out, err = run_cli(capsys, *base, "--csv")
    assert code == 2, err
    assert "\x1b" not in out and "\x07" not in out
    assert "main[/]\\x1b]0;title\\x07\\x1b[2J\\x1b[1A" in out


def test_a_history_line_is_read_whatever_the_host_holds() -> None:
    entry = HistoryEntry.parse('{"time": "2026-11-28T04:27:13Z", "from": null, "to": 7}')
    assert entry is not None and entry.is_switch
    assert entry.from_version is None and entry.to_version == "7" and entry.by is None
    assert entry.to_json() == {"time": "2026-11-28T04:27:13Z", "from": None, "to": 7}
    assert HistoryEntry.parse("[1]") is None and HistoryEntry.parse("not json") is None
    lock_change = HistoryEntry.parse('{"outcome": "lock", "action": "release"}')
    assert lock_change is not None and not lock_change.is_switch

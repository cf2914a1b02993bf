"""What a deploy refuses before it stops anything: mounts that leave the allowed host paths
once their symlinks are resolved on the host, and containers the inventory does not name.

A fake host (fleet's Transport interface) answers ``readlink`` and ``docker inspect`` and
records every command, so a test can tell that nothing was stopped, renamed or started.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from fleet.errors import HostError
from fleet.hosts.model import Host
from fleet.images.labels import LABEL_DOCKER_CMD, LABEL_TAG
from fleet.images.runspec import RunPolicy, RunSpec
from fleet.ops import deploy, mounts
from fleet.ops.containers import FrameworkContainer, FrameworkImage, HostFramework
from fleet.runner import HostContext, Runner
from fleet.ssh.base import CommandResult
from tests.fakes import FakeTransport

OLD, NEW = "cauchy:0.2.1", "cauchy:0.2.2"
NAMED = {"fleet_run": {"name": "cauchy_service"}}


class GpuHost(FakeTransport):
    """A host where ``resolved`` says what each path is after its symlinks, and ``others``
    are the containers fleet did not start (name -> "ID RUNNING")."""

    def __init__(
        self, resolved: Mapping[str, str] | None = None, others: Mapping[str, str] | None = None
    ) -> None:
        super().__init__("gpu1")
        self.resolved = dict(resolved or {})
        self.others = dict(others or {})

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        command = " ".join(argv)
        if argv[:4] == list(mounts.RESOLVE_ARGV):
            paths = argv[4:]
            out = "".join(self.resolved.get(path, path) + "\0" for path in paths)
            return CommandResult(command, 0, out, "", 0.0)
        if argv[:4] == ["docker", "inspect", "--type", "container"]:
            found = self.others.get(argv[-1])
            return CommandResult(command, 0 if found else 1, found or "", "", 0.0)
        return CommandResult(command, 0, "", "", 0.0)

    def changes(self) -> list[list[str]]:
        """The commands that would have changed the host's containers."""
        verbs = {"stop", "rename", "rm", "run", "start"}
        return [c for c in self.commands if c[:1] == ["docker"] and c[1:2] and c[1] in verbs]


def framework(label: str) -> HostFramework:
    running = FrameworkContainer(
        id="c" * 64,
        name="cauchy_service",
        image=OLD,
        image_id="sha256:" + "1" * 64,
        labels={LABEL_TAG: "0.2.1"},
        status="running",
        health="",
        started_at="",
        finished_at="",
        restart_count=0,
        exit_code=0,
    )
    image = FrameworkImage(
        id="sha256:" + "2" * 64,
        tags=(NEW,),
        labels={LABEL_TAG: "0.2.2", LABEL_DOCKER_CMD: label},
        size=1,
        created="",
    )
    return HostFramework(engine_ok=True, containers=(running,), images=(image,))


def switch(host: GpuHost, variables: Mapping[str, Any], label: str) -> None:
    ctx = HostContext(Host(host.host, variables), Runner(lambda _: host))
    target = deploy.Target(NEW, "0.2.2", "sha256:" + "2" * 64)
    deploy.switch(ctx, framework(label), target, deploy.DeployOptions("cauchy"), "deploy")


@pytest.mark.hostile
def test_a_mount_that_a_planted_symlink_leads_out_is_refused_before_anything_stops() -> None:
    # Below the data root: refused as text, before the host is even asked.
    host = GpuHost(resolved={"/data/r": "/"})
    label = f"docker run -d --name cauchy_service -v /data/r:/host {NEW} python x.py"
    with pytest.raises(HostError) as caught:
        switch(host, NAMED, label)
    assert "--volume /data/r:/host" in caught.value.reason
    assert caught.value.fix is not None and "never a path below one" in caught.value.fix
    assert host.changes() == []
    # The data root itself a link to / on the host: refused once resolved there.
    host = GpuHost(resolved={"/data": "/"})
    label = f"docker run -d --name cauchy_service -v /data:/host {NEW} python x.py"
    with pytest.raises(HostError) as caught:
        switch(host, NAMED, label)
    assert "mounts /data, which is / on the host" in caught.value.reason
    assert caught.value.fix is not None and "fleet_run_allow_paths" in caught.value.fix
    assert host.changes() == []


@pytest.mark.hostile
def test_a_container_the_inventory_does_not_name_is_left_alone() -> None:
    # No fleet_run.name in the inventory: the label's name is used, but fleet does not
    # stop a container of that name that it did not start.
    host = GpuHost(others={"postgres": "d" * 64 + " true"})
    label = f"docker run -d --name postgres -v /data:/data {NEW} python x.py"
    with pytest.raises(HostError) as caught:
        switch(host, {}, label)
    assert "a container named 'postgres' that fleet did not start" in caught.value.reason
    assert caught.value.fix is not None and "fleet_run.name" in caught.value.fix
    assert host.changes() == []
    # With the inventory naming the framework's container, the label is refused earlier.
    host = GpuHost(others={"postgres": "d" * 64 + " true"})
    with pytest.raises(HostError, match="names the container 'postgres'"):
        switch(host, NAMED, label)
    assert host.changes() == []


def test_the_mount_check_comes_before_taking_over_a_hand_started_container() -> None:
    host = GpuHost(others={"cauchy_service": "d" * 64 + " true"})
    # Refused on the mount, so the switch stops right after deciding about the container.
    host.resolved["/data"] = "/etc"
    label = f"docker run -d -v /data:/x {NEW}"
    with pytest.raises(HostError, match="which is /etc on the host"):
        switch(host, NAMED, label)
    assert host.changes() == []


def test_mounts_in_a_symlinked_data_root_are_allowed() -> None:
    policy = RunPolicy.for_host({"fleet_run_allow_paths": ["/scratch"]})
    spec = RunSpec(volumes=("/data:/data", "/scratch:/s:ro", "/data:/d2", "cache:/cache"))
    host = GpuHost(resolved={"/data": "/mnt/disk/data"})
    mounts.check_mounts(host, "gpu1", spec, policy)
    assert host.commands == [[*mounts.RESOLVE_ARGV, "/data", "/scratch"]]
    # Two roots that the host's links make one inside the other are refused.
    host = GpuHost(resolved={"/scratch": "/mnt/disk/data/scratch", "/data": "/mnt/disk/data"})
    with pytest.raises(HostError, match="holds or lies in another mount"):
        mounts.check_mounts(host, "gpu1", spec, policy)
    # A path below a root never reaches the host.
    host = GpuHost()
    with pytest.raises(HostError, match="not one of the directories"):
        mounts.check_mounts(host, "gpu1", RunSpec(volumes=("/data/models:/x",)), policy)
    assert host.commands == []


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("grants", "refused"),
    [
        # Kept from before binds were checked whole: the restart swap's second mount.
        ('["/data:/data","/data/x:/host"]\tnull\tnvidia\tfalse', "/data/x:/host"),
        ('["postgres_data:/x"]\tnull\trunc\tfalse', "postgres_data:/x"),
        ('["/data:/data"]\tnull\tkata\tfalse', "--runtime kata"),
        ('null\t[{"Type":"bind","Source":"/"}]\trunc\tfalse', "--mount"),
        ("null\tnull\trunc\ttrue", "--privileged"),
    ],
)
def test_a_kept_container_is_checked_before_it_is_started_again(grants: str, refused: str) -> None:
    ident = "e" * 64
    host = GpuHost(others={ident: grants})
    with pytest.raises(HostError, match="would be started with") as caught:
        mounts.check_container(host, Host("gpu1", {}), ident, RunPolicy())
    assert refused in caught.value.reason
    assert caught.value.fix is not None and f"docker rm {ident[:12]}" in caught.value.fix
    assert host.changes() == []


def test_a_kept_container_with_whole_roots_is_resolved_then_started() -> None:
    ident = "e" * 64
    host = GpuHost(others={ident: '["/data:/data","/data:/m:ro"]\tnull\tnvidia\tfalse'})
    mounts.check_container(host, Host("gpu1", {}), ident, RunPolicy())
    assert host.commands[-1] == [*mounts.RESOLVE_ARGV, "/data"]
    host = GpuHost(resolved={"/data": "/etc"}, others={ident: '["/data:/data"]\tnull\trunc\tfalse'})
    with pytest.raises(HostError, match="which is /etc on the host"):
        mounts.check_container(host, Host("gpu1", {}), ident, RunPolicy())


def test_mounts_are_not_resolved_when_nothing_is_bound_or_any_path_is_allowed() -> None:
    host = GpuHost(resolved={"/data/r": "/"})
    mounts.check_mounts(host, "gpu1", RunSpec(volumes=("cache:/c", "/anon")), RunPolicy())
    trusting = RunPolicy(allow=frozenset({"--volume"}))
    mounts.check_mounts(host, "gpu1", RunSpec(volumes=("/data/r:/h",)), trusting)
    assert host.commands == []


def test_a_host_that_cannot_resolve_paths_is_refused() -> None:
    class NoReadlink(GpuHost):
        def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
            return CommandResult(" ".join(argv), 1, "", "readlink: invalid option -- 'm'", 0.0)

    with pytest.raises(HostError, match="cannot resolve") as caught:
        mounts.check_mounts(NoReadlink(), "gpu1", RunSpec(volumes=("/data:/d",)), RunPolicy())
    assert "invalid option" in caught.value.reason


def test_a_history_line_that_cannot_be_written_is_said() -> None:
    denied = "sh: 2: cannot create /var/lib/fleet/history.jsonl: Permission denied"

    class ReadOnlyHistory(FakeTransport):
        def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
            return CommandResult("sh", 2, "", denied + "\n", 0.0)

    said = deploy.record(ReadOnlyHistory("gpu1"), {"action": "deploy", "to": "0.2.7"})
    assert said == {"history_not_recorded": f"/var/lib/fleet/history.jsonl: {denied}"}
    assert deploy.record(FakeTransport("gpu2"), {"action": "deploy"}) == {}


def test_a_switch_reports_in_the_order_deploy_always_printed() -> None:
    failed = deploy.Switch(
        "9.0.1", "9.0.1", rolled_back=True, unrecorded={"history_not_recorded": "x"}
    )
    assert list(failed.to_json()) == [
        "version_before",
        "version_after",
        "rolled_back",
        "history_not_recorded",
    ]
    shipped = deploy.Switch(
        "none", "9.0.2", health="ok", shipped={"store": "classic", "bytes_sent": 9}
    )
    assert list(shipped.to_json()) == [
        "store",
        "bytes_sent",
        "version_before",
        "version_after",
        "health",
    ]
    assert deploy.Switch(None, "9.0.2").to_json() == {"version_after": "9.0.2"}

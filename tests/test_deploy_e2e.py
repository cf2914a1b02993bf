"""End to end on the lab: deploy, health gate, rollback, locks, refusals and prune."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import (
    LabFixture,
    clear_framework,
    host_sh,
    restart_engine,
    run_cli,
    run_json,
    run_project_json,
)
from tests.framework import FrameworkProject, build_with_label

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def project(
    lab_env: LabFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrameworkProject]:
    clear_framework(lab_env)
    repository = f"fleet-test-fw-{uuid.uuid4().hex[:6]}"
    built = FrameworkProject.create(tmp_path_factory.mktemp("fw") / "cauchy", repository)
    built.commit_and_build("v1")
    built.commit_and_build("v2")
    built.commit_and_build("v3 fails its health check", {"env": {"CAUCHY_FAIL_HEALTH": "1"}})
    yield built
    built.remove_images()


def containers(env: LabFixture, host: str, repository: str) -> dict[str, str]:
    out = host_sh(
        env,
        host,
        "docker",
        "ps",
        "-a",
        "--filter",
        f"label=io.fleet.framework={repository}",
        "--format",
        "{{.Names}} {{.State}}",
    )
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


fleet = run_project_json


@pytest.fixture(scope="module")
def named_inventory(fast_inventory: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's inventory naming the framework's container, as inventory/group_vars does."""
    document = yaml.safe_load(fast_inventory.read_text())
    group = document["all"]["children"]["lab"]["vars"]
    group["fleet_run"] = {**group.get("fleet_run", {}), "name": "cauchy_service"}
    path = tmp_path_factory.mktemp("namedinv") / "lab.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def with_host_vars(inventory: Path, host: str, variables: dict[str, object], tmp: Path) -> Path:
    """A copy of ``inventory`` with ``variables`` added to one host's."""
    document = yaml.safe_load(inventory.read_text())
    hosts = document["all"]["children"]["lab"]["hosts"]
    hosts[host] = {**hosts[host], **variables}
    path = tmp / "inventory.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def restart_policy(env: LabFixture, host: str, name: str) -> str:
    return host_sh(
        env, host, "docker", "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", name
    ).strip()


def started_at(env: LabFixture, host: str, name: str) -> str:
    return host_sh(env, host, "docker", "inspect", "-f", "{{.Id}} {{.State.StartedAt}}", name)


def hostile_image(project: FrameworkProject, label: str) -> tuple[str, str]:
    """An image FROM v1 whose run command is ``label`` ({image}: itself); (tag, reference)."""
    tag = f"66.{uuid.uuid4().int % 1000}"
    reference = f"{project.repository}:{tag}"
    build_with_label(
        f"{project.repository}:{project.built[0]}",
        reference,
        {
            "io.fleet.tag": tag,
            "io.fleet.commit-count": "9999",
            "org.label-schema.docker.cmd": label.format(image=reference),
        },
    )
    return tag, reference


def remove_image(reference: str) -> None:
    from fleet.images import daemon

    daemon.connect().images.remove(reference, force=True)


def test_rollout_story(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    v1, v2, v3 = project.built
    code, doc = fleet(capsys, fast_inventory, project, "deploy", "all", v1)
    assert code == 0, doc
    assert {h: r["outcome"] for h, r in doc["hosts"].items()} == {
        "lab1": "changed",
        "lab2": "changed",
    }
    for host in ("lab1", "lab2"):
        version = json.loads(host_sh(lab_env, host, "curl", "-s", "http://127.0.0.1:8339/version"))
        assert version["tag"] == v1 or v1 in json.dumps(version)
    started = {
        h: host_sh(lab_env, h, "docker", "inspect", "-f", "{{.State.StartedAt}}", "cauchy_service")
        for h in ("lab1", "lab2")
    }

    # The same version again: nothing restarted.
    code, doc = fleet(capsys, fast_inventory, project, "deploy", "all", v1)
    assert code == 0
    assert all(r["outcome"] == "ok" for r in doc["hosts"].values())
    for host in ("lab1", "lab2"):
        assert (
            host_sh(
                lab_env, host, "docker", "inspect", "-f", "{{.State.StartedAt}}", "cauchy_service"
            )
            == started[host]
        )

    # v2: v1 stopped and kept under its version's name.
    code, doc = fleet(capsys, fast_inventory, project, "deploy", "all", v2)
    assert code == 0, doc
    for host in ("lab1", "lab2"):
        assert containers(lab_env, host, project.repository) == {
            "cauchy_service": "running",
            f"cauchy_service-{v1}": "exited",
        }
        assert doc["hosts"][host]["details"]["version_before"] == v1
        assert doc["hosts"][host]["details"]["version_after"] == v2

    # v3 fails its health check everywhere: every host back on v2, said so, with logs.
    code, doc = fleet(capsys, fast_inventory, project, "deploy", "all", v3)
    assert code == 2
    for host in ("lab1", "lab2"):
        result = doc["hosts"][host]
        assert result["outcome"] == "failed"
        assert f"rolled back to {v2}" in result["reason"]
        assert "last log lines" in result["reason"]
        assert containers(lab_env, host, project.repository)["cauchy_service"] == "running"
        assert json.loads(host_sh(lab_env, host, "curl", "-s", "http://127.0.0.1:8339/version"))
        history = [
            json.loads(line)
            for line in host_sh(lab_env, host, "cat", "/var/lib/fleet/history.jsonl").splitlines()
        ]
        assert (
            history[-1]["outcome"] == "failed"
            and history[-1]["to"] == v3
            and history[-1]["restored"] == v2
        )
        assert [h["to"] for h in history if h["outcome"] == "changed"][-2:] == [v1, v2]

    # Rollback: v2 -> v1 (from each host's history); the v2 container is kept.
    code, doc = fleet(capsys, fast_inventory, project, "rollback", "all")
    assert code == 0, doc
    for host in ("lab1", "lab2"):
        assert doc["hosts"][host]["details"]["version_after"] == v1
        names = containers(lab_env, host, project.repository)
        assert names["cauchy_service"] == "running"
        assert names[f"cauchy_service-{v2}"] == "exited"

    # Prune with --keep 1: the newest, the running version and the rollback target stay;
    # the failed v3 container goes.
    code, doc = fleet(capsys, fast_inventory, project, "prune", "all", "--keep", "1")
    assert code == 0, doc
    for host in ("lab1", "lab2"):
        assert set(doc["hosts"][host]["details"]["kept"]) == {v1, v2, v3}
        assert f"cauchy_service-{v3}-failed" in doc["hosts"][host]["details"]["removed"]
        names = containers(lab_env, host, project.repository)
        assert f"cauchy_service-{v3}-failed" not in names and names["cauchy_service"] == "running"
        images_left = host_sh(
            lab_env, host, "docker", "image", "ls", "--format", "{{.Tag}}", project.repository
        ).split()
        assert sorted(images_left) == sorted([v1, v2, v3])
    code, doc = fleet(capsys, fast_inventory, project, "prune", "all", "--keep", "1")
    assert all(r["outcome"] == "ok" for r in doc["hosts"].values())


def test_serial_max_fail_stops_after_the_first_host(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    _, v2, v3 = project.built
    fleet(capsys, fast_inventory, project, "deploy", "all", v2)
    code, doc = fleet(
        capsys, fast_inventory, project, "deploy", "all", v3, "--serial", "1", "--max-fail", "0"
    )
    assert code == 2
    assert doc["hosts"]["lab1"]["outcome"] == "failed"
    assert doc["hosts"]["lab2"]["outcome"] == "skipped"
    assert "rollout stopped after batch 1" in doc["hosts"]["lab2"]["reason"]
    assert containers(lab_env, "lab2", project.repository)["cauchy_service"] == "running"


def test_concurrent_deploy_fails_with_the_lock_holder(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    v1, v2, _ = project.built
    fleet(capsys, fast_inventory, project, "deploy", "all", v1)
    holder = {
        "token": "t0",
        "holder": "alice@laptop",
        "what": "deploy 0.0.1",
        "since": "2026-01-01T00:00:00Z",
        "expires": "2999-01-01T00:00:00Z",
    }
    host_sh(
        lab_env,
        "lab1",
        "sh",
        "-c",
        f"mkdir -p /var/lib/fleet && echo '{json.dumps(holder)}' > /var/lib/fleet/deploy.lock",
    )
    try:
        code, doc = fleet(capsys, fast_inventory, project, "deploy", "all", v2)
        assert code == 2
        assert doc["hosts"]["lab1"]["outcome"] == "failed"
        assert "alice@laptop" in doc["hosts"]["lab1"]["reason"]
        assert doc["hosts"]["lab2"]["outcome"] == "changed"
        assert containers(lab_env, "lab1", project.repository) == {
            "cauchy_service": "running",
            **{
                k: v
                for k, v in containers(lab_env, "lab1", project.repository).items()
                if k != "cauchy_service"
            },
        }
    finally:
        host_sh(lab_env, "lab1", "rm", "-f", "/var/lib/fleet/deploy.lock")
    # A stale lock (expired) is taken over, and said so.
    stale = {**holder, "expires": "2001-01-01T00:00:00Z"}
    host_sh(lab_env, "lab1", "sh", "-c", f"echo '{json.dumps(stale)}' > /var/lib/fleet/deploy.lock")
    code, doc = fleet(capsys, fast_inventory, project, "deploy", "all", v2)
    assert code == 0, doc
    assert host_sh(lab_env, "lab1", "ls", "/var/lib/fleet/").split().count("deploy.lock") == 0


def test_two_controllers_at_once_one_waits(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    v1, v2, _ = project.built
    fleet(capsys, fast_inventory, project, "deploy", "all", v1)
    argv = [
        "deploy",
        "lab1",
        v2,
        "-i",
        str(fast_inventory),
        "--project",
        str(project.root),
        "--wait",
        "120",
        "--json",
        "--retry-file",
        "/dev/null",
    ]
    # A second controller: another process, deploying to the same host at the same time.
    other = subprocess.Popen(
        [sys.executable, "-m", "fleet", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, doc = run_json(capsys, *argv[:-3], "--retry-file", "/dev/null")
    out, err = other.communicate(timeout=300)
    assert code == 0 and other.returncode == 0, err
    outcomes = sorted(
        [doc["hosts"]["lab1"]["outcome"], json.loads(out)["hosts"]["lab1"]["outcome"]]
    )
    assert outcomes == ["changed", "ok"]  # one switched, the other waited and found it done
    history = [
        json.loads(x)
        for x in host_sh(lab_env, "lab1", "cat", "/var/lib/fleet/history.jsonl").splitlines()
    ]
    assert history[-1]["to"] == v2


@pytest.mark.hostile
@pytest.mark.parametrize(
    "label",
    [
        "docker run -d --name cauchy_service --privileged {image} python cauchy_services.py --port 8339",
        "docker run -d --name cauchy_service --volume /:/host {image} python cauchy_services.py --port 8339",
        "docker run -d --name cauchy_service --pid host {image} python cauchy_services.py --port 8339",
        "docker run -d --name cauchy_service fleet-lab-layer1:bookworm python3 -c 'print(1)'",
        "docker run -d --name cauchy_service {image} sh -c 'touch /tmp/pwned'; touch /tmp/pwned-host",
    ],
)
def test_hostile_labels_are_refused(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys, label: str
) -> None:
    v1 = project.built[0]
    fleet(capsys, fast_inventory, project, "deploy", "lab1", v1)
    tag = f"66.{uuid.uuid4().int % 1000}"
    reference = f"{project.repository}:{tag}"
    build_with_label(
        f"{project.repository}:{v1}",
        reference,
        {
            "io.fleet.tag": tag,
            "io.fleet.commit-count": "9999",
            "org.label-schema.docker.cmd": label.format(image=reference),
        },
    )
    try:
        code, doc = fleet(capsys, fast_inventory, project, "deploy", "lab1", tag)
        result = doc["hosts"]["lab1"]
        if "touch /tmp/pwned-host" in label:
            # Passed literally to the container (which exits): never seen by the host's shell.
            assert host_sh(lab_env, "lab1", "ls", "/tmp").split().count("pwned-host") == 0
            assert code == 2 and f"rolled back to {v1}" in result["reason"]
        else:
            assert code == 2
            assert result["outcome"] == "failed"
            assert "refusing the run command" in result["reason"]
        assert containers(lab_env, "lab1", project.repository).get("cauchy_service") == "running"
    finally:
        from fleet.images import daemon

        daemon.connect().images.remove(reference, force=True)


def test_a_hand_started_container_of_that_name_is_kept_aside(
    lab_env: LabFixture,
    fast_inventory: Path,
    named_inventory: Path,
    project: FrameworkProject,
    capsys,
) -> None:
    """A host still running the lab's old hand-made container: fleet takes over, keeps it,
    when the inventory names the framework's container so (else it is left alone)."""
    v1 = project.built[0]
    clear_framework(lab_env)
    host_sh(lab_env, "lab1", "docker", "rm", "-f", "cauchy_service-unmanaged")
    assert (
        run_json(capsys, "push", "lab1", f"{project.repository}:{v1}", "-i", str(fast_inventory))[0]
        == 0
    )
    # Not labelled as this framework: started by hand, the way the lab did before fleet.
    host_sh(
        lab_env,
        "lab1",
        "docker",
        "run",
        "-d",
        "--name",
        "cauchy_service",
        "--label",
        "io.fleet.framework=hand-made",
        "--network",
        "host",
        f"{project.repository}:{v1}",
        "sleep",
        "600",
    )
    # The lab's inventory names no container: the label's name is no licence to stop it.
    code, doc = fleet(capsys, fast_inventory, project, "deploy", "lab1", v1)
    assert code == 2 and "that fleet did not start" in doc["hosts"]["lab1"]["reason"]
    names = host_sh(lab_env, "lab1", "docker", "ps", "-a", "--format", "{{.Names}} {{.State}}")
    assert "cauchy_service running" in names and "cauchy_service-unmanaged" not in names
    code, doc = fleet(capsys, named_inventory, project, "deploy", "lab1", v1)
    assert code == 0, doc["hosts"]["lab1"]["reason"]
    names = host_sh(lab_env, "lab1", "docker", "ps", "-a", "--format", "{{.Names}} {{.State}}")
    assert "cauchy_service-unmanaged exited" in names, (names, doc["hosts"]["lab1"])
    assert "cauchy_service running" in names
    host_sh(lab_env, "lab1", "docker", "rm", "-f", "cauchy_service-unmanaged")


@pytest.mark.hostile
def test_the_restart_swap_never_mounts_the_host(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    """The review's attack: a label that mounts /data whole and /data/x beside it, with
    --restart always. Once healthy, the container would swap /data/x for a link to / and
    exit; Docker resolves bind sources again at the restart (or a reboot, or a docker
    start), and mounts the host's / at /host. The label is refused before anything stops,
    whatever /data/x is at deploy time."""
    v1 = project.built[0]
    code, doc = fleet(capsys, fast_inventory, project, "deploy", "lab1", v1)
    assert code == 0, doc
    before = started_at(lab_env, "lab1", "cauchy_service")
    host_sh(lab_env, "lab1", "sh", "-c", "mkdir -p /data/x")
    tag, reference = hostile_image(
        project,
        "docker run -d --name cauchy_service --restart always --network host -v /data:/data "
        "-v /data/x:/host {image} python cauchy_services.py --port 8339",
    )
    try:
        code, doc = fleet(capsys, fast_inventory, project, "deploy", "lab1", tag)
        result = doc["hosts"]["lab1"]
        assert code == 2 and result["outcome"] == "failed", result
        assert "--volume /data/x:/host" in result["reason"], result
        assert "never a path below one" in result["fix"]
        # Nothing was stopped: the running version is the same container, never restarted.
        assert started_at(lab_env, "lab1", "cauchy_service") == before
        assert containers(lab_env, "lab1", project.repository)["cauchy_service"] == "running"
        # The data root itself made a link to / (by whoever may write the host's /): the
        # label mounting /data whole is refused once the host resolves it.
        host_sh(lab_env, "lab1", "sh", "-c", "mv /data /data.real && ln -s / /data")
        try:
            code, doc = fleet(capsys, fast_inventory, project, "deploy", "lab1", project.built[1])
        finally:
            host_sh(lab_env, "lab1", "sh", "-c", "rm /data && mv /data.real /data")
        result = doc["hosts"]["lab1"]
        assert code == 2 and "mounts /data, which is / on the host" in result["reason"], result
        assert started_at(lab_env, "lab1", "cauchy_service") == before
    finally:
        host_sh(lab_env, "lab1", "rm", "-rf", "/data/x")
        remove_image(reference)


@pytest.mark.hostile
def test_a_kept_version_stays_stopped_through_an_engine_restart(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, tmp_path: Path, capsys
) -> None:
    """A version fleet stopped and kept must not come back by itself: with --restart
    always, Docker starts a stopped container again when its engine restarts."""
    v1, v2 = project.built[:2]
    group = yaml.safe_load(fast_inventory.read_text())["all"]["children"]["lab"]["vars"]
    always = {"fleet_run_overrides": {**group.get("fleet_run_overrides", {}), "restart": "always"}}
    inventory = with_host_vars(fast_inventory, "lab1", always, tmp_path)
    code, doc = fleet(capsys, inventory, project, "deploy", "lab1", v1)
    assert code == 0, doc["hosts"]
    code, doc = fleet(capsys, inventory, project, "deploy", "lab1", v2)
    assert code == 0, doc["hosts"]
    kept = f"cauchy_service-{v1}"
    assert restart_policy(lab_env, "lab1", kept) == "no"
    restart_engine(lab_env, "lab1")
    states = containers(lab_env, "lab1", project.repository)
    assert states[kept] == "exited" and states["cauchy_service"] == "running", states
    # Rolled back, the kept version gets its own restart policy again.
    code, doc = fleet(capsys, inventory, project, "rollback", "lab1", "--to", v1)
    assert code == 0, doc
    assert restart_policy(lab_env, "lab1", "cauchy_service") == "always"


@pytest.mark.hostile
def test_a_label_naming_an_unrelated_container_stops_nothing(
    lab_env: LabFixture,
    fast_inventory: Path,
    named_inventory: Path,
    project: FrameworkProject,
    capsys,
) -> None:
    """A label with --name postgres while the host runs its own postgres: refused."""
    v1 = project.built[0]
    code, doc = fleet(capsys, fast_inventory, project, "deploy", "lab1", v1)
    assert code == 0, doc
    host_sh(lab_env, "lab1", "docker", "rm", "-f", "postgres", "postgres-unmanaged")
    host_sh(
        lab_env,
        "lab1",
        "docker",
        "run",
        "-d",
        "--name",
        "postgres",
        "--label",
        "io.fleet.framework=someone-elses",
        f"{project.repository}:{v1}",
        "sleep",
        "600",
    )
    framework_before = started_at(lab_env, "lab1", "cauchy_service")
    postgres_before = started_at(lab_env, "lab1", "postgres")
    tag, reference = hostile_image(
        project,
        "docker run -d --name postgres --network host -v /data:/data {image} "
        "python cauchy_services.py --port 8339",
    )
    try:
        # Without a name in the inventory (the lab's own): the host's postgres is left alone.
        code, doc = fleet(capsys, fast_inventory, project, "deploy", "lab1", tag)
        result = doc["hosts"]["lab1"]
        assert (
            code == 2
            and "a container named 'postgres' that fleet did not start" in (result["reason"])
        )
        # With the inventory naming the framework's container: the label is refused outright.
        code, doc = fleet(capsys, named_inventory, project, "deploy", "lab1", tag)
        result = doc["hosts"]["lab1"]
        assert code == 2 and "names the container 'postgres'" in result["reason"], result
        assert "fleet_run.name: cauchy_service" in result["fix"]
        names = host_sh(lab_env, "lab1", "docker", "ps", "-a", "--format", "{{.Names}} {{.State}}")
        assert "postgres running" in names.splitlines() and "postgres-unmanaged" not in names
        assert started_at(lab_env, "lab1", "postgres") == postgres_before
        assert started_at(lab_env, "lab1", "cauchy_service") == framework_before
    finally:
        host_sh(lab_env, "lab1", "docker", "rm", "-f", "postgres")
        remove_image(reference)


@pytest.mark.hostile
@pytest.mark.parametrize("separators", [None, (",", ":")], ids=["fleet", "compact"])
def test_two_controllers_taking_over_one_stale_lock(
    lab_env: LabFixture, separators: tuple[str, str] | None
) -> None:
    """Two take-overs of one stale lock at once: one wins, the other deletes nothing."""
    from fleet.errors import HostError
    from fleet.hosts.inventory import Host
    from fleet.lab import nodes as lab
    from fleet.ops import lock as lock_mod
    from fleet.runner import HostContext, Runner
    from fleet.ssh.known_hosts import KnownHosts
    from fleet.ssh.paramiko_client import SSHTransport

    endpoint = next(e for e in lab.endpoints(lab_env.lab) if e.name == "lab1")
    stale = {
        "token": "t0",
        "holder": "alice@laptop",
        "what": "deploy 0.0.1",
        "since": "2001-01-01T00:00:00Z",
        "expires": "2001-01-01T00:10:00Z",
    }
    controllers = ["a@ctl", "b@ctl"]
    transports = {
        c: SSHTransport(endpoint, KnownHosts([lab_env.lab.known_hosts])) for c in controllers
    }
    try:
        for _ in range(3):
            host_sh(
                lab_env,
                "lab1",
                "sh",
                "-c",
                'mkdir -p /var/lib/fleet && printf "%s\\n" "$1" > /var/lib/fleet/deploy.lock',
                "fleet-test",
                json.dumps(stale, separators=separators),
            )
            outcomes: dict[str, object] = {}
            start = threading.Barrier(len(controllers))

            def take(controller: str) -> None:
                transport = transports[controller]
                ctx = HostContext(Host("lab1"), Runner(lambda _, t=transport: t))
                start.wait()
                try:
                    outcomes[controller] = lock_mod.acquire(
                        ctx, "deploy 9.9", controller=controller
                    )
                except HostError as exc:
                    outcomes[controller] = exc

            threads = [threading.Thread(target=take, args=(c,), daemon=True) for c in controllers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert not any(t.is_alive() for t in threads), "a controller never finished"
            won = [(c, o) for c, o in outcomes.items() if isinstance(o, lock_mod.Lease)]
            assert len(won) == 1, outcomes
            [(winner, lock)] = won
            [error] = [o for o in outcomes.values() if not isinstance(o, lock_mod.Lease)]
            assert isinstance(error, HostError) and f"held by {winner}" in error.reason
            held = json.loads(host_sh(lab_env, "lab1", "cat", "/var/lib/fleet/deploy.lock"))
            assert held["token"] == lock.token and held["holder"] == winner
            lock.release()
            assert "deploy.lock" not in host_sh(lab_env, "lab1", "ls", "/var/lib/fleet").split()
    finally:
        for transport in transports.values():
            transport.close()
        host_sh(lab_env, "lab1", "rm", "-f", "/var/lib/fleet/deploy.lock")


def test_lock_status_and_release_on_the_lab(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys
) -> None:
    """A lock of a run that died on another controller: shown, then released with --yes."""
    foreign = {
        "token": "t1",
        "holder": "alice@laptop",
        "host": "laptop",
        "pid": 4242,
        "run": "0badc0ffee00",
        "what": "deploy 0.2.1",
        "since": "2026-12-06T12:00:00Z",
        "ttl": 60,
    }
    plant = 'mkdir -p /var/lib/fleet && printf "%s\\n" "$1" > /var/lib/fleet/deploy.lock'
    host_sh(lab_env, "lab1", "sh", "-c", plant, "plant", json.dumps(foreign))
    options = ["-i", str(fast_inventory), "--retry-file", "/dev/null"]
    try:
        code, doc = fleet(capsys, fast_inventory, project, "deploy", "lab1", project.built[0])
        assert code == 2, doc["hosts"]
        reason = doc["hosts"]["lab1"]["reason"]
        assert "held by alice@laptop (pid 4242, run 0badc0ffee00) deploy 0.2.1" in reason
        assert "lapses in" in reason and "fleet lock release" in doc["hosts"]["lab1"]["fix"]
        code, doc = run_json(capsys, "lock", "status", "all", *options)
        assert code == 0
        assert doc["hosts"]["lab1"]["details"]["lock"]["holder"] == "alice@laptop"
        assert doc["hosts"]["lab2"]["reason"] == "free"
        # No terminal to ask on, no --yes: nothing is released.
        code, _, err = run_cli(capsys, "lock", "release", "lab1", *options)
        assert code == 5 and "--yes" in err
        assert "deploy.lock" in host_sh(lab_env, "lab1", "ls", "/var/lib/fleet").split()
        code, doc = run_json(capsys, "lock", "release", "all", "--yes", *options)
        assert code == 0, doc["hosts"]
        assert doc["hosts"]["lab1"]["outcome"] == "changed"
        assert doc["hosts"]["lab2"]["outcome"] == "ok"
        last = json.loads(
            host_sh(lab_env, "lab1", "tail", "-n", "1", "/var/lib/fleet/history.jsonl")
        )
        assert (
            last["action"] == "lock_released" and last["previous_holder"]["run"] == "0badc0ffee00"
        )
        code, doc = fleet(capsys, fast_inventory, project, "deploy", "lab1", project.built[0])
        assert code == 0, doc["hosts"]
    finally:
        host_sh(lab_env, "lab1", "rm", "-f", "/var/lib/fleet/deploy.lock")


def _answer_on_a_terminal(argv: list[str], answer: bytes) -> tuple[int, str]:
    """Run fleet on a pseudo-terminal, answer its question with ``answer``: (exit, screen)."""
    import select

    controller, terminal = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet", *argv],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "120"},
    )
    os.close(terminal)
    screen = b""
    answered = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed: fleet exited
                break
            if not chunk:
                break
            screen += chunk
        if not answered and b"[y/N]" in screen:
            os.write(controller, answer + b"\n")
            answered = True
        if proc.poll() is not None and not ready:
            break
    os.close(controller)
    return proc.wait(timeout=60), screen.decode("utf-8", "replace")


def test_lock_release_asks_on_a_terminal_and_releases_only_on_yes(
    lab_env: LabFixture, fast_inventory: Path
) -> None:
    foreign = {"token": "t2", "holder": "bob@desk", "host": "desk", "pid": 7, "ttl": 60}
    plant = 'mkdir -p /var/lib/fleet && printf "%s\\n" "$1" > /var/lib/fleet/deploy.lock'
    host_sh(lab_env, "lab1", "sh", "-c", plant, "plant", json.dumps(foreign))
    argv = ["lock", "release", "lab1", "-i", str(fast_inventory), "--retry-file", "/dev/null"]
    try:
        code, screen = _answer_on_a_terminal(argv, b"n")
        assert code == 0, screen
        assert "lab1: held by bob@desk (pid 7" in screen and "release 1 lock(s)?" in screen
        assert "nothing released" in screen
        assert "deploy.lock" in host_sh(lab_env, "lab1", "ls", "/var/lib/fleet").split()
        code, screen = _answer_on_a_terminal(argv, b"y")
        assert code == 0, screen
        assert "released the lock of bob@desk" in screen, screen
        assert "deploy.lock" not in host_sh(lab_env, "lab1", "ls", "/var/lib/fleet").split()
    finally:
        host_sh(lab_env, "lab1", "rm", "-f", "/var/lib/fleet/deploy.lock")

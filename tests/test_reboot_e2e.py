"""End to end on the lab: a host reboots, and the framework comes back by itself.

A lab host is a container whose entrypoint starts sshd, dockerd and cron: ``docker
restart`` of it is a reboot (its dockerd and every container in it are killed, /run is
fresh, /var/lib/docker is kept, the SSH port is fixed). The framework runs with the
restart policy of its run command (``unless-stopped``), so its engine starts it again;
versions that fleet stopped on purpose (kept for rollback) stay stopped. While it is
down, ``fleet logs --follow`` reports the host gone and keeps streaming the others.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from fleet.lab import nodes as lab
from tests import test_views_e2e as views_e2e
from tests.conftest import LabFixture, heal, run_cli, run_json
from tests.test_views_e2e import HOSTS, Deployed, Following, request

pytestmark = pytest.mark.lab
# The views' fixtures: the CLI with the views registered, and one deployment for both modules.
_views_registered = views_e2e._views_registered
views_framework = views_e2e.views_framework


@pytest.fixture
def deployed(
    lab_env: LabFixture,
    views_framework: dict[str, Deployed],
    tmp_path_factory: pytest.TempPathFactory,
) -> Deployed:
    return views_e2e.shared_deployment(lab_env, views_framework, tmp_path_factory)


def framework_rows(capsys: pytest.CaptureFixture[str], deployed: Deployed) -> dict[str, Any]:
    """host -> {container name -> ps row}; an unreachable host has no rows."""
    _, doc = run_json(capsys, "ps", "all", *deployed.options)
    hosts: dict[str, Any] = doc["hosts"]
    return {
        host: {row["name"]: row for row in hosts[host]["details"].get("containers", [])}
        for host in HOSTS
    }


def reboot(env: LabFixture, host: str) -> None:
    lab.engine_client().containers.get(env.host(host).container).restart(timeout=10)


def test_framework_is_back_and_healthy_after_a_reboot_old_versions_stay_stopped(
    lab_env: LabFixture, deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    before = framework_rows(capsys, deployed)
    for host in HOSTS:
        assert before[host]["cauchy_service"]["restart_policy"] == "unless-stopped"
        assert before[host]["cauchy_service"]["health"] == "healthy"

    # lab2 reboots while its log is followed: it is reported, lab1 keeps streaming.
    marker = uuid.uuid4().hex[:8]
    following = Following("all", *deployed.options)
    try:

        def streaming(host: str) -> bool:
            return any(f"m={marker}-{host}" in line for line in following.lines)

        def poke() -> None:
            for host in HOSTS:
                if not streaming(host):
                    request(deployed.env, host, f"{marker}-{host}")

        following.wait_for(lambda: all(streaming(h) for h in HOSTS), 30, poke)
        reboot(lab_env, "lab2")
        following.wait_for(lambda: any(e.startswith("lab2: ") for e in following.errors), 30)
        request(deployed.env, "lab1", f"after-{marker}")
        following.wait_for(lambda: any(f"m=after-{marker}" in x for x in following.lines), 10)
    finally:
        code, errors = following.interrupt()
    gone = next(e for e in errors.splitlines() if e.startswith("lab2: "))
    assert "unreachable" in gone and "still following lab1" in gone, errors
    assert code == 3, errors  # stopped with Ctrl-C; a host went away meanwhile
    assert "Traceback" not in errors

    reboot(lab_env, "lab1")
    healed = heal(lab_env)  # waits for sshd and the engine only: nothing starts the framework
    assert [h.port for h in healed.lab.hosts] == [h.port for h in lab_env.lab.hosts]

    deadline = time.monotonic() + 60
    while True:
        after = framework_rows(capsys, deployed)
        running = [after[h].get("cauchy_service", {}) for h in HOSTS]
        if all(r.get("state") == "running" and r.get("health") == "healthy" for r in running):
            break
        assert time.monotonic() < deadline, after
        time.sleep(1)
    for host in HOSTS:
        back = after[host]["cauchy_service"]
        assert back["tag"] == deployed.v2
        assert back["started_at"] > before[host]["cauchy_service"]["started_at"]
        assert isinstance(back["restarts"], int)
        kept = after[host][f"cauchy_service-{deployed.v1}"]
        assert kept["state"] == "exited"  # stopped on purpose by fleet: stays stopped
        assert kept["started_at"] == before[host][f"cauchy_service-{deployed.v1}"]["started_at"]

    # The log goes on across the reboot: the service started twice, in one log.
    code, out, err = run_cli(capsys, "logs", "all", "--tail", "all", *deployed.options)
    assert code == 0, err
    for host in HOSTS:
        starts = [
            x for x in out.splitlines() if x.startswith(f"{host} | cauchy_services listening")
        ]
        assert len(starts) >= 2, out

"""Is a started framework container healthy: its health endpoint polled on the host."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fleet.images.runspec import HealthCheck, RunSpec
from fleet.programs import program
from fleet.ssh.base import Transport

_SETTLE_SECONDS = 3.0


# Probe the framework's health from the host itself (its port is on the host's network).
HEALTH_SCRIPT = program("health.sh")


@dataclass(frozen=True)
class Health:
    healthy: bool
    detail: str


def wait_healthy(transport: Transport, name: str, spec: RunSpec, check: HealthCheck) -> Health:
    """Poll the started container until its health endpoint answers 200, it dies, or time runs out."""
    # Without a port, "healthy" means: still running after a few seconds.
    url = f"http://127.0.0.1:{spec.port}{check.path}" if spec.port is not None else ""
    settle = time.monotonic() + min(check.timeout, _SETTLE_SECONDS)
    deadline = time.monotonic() + check.timeout
    last = ""
    while True:
        ran = transport.run(["sh", "-c", HEALTH_SCRIPT, "fleet-health", url, name], check=False)
        values = dict(line.split(" ", 1) for line in ran.stdout.splitlines() if " " in line)
        state, code = values.get("state", "").strip(), values.get("http", "000").strip()
        if not url:
            last = f"container {state or 'gone'} (no port to check)"
            if state == "running" and time.monotonic() >= settle:
                return Health(True, last)
        else:
            last = f"container {state or 'gone'}, GET {check.path} -> {code}"
        if url and code == "200" and state == "running":
            return Health(True, last)
        if state in ("exited", "dead", ""):
            return Health(False, last)
        if time.monotonic() >= deadline:
            return Health(False, f"not healthy after {check.timeout:g}s: {last}")
        time.sleep(check.interval)

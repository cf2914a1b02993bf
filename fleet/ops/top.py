"""``fleet top``: which GPUs are free and which hosts run what, fleet-wide, refreshed.

One round trip per host and refresh, over the run's kept connections: each GPU's
utilisation and memory (``nvidia-smi --query-gpu=index,uuid,name,utilization.gpu,
memory.used,memory.total --format=csv,noheader,nounits``), its compute processes with
their age and container (:mod:`fleet.ops.gpu`), and the framework containers that run,
with their version and status (health included, as ``docker ps`` shows it).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleet.hostoutput import Fact, gathered, parses_host_output, sections
from fleet.hosts.model import Host
from fleet.ops import gpu
from fleet.ops.gpu import GPUProcess, in_use, reading
from fleet.programs import program
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, Runner

PROGRAM = program("top.sh")


@dataclass(frozen=True)
class Usage:
    """One GPU now: utilisation in %, memory in MiB (None: the driver did not say)."""

    index: int
    uuid: str
    name: str
    utilization: int | None
    used_mib: int | None
    total_mib: int | None


@dataclass(frozen=True)
class Running:
    """A framework container as ``docker ps`` lists it."""

    name: str
    tag: str
    status: str  # "Up 3 hours (healthy)"


@dataclass(frozen=True)
class HostLoad:
    """What one host's GPUs do: ``fleet top``'s row, and its result's payload."""

    gpus: tuple[Usage, ...] = ()
    jobs: tuple[GPUProcess, ...] = ()
    framework: tuple[Running, ...] = ()
    driver: str = ""  # why the GPUs are not known ("" when they are)
    engine: str = ""  # why the containers are not known

    def busy(self, usage: Usage) -> bool:
        """Whether a GPU is in use: by its utilisation or memory, or by a compute process."""
        held = any(job.gpu_uuid == usage.uuid for job in self.jobs)
        return held or in_use(usage.utilization, usage.used_mib, usage.total_mib)

    @property
    def busy_count(self) -> int:
        return sum(1 for usage in self.gpus if self.busy(usage))

    def to_json(self) -> dict[str, Any]:
        return {
            "gpus": [vars(g) for g in self.gpus],
            "busy": self.busy_count,
            "jobs": [
                {
                    "pid": j.pid,
                    "gpu_uuid": j.gpu_uuid,
                    "used_mib": j.used_mib,
                    "name": j.name,
                    "container": j.container_id[:12],
                    "seconds": j.seconds,
                }
                for j in self.jobs
            ],
            "framework": [vars(r) for r in self.framework],
            "driver": self.driver,
            "engine": self.engine,
        }


def _number(text: str) -> int | None:
    value = reading(text)
    return None if value is None else int(value)


@parses_host_output("the GPU view")
def parse(text: str) -> HostLoad:
    """The output of :data:`PROGRAM`."""
    parts = sections(gathered(text, "the GPU view"), keep_blank=False)
    rc = (parts.get("gpus_rc") or ["absent"])[0].strip()
    usage: list[Usage] = []
    driver = ""
    lines = parts.get("gpus", [])
    if rc == "absent":
        driver = "no NVIDIA driver (nvidia-smi is not installed)"
    elif rc != "0":
        driver = " / ".join(line.strip() for line in lines[:2]) or f"nvidia-smi exited {rc}"
    else:
        for row in csv.reader(io.StringIO("\n".join(lines)), skipinitialspace=True):
            cells = [cell.strip() for cell in row]
            if len(cells) == 6 and cells[0].isdigit():
                used = (_number(cells[3]), _number(cells[4]), _number(cells[5]))
                usage.append(Usage(int(cells[0]), cells[1], cells[2], *used))
    running = []
    engine = ""
    if (parts.get("framework_rc") or ["1"])[0].strip() != "0":
        engine = (
            " / ".join(line.strip() for line in parts.get("framework", [])[:1])
            or "docker ps failed"
        )
    else:
        for line in parts.get("framework", []):
            name, _, rest = line.strip().partition("|")
            tag, _, status = rest.partition("|")
            if name:
                running.append(Running(name, tag, status))
    jobs = gpu.parse(text).processes
    return HostLoad(tuple(usage), jobs, tuple(running), driver, engine)


LOAD: Fact[HostLoad] = Fact("the GPU view", PROGRAM, parse)


def snapshot(runner: Runner, hosts: Sequence[Host], timeout: float | None = None) -> FleetResult:
    """Every host's load now (``HostLoad`` payloads); unreachable hosts as such."""

    def task(ctx: HostContext) -> HostResult:
        return ctx.result(Outcome.OK, payload=LOAD.gather(ctx.transport, timeout=timeout))

    return runner.run("top", hosts, task)

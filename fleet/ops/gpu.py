"""GPUs on a host: their compute processes, whose container each is, and whether a switch
of the framework would interrupt a training job.

Written against what real tools print: ``nvidia-smi --query-compute-apps=pid,gpu_uuid,
used_memory,process_name --format=csv,noheader,nounits`` (one line per CUDA process, no
header, MiB without unit) and ``/proc/PID/cgroup``, whose path names the container
(``/docker/<id>`` with cgroup v1 or cgroupfs, ``/system.slice/docker-<id>.scope`` with
systemd). The lab's simulated driver prints the same.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleet.hostoutput import Fact, gathered, parses_host_output, sections
from fleet.programs import program

if TYPE_CHECKING:
    from fleet.ssh.base import Transport

PROGRAM = program("gpu_processes.sh")
_CONTAINER_ID = re.compile(r"(?:docker[-/]|/)([0-9a-f]{64})(?:\.scope)?\b")


@dataclass(frozen=True)
class GPUProcess:
    """One CUDA process on a host's GPU."""

    pid: int
    gpu_uuid: str
    used_mib: int
    name: str
    container_id: str = ""  # "" when it runs outside any container
    seconds: int | None = None  # how long it has run

    def __str__(self) -> str:
        since = f", for {age(self.seconds)}" if self.seconds is not None else ""
        return f"pid {self.pid}, {self.used_mib} MiB{since}"


@dataclass(frozen=True)
class GPUProcesses:
    """What a host's driver said: its compute processes, or why it could not say."""

    available: bool  # nvidia-smi is installed
    processes: tuple[GPUProcess, ...] = ()
    error: str = ""

    def in_containers(self, container_ids: Collection[str]) -> list[GPUProcess]:
        """The processes of these containers (ids in full or abbreviated)."""
        return [
            p
            for p in self.processes
            if p.container_id and any(p.container_id.startswith(c) for c in container_ids if c)
        ]


# A GPU counts as busy above these: a driver and a desktop hold a few hundred MiB at 0 %.
BUSY_UTILIZATION = 5
BUSY_MEMORY_SHARE = 0.1


def reading(text: str) -> float | None:
    """A number as nvidia-smi prints it (``97``, ``81920 MiB``, ``12.5 %``); None for
    ``[N/A]``, ``[Not Supported]`` and the like."""
    word = text.strip().split(" ", 1)[0]
    return float(word) if word.replace(".", "", 1).isdigit() else None


def in_use(utilization: float | None, used_mib: float | None, total_mib: float | None) -> bool:
    """Whether a GPU is in use, from its utilisation (%) and memory (unknown: no)."""
    if utilization is not None and utilization > BUSY_UTILIZATION:
        return True
    return (
        used_mib is not None and bool(total_mib) and used_mib > BUSY_MEMORY_SHARE * (total_mib or 1)
    )


def container_of(cgroup: str) -> str:
    """The container id a process's ``/proc/PID/cgroup`` names; "" when none."""
    found = _CONTAINER_ID.findall(cgroup)
    return found[-1] if found else ""


@parses_host_output("GPU processes")
def parse(text: str) -> GPUProcesses:
    """The output of :data:`PROGRAM` (also part of the facts program)."""
    parts = sections(gathered(text, "GPU processes"), keep_blank=False)
    rc = (parts.get("gpu_apps_rc") or ["absent"])[0].strip()
    if rc == "absent":
        return GPUProcesses(available=False)
    lines = parts.get("gpu_apps", [])
    if rc != "0":
        return GPUProcesses(True, error=" / ".join(lines[:2]) or f"nvidia-smi exited {rc}")
    owners: dict[int, tuple[int | None, str]] = {}
    for line in parts.get("gpu_owners", []):
        pid_text, _, rest = line.strip().partition(" ")
        seconds, _, cgroup = rest.partition(" ")
        if pid_text.isdigit():
            age = int(seconds) if seconds.isdigit() else None
            owners[int(pid_text)] = (age, container_of(cgroup))
    processes = []
    for row in csv.reader(io.StringIO("\n".join(lines)), skipinitialspace=True):
        if len(row) != 4 or not row[0].strip().isdigit():
            continue
        number = int(row[0])
        age, container = owners.get(number, (None, ""))
        memory = row[2].strip()
        processes.append(
            GPUProcess(
                number,
                row[1].strip(),
                int(memory) if memory.isdigit() else 0,
                row[3].strip(),
                container,
                age,
            )
        )
    return GPUProcesses(True, tuple(processes))


PROCESSES: Fact[GPUProcesses] = Fact("GPU processes", PROGRAM, parse)


def processes(transport: Transport, timeout: float | None = None) -> GPUProcesses:
    """A host's GPU compute processes, in one round trip."""
    return PROCESSES.gather(transport, timeout=timeout)


def busy_reason(found: Sequence[GPUProcess]) -> str:
    """``busy: N GPU processes (pid, memory, since)``, as a skipped host's reason."""
    plural = "es" if len(found) != 1 else ""
    listed = "; ".join(str(p) for p in found[:5])
    more = f"; {len(found) - 5} more" if len(found) > 5 else ""
    return f"busy: {len(found)} GPU process{plural} ({listed}{more})"


def age(seconds: int) -> str:
    """How long a job has run: ``42s``, ``7m05s``, ``3h02m``."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# The host's GPU count, then what the container's nvidia-smi lists ("$1": the container).
_SEEN_PROGRAM = (
    'echo "@@host"; nvidia-smi -L 2>&1; echo "@@inside"; docker exec "$1" nvidia-smi -L 2>&1; '
    'echo "@@inside_rc $?"'
)


def expected_gpus(gpus: str | None, host_count: int) -> int:
    """How many GPUs a container should see: ``--gpus N`` or ``device=a,b``, else the host's."""
    if gpus is None or gpus == "all":
        return host_count
    if gpus.isdigit():
        return int(gpus)
    devices = gpus.removeprefix('"').removesuffix('"').partition("device=")[2]
    return len([d for d in devices.split(",") if d]) if devices else host_count


def sees_its_gpus(transport: Transport, container: str, gpus: str | None) -> tuple[bool, str]:
    """Whether ``nvidia-smi -L`` inside the started container lists the GPUs it was given.

    (ok, evidence). Run after its health check: a framework that answers /health but has no
    GPU would train on the CPU, or not at all.
    """
    ran = transport.run(["sh", "-c", _SEEN_PROGRAM, "fleet-gpu-seen", container], check=False)
    parts = sections(gathered(ran.stdout, "GPU check"), keep_blank=False)
    host = [line for line in parts.get("host", []) if line.startswith("GPU ")]
    inside = parts.get("inside", [])
    listed = [line for line in inside if line.startswith("GPU ")]
    wanted = expected_gpus(gpus, len(host))
    if (parts.get("inside_rc") or ["1"])[0].strip() == "0" and len(listed) >= max(wanted, 1):
        return True, f"sees {len(listed)} GPU(s)"
    said = " / ".join(inside[:2]) or "no output"
    return False, f"the container sees {len(listed)} of {max(wanted, 1)} GPU(s): {said}"

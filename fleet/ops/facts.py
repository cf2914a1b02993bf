"""Remote facts: what a host is and has, gathered in one round trip and parsed here.

A fact is a command plus a parser of its output (as in pyinfra). All of a host's facts
come from one constant shell script (no input is interpolated into it) that prints
sections marked ``@@name``; :func:`parse` turns that text into :class:`HostFacts`, so the
parsing is testable without a host.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fleet.hostoutput import Fact, Store, gathered, parses_host_output, sections, store_of
from fleet.programs import program
from fleet.results import HostResult, Outcome

if TYPE_CHECKING:
    from fleet.runner import HostContext
    from fleet.ssh.base import Transport

FRAMEWORK_LABEL = "io.fleet.framework"

# One round trip. Every section is printed even when its command fails, so the parser
# can tell "no GPU" from "could not ask".
SCRIPT = program("facts.sh")


@dataclass(frozen=True)
class Disk:
    """Free and total bytes of the filesystem holding a path."""

    path: str
    total: int
    free: int


@dataclass(frozen=True)
class GPU:
    """One GPU as ``nvidia-smi --query-gpu`` lists it (memory in MiB, utilization in %)."""

    model: str
    driver: str
    memory: str  # total, as shown: "81920 MiB"
    index: int | None = None
    uuid: str = ""
    memory_used: str = ""
    utilization: str = ""


@dataclass(frozen=True)
class HostFacts:
    """What one host is and has."""

    hostname: str = ""
    kernel: str = ""
    engine_ok: bool = False
    engine_error: str = ""
    engine_version: str = ""
    api_version: str = ""
    image_store: Store | Literal[""] = ""
    storage_driver: str = ""
    docker_root: str = ""
    runtimes: tuple[str, ...] = ()
    gpus: tuple[GPU, ...] = ()
    nvidia_smi: bool = False
    # The CUDA version the driver supports (nvidia-smi's banner); "" without a driver.
    cuda_version: str = ""
    disk_docker: Disk | None = None
    disk_data: Disk | None = None
    framework_containers: tuple[Mapping[str, str], ...] = field(default_factory=tuple)

    @property
    def has_nvidia_runtime(self) -> bool:
        return "nvidia" in self.runtimes

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["framework_containers"] = [dict(c) for c in self.framework_containers]
        return data


def _disk(line: list[str]) -> Disk | None:
    if not line or line[0].strip() == "absent":
        return None
    words = line[-1].split()
    if len(words) < 6 or not words[1].isdigit():
        return None
    return Disk(path=words[5], total=int(words[1]), free=int(words[3]))


@parses_host_output("facts")
def parse(text: str) -> HostFacts:
    """Facts from the output of :data:`SCRIPT`."""
    parts = sections(gathered(text, "facts"))
    info: dict[str, Any] = {}
    engine_error = ""
    raw_info = parts.get("docker_info", [])
    rc_line = parts.get("docker_info_rc", ["1"])
    for line in raw_info:
        if line.startswith("{"):
            try:
                info = json.loads(line)
            except json.JSONDecodeError:
                engine_error = line
    # docker info prints client errors inside the JSON (ServerErrors) or as plain text.
    server_errors = info.get("ServerErrors") or []
    if server_errors:
        engine_error = "; ".join(str(e) for e in server_errors)
    elif rc_line[:1] != ["0"] or not info:
        engine_error = (
            "\n".join(line for line in raw_info if not line.startswith("{")) or "docker info failed"
        )
    engine_ok = bool(info.get("ServerVersion")) and not server_errors
    gpus: list[GPU] = []
    smi = parts.get("nvidia_smi", [])
    nvidia_smi = bool(smi) and smi[0].strip() != "absent"
    if nvidia_smi:
        gpus = [gpu for gpu in (_gpu(line) for line in smi) if gpu is not None]
    containers: list[dict[str, str]] = []
    for line in parts.get("framework", []):
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            containers.append({k: str(v) for k, v in row.items() if k in _CONTAINER_KEYS})
    return HostFacts(
        hostname=(parts.get("hostname") or [""])[0].strip(),
        kernel=(parts.get("kernel") or [""])[0].strip(),
        engine_ok=engine_ok,
        engine_error=_clipped(engine_error) if not engine_ok else "",
        engine_version=str(info.get("ServerVersion", "")),
        api_version=(parts.get("docker_api") or [""])[0].strip() if engine_ok else "",
        image_store=store_of(info.get("DriverStatus")) if engine_ok else "",
        storage_driver=str(info.get("Driver", "")),
        docker_root=str(info.get("DockerRootDir", "")),
        runtimes=tuple(sorted((info.get("Runtimes") or {}).keys())),
        gpus=tuple(gpus),
        nvidia_smi=nvidia_smi,
        cuda_version=(parts.get("nvidia_cuda") or [""])[0].strip() if nvidia_smi else "",
        disk_docker=_disk(parts.get("df_docker", [])),
        disk_data=_disk(parts.get("df_data", [])),
        framework_containers=tuple(containers),
    )


FACTS: Fact[HostFacts] = Fact("facts", SCRIPT, parse)


def gather(transport: Transport, timeout: float | None = None) -> HostFacts:
    """Gather a host's facts in one round trip."""
    return FACTS.gather(transport, timeout=timeout)


@dataclass(frozen=True)
class Gathered:
    """A host's facts as ``fleet facts`` reports them: its result's payload."""

    facts: HostFacts

    def to_json(self) -> dict[str, Any]:
        return {"facts": self.facts.to_json()}


def facts_of(ctx: HostContext) -> HostResult:
    """One host's facts as a result: ok, or failed when its engine does not answer."""
    found = gather(ctx.transport)
    if not found.engine_ok:
        reason = f"Docker engine not answering: {found.engine_error}"
        return ctx.result(Outcome.FAILED, reason, payload=Gathered(found))
    return ctx.result(Outcome.OK, payload=Gathered(found))


def _gpu(line: str) -> GPU | None:
    """A GPU from a ``--query-gpu`` line: index, uuid, name, driver, total, used, util
    (nounits), or the older name, driver, total form."""
    cells = [c.strip() for c in line.split(",")]
    if len(cells) == 7 and cells[0].isdigit():
        index, uuid, name, driver, total, used, util = cells
        return GPU(name, driver, f"{total} MiB", int(index), uuid, f"{used} MiB", f"{util} %")
    if len(cells) == 3:
        return GPU(cells[0], cells[1], cells[2])
    return None


def _clipped(text: str, limit: int = 1000) -> str:
    """Evidence short enough for a reason: a host may answer megabytes."""
    return text if len(text) <= limit else f"{text[:limit]} ... ({len(text)} characters)"


_CONTAINER_KEYS = ("ID", "Names", "Image", "Status", "State", "RunningFor", "Labels")

"""Drift of a container from its run command: each field docker inspect shows, normalised
as the run command states it, then compared (:func:`config_differences`).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleet import units
from fleet.images.labels import normalized_name
from fleet.images.runspec import RunSpec
from fleet.ops.containers import FrameworkContainer, FrameworkImage

# Docker's shm size when the run command sets none.
_DEFAULT_SHM = 64 << 20


@dataclass(frozen=True)
class ConfigDifference:
    """One field where a container differs from its image's run command."""

    field: str
    expected: Any
    actual: Any

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "expected": self.expected, "actual": self.actual}

    def __str__(self) -> str:
        return f"{self.field} {_show(self.actual)} (expected {_show(self.expected)})"


# -- the container against its run command --------------------------------------------------
def config_differences(
    container: FrameworkContainer, image: FrameworkImage, spec: RunSpec, reference: str
) -> list[ConfigDifference]:
    """Where ``container`` differs from ``spec``, the run command it should have been run with."""
    config = container.config
    host_config = container.host_config
    image_config = image.config
    found: list[ConfigDifference] = []

    def check(name: str, expected: Any, actual: Any) -> None:
        if expected != actual:
            found.append(ConfigDifference(name, expected, actual))

    actual_image = str(config.get("Image", ""))
    same_image = actual_image in (reference, image.id, image.id.removeprefix("sha256:")) or (
        normalized_name(actual_image) == normalized_name(reference)
    )
    check("image", reference, reference if same_image else actual_image)
    if spec.name is not None:
        check("name", spec.name, container.name)
    command = [*spec.command, *(["--port", str(spec.port)] if spec.port is not None else [])]
    check("command", command or _strings(image_config.get("Cmd")), _strings(config.get("Cmd")))
    check(
        "entrypoint",
        _strings(image_config.get("Entrypoint")),
        _strings(config.get("Entrypoint")),
    )
    check("restart", spec.restart or "no", _restart(host_config.get("RestartPolicy")))
    check("network", _network(spec.network), _network(str(host_config.get("NetworkMode") or "")))
    if spec.hostname is not None:
        check("hostname", spec.hostname, str(config.get("Hostname", "")))
    check("volumes", sorted(spec.volumes), _volumes(config, host_config, image_config))
    check("runtime", spec.runtime or "runc", str(host_config.get("Runtime") or "runc"))
    check("gpus", spec.gpus, _gpus(host_config.get("DeviceRequests")))
    check(
        "shm_size",
        ram_bytes(spec.shm_size) if spec.shm_size is not None else _DEFAULT_SHM,
        int(host_config.get("ShmSize") or _DEFAULT_SHM),
    )
    check("ulimits", _spec_ulimits(spec), _ulimits(host_config.get("Ulimits")))
    check("env", _env_additions(spec.env, image_config), _env_additions(_env(config), image_config))
    check("publish", _spec_ports(spec.publish), _ports(host_config.get("PortBindings")))
    check("privileged", spec.privileged, bool(host_config.get("Privileged")))
    check("cap_add", _caps(spec.cap_add), _caps(_strings(host_config.get("CapAdd"))))
    check("devices", sorted(_spec_devices(spec.devices)), _devices(host_config.get("Devices")))
    check(
        "security_opt", sorted(spec.security_opt), sorted(_strings(host_config.get("SecurityOpt")))
    )
    check("pid", spec.pid or "", str(host_config.get("PidMode") or ""))
    check("userns", spec.userns or "", str(host_config.get("UsernsMode") or ""))
    ipc = str(host_config.get("IpcMode") or "")
    if spec.ipc is not None or ipc == "host" or ipc.startswith("container:"):
        check("ipc", spec.ipc or "private", ipc)
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(x) for x in value]
    return []


def _restart(policy: Any) -> str:
    if not isinstance(policy, Mapping):
        return "no"
    name = str(policy.get("Name") or "no")
    retries = int(policy.get("MaximumRetryCount") or 0)
    return f"{name}:{retries}" if name == "on-failure" and retries else name


def _network(mode: str | None) -> str:
    return "default" if mode in (None, "", "default", "bridge") else mode


def _volumes(
    config: Mapping[str, Any], host_config: Mapping[str, Any], image: Mapping[str, Any]
) -> list[str]:
    binds = _strings(host_config.get("Binds"))
    declared = image.get("Volumes") if isinstance(image.get("Volumes"), Mapping) else {}
    anonymous = config.get("Volumes") if isinstance(config.get("Volumes"), Mapping) else {}
    bound = {b.split(":")[1] for b in binds if b.count(":") >= 1}
    extra = [str(v) for v in anonymous or {} if v not in (declared or {}) and v not in bound]
    return sorted(binds + extra)


def _gpus(requests: Any) -> str | None:
    if not isinstance(requests, list):
        return None
    for request in requests:
        if not isinstance(request, Mapping):
            continue
        capabilities = request.get("Capabilities") or []
        if not any("gpu" in (c or []) for c in capabilities):
            continue
        ids = request.get("DeviceIDs") or []
        if ids:
            return "device=" + ",".join(str(i) for i in ids)
        count = int(request.get("Count") or 0)
        return "all" if count == -1 else str(count)
    return None


def ram_bytes(text: str) -> int | str:
    """Docker's RAMInBytes (binary units: 2g = 2 GiB); the text itself when it is none."""
    try:
        return units.parse_size(text)
    except ValueError:
        return text


def _ulimit_pair(value: str) -> tuple[int, int] | str:
    soft, _, hard = value.partition(":")
    try:
        return int(soft), int(hard or soft)
    except ValueError:
        return value


def _spec_ulimits(spec: RunSpec) -> dict[str, Any]:
    return {name: _ulimit_pair(value) for name, value in sorted(spec.ulimits)}


def _ulimits(value: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in value if isinstance(value, list) else []:
        if isinstance(item, Mapping) and item.get("Name"):
            found[str(item["Name"])] = (int(item.get("Soft") or 0), int(item.get("Hard") or 0))
    return dict(sorted(found.items()))


def _env(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for entry in _strings(config.get("Env")):
        key, _, value = entry.partition("=")
        pairs.append((key, value))
    return pairs


def _env_additions(pairs: Iterable[tuple[str, str]], image: Mapping[str, Any]) -> dict[str, str]:
    """The variables that are not the image's own (same name and value)."""
    own = dict(_env(image))
    return {k: v for k, v in sorted(pairs) if own.get(k) != v}


def _spec_ports(publish: Sequence[str]) -> list[str]:
    found: list[str] = []
    for mapping in publish:
        text, _, proto = mapping.partition("/")
        parts = text.rsplit(":", 2) if not text.startswith("[") else [text]
        if len(parts) == 1:
            address, host_port, port = "", "", parts[0]
        elif len(parts) == 2:
            address, (host_port, port) = "", parts
        else:
            address, host_port, port = parts
        found += _expand(address, host_port, port, proto or "tcp")
    return sorted(found)


def _expand(address: str, host_port: str, port: str, proto: str) -> list[str]:
    start, _, end = port.partition("-")
    if not end:
        return [f"{address}:{host_port}:{port}/{proto}"]
    host_start, _, _ = host_port.partition("-")
    ports = range(int(start), int(end) + 1)
    host_ports = (
        [str(int(host_start) + i) for i in range(len(ports))] if host_start else [""] * len(ports)
    )
    return [f"{address}:{h}:{p}/{proto}" for h, p in zip(host_ports, ports, strict=True)]


def _ports(bindings: Any) -> list[str]:
    found: list[str] = []
    for key, targets in (bindings or {}).items() if isinstance(bindings, Mapping) else []:
        port, _, proto = str(key).partition("/")
        for target in targets or [{}]:
            address = str(target.get("HostIp") or "") if isinstance(target, Mapping) else ""
            host_port = str(target.get("HostPort") or "") if isinstance(target, Mapping) else ""
            found.append(f"{address}:{host_port}:{port}/{proto or 'tcp'}")
    return sorted(found)


def _caps(values: Iterable[str]) -> list[str]:
    return sorted({v.upper().removeprefix("CAP_") for v in values})


def _spec_devices(devices: Iterable[str]) -> list[str]:
    found = []
    for device in devices:
        parts = device.split(":")
        host_path = parts[0]
        inside = parts[1] if len(parts) > 1 and parts[1].startswith("/") else host_path
        permissions = parts[-1] if len(parts) > 1 and not parts[-1].startswith("/") else "rwm"
        found.append(f"{host_path}:{inside}:{permissions}")
    return found


def _devices(value: Any) -> list[str]:
    found = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, Mapping):
            found.append(
                f"{item.get('PathOnHost', '')}:{item.get('PathInContainer', '')}:"
                f"{item.get('CgroupPermissions') or 'rwm'}"
            )
    return sorted(found)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return shlex.join(str(v) for v in value) if value else "none"
    if isinstance(value, dict):
        if not value:
            return "none"
        return ",".join(f"{k}={_show_pair(v)}" for k, v in value.items())
    if value is None or value == "":
        return "none"
    return str(value)


def _show_pair(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2:
        return str(value[0]) if value[0] == value[1] else f"{value[0]}:{value[1]}"
    return str(value)

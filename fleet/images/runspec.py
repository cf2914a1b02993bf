"""How the framework's container is run: a structured ``docker run``.

The run command lives in the framework's settings (inventory variables), is written into
every framework image as the ``org.label-schema.docker.cmd`` label, and is read back from
a host's image when deploying. Three shapes of the same thing:

* settings: ``fleet_run`` (lab-wide, e.g. ``inventory/group_vars/all.yml``) and
  ``fleet_run_overrides`` (per group or host), keys as in ``RunSpec`` below, e.g.
  ``fleet_run: {name: cauchy_service, restart: unless-stopped, volumes: [/data:/data],
  network: host, hostname: colorai, runtime: nvidia, shm_size: 2g,
  ulimits: {memlock: -1, stack: 67108864}, env: {}, command: [python,
  cauchy_services.py], port: 8339, health: {path: /health, timeout: 60, interval: 1}}``;
* a value: the frozen ``RunSpec`` (``health`` is kept apart in ``HealthCheck``, since
  ``docker run`` has no place for it);
* text: ``RunSpec.render(image)``, parsed back by ``parse_docker_cmd``, which treats the
  text as untrusted (it comes from an image label that anybody who can build an image can
  write): at most ``MAX_LABEL_BYTES``, no shell, only a detached ``docker run`` of the
  expected image, only whitelisted flags, and no flag that hands the container the host
  (``--privileged``, ``--pid host``, ``--cap-add``, ``--device``, ``--ulimit rtprio``, a
  network other than ``host``/``bridge``/``none``, a host path outside the allowed ones,
  ...) unless the caller allows it.

What a host lets a label do is its ``RunPolicy``, from the inventory: ``fleet_run_allow``
(flags, e.g. ``[--network]``), ``fleet_run_allow_paths`` (host directories that may be
mounted whole besides the data root, ``fleet_provision.data_root``, default ``/data``),
``fleet_run_allow_runtimes`` (default ``[runc, nvidia]``), ``fleet_run_allow_volumes``
(named volumes, default none) and the container's name (``fleet_run.name`` with
``fleet_run_overrides``): a label naming another container is refused. Mount propagation
(``shared``, ``slave``, ...) is refused everywhere.

Bind sources are the one thing Docker resolves again at every start of a container (a
``--restart`` policy, a reboot, ``docker start``), long after fleet checked them. So a
label may bind-mount only an allowed root itself, whole: never a path below one. Every
framework container may write the allowed roots, and a path below one could be swapped
for a symlink to ``/`` between two starts; a root itself sits in a directory no container
can write, so nothing a container does changes what it names. For the same reason allowed
roots never nest, and never hold or lie in a host-system tree. A deploy also resolves every
mount's symlinks on the host before it stops anything (``fleet.ops.mounts.check_mounts``),
and a kept container is checked again before fleet starts it.

Overrides merge key by key: a scalar replaces (``null`` clears it, e.g. ``runtime: null``
on a CPU host), a list replaces, and ``ulimits``/``env`` merge per entry where ``null``
drops the entry (``ulimits: {memlock: null}``).

The command's port is kept apart (``port``) and rendered as a trailing ``--port N``, which
is also how it is recognised when parsing.
"""

from __future__ import annotations

import dataclasses
import functools
import posixpath
import re
import shlex
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet.errors import DangerousRunError, HostError, RunSpecError
from fleet.hosts import settings as layered

if TYPE_CHECKING:
    from fleet.hosts.model import Host
    from fleet.ops.containers import FrameworkImage

FLEET_RUN = "fleet_run"
FLEET_RUN_OVERRIDES = "fleet_run_overrides"
FLEET_RUN_ALLOW = "fleet_run_allow"
FLEET_RUN_ALLOW_PATHS = "fleet_run_allow_paths"
FLEET_RUN_ALLOW_RUNTIMES = "fleet_run_allow_runtimes"
FLEET_RUN_ALLOW_VOLUMES = "fleet_run_allow_volumes"
# Runtimes a label may name unless the host says otherwise: Docker's own, and NVIDIA's
# (which wraps it). Any other registered runtime (kata with host mounts, a debugging shim)
# is the host's to allow.
DEFAULT_RUNTIMES = frozenset({"runc", "nvidia"})
DEFAULT_DATA_ROOT = "/data"
# An image label is untrusted text: bounded before it is even split into words.
MAX_LABEL_BYTES = 64 * 1024
# Networks a label may ask for; any other (a named one, container:X) joins the container
# to something else on the host, and needs the host's allow (fleet_run_allow: [--network]).
SAFE_NETWORKS = frozenset({"host", "bridge", "none"})


@dataclass(frozen=True)
class Danger:
    """One flag of a run command that hands the container part of the host."""

    flag: str
    value: str

    def __str__(self) -> str:
        return self.flag if self.value == "true" else f"{self.flag} {self.value}"


_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_RESTART = re.compile(r"no|always|unless-stopped|on-failure(?::[0-9]+)?")
_NETWORK = re.compile(r"(?:container:)?[a-zA-Z0-9][a-zA-Z0-9_.-]*")
HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_RUNTIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_GPUS = re.compile(r'[A-Za-z0-9"][A-Za-z0-9"=,_.:-]*')
_SHM_SIZE = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[kKmMgGtT][iI]?)?[bB]?")
_ULIMIT_VALUE = re.compile(r"-?[0-9]+(?::-?[0-9]+)?")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PUBLISH = re.compile(
    r"(?:(?:[0-9.]+|\[[0-9a-fA-F:]+\]):)?(?:[0-9]*(?:-[0-9]+)?:)?"
    r"[0-9]+(?:-[0-9]+)?(?:/(?:tcp|udp|sctp))?"
)
_IPC = re.compile(r"none|private|shareable|host|container:[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_PID = re.compile(r"host|container:[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_USERNS = re.compile(r"host")
_CAPABILITY = re.compile(r"[A-Za-z_]+")
_DEVICE = re.compile(r"/[^\s:]+(?::/[^\s:]+)?(?::[rwm]{1,3})?")
_SECURITY_OPT = re.compile(r"[A-Za-z][A-Za-z0-9_.=:/,-]*")
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_PORT_TEXT = re.compile(r"[0-9]{1,5}")
_ULIMITS = frozenset(
    [
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",  # refused from a label unless allowed: see RunSpec.dangers
        "rttime",
        "sigpending",
        "stack",
    ]
)
_VOLUME_OPTIONS = frozenset(
    [
        "ro",
        "rw",
        "z",
        "Z",
        "private",
        "rprivate",
        "nocopy",
        "consistent",
        "cached",
        "delegated",
    ]
)
# Mount propagation that carries mounts between the container and the host: refused always.
_PROPAGATION = frozenset({"shared", "rshared", "slave", "rslave"})
# Host paths whose mount gives a container the host (mounting one of their parents too):
# refused even when an allowed path holds them (fleet_run_allow_paths: [/var], say).
_HOST_SYSTEM_PATHS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    # Engines' stores, fleet's deploy lock and history, dpkg's maintainer scripts (run
    # as root at the next upgrade): every package's state lives here.
    "/var/lib",
    "/var/run",
    "/var/spool",  # root's crontab, at jobs
)


@dataclass(frozen=True)
class RunSpec:
    """A ``docker run`` of the framework image, field by field (flag order as rendered)."""

    name: str | None = None
    restart: str | None = None
    detach: bool = True
    volumes: tuple[str, ...] = ()
    network: str | None = None
    hostname: str | None = None
    runtime: str | None = None
    gpus: str | None = None
    shm_size: str | None = None
    ulimits: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    publish: tuple[str, ...] = ()
    ipc: str | None = None
    pid: str | None = None
    userns: str | None = None
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    port: int | None = None

    def __post_init__(self) -> None:
        for name in _SEQUENCE_FIELDS | _MAPPING_FIELDS | {"command"}:
            object.__setattr__(self, name, _as_tuple(name, getattr(self, name)))
        _validate(self)
        command = self.command
        if len(command) >= 2 and command[-2] == "--port" and _is_port_text(command[-1]):
            if self.port is not None:
                raise RunSpecError(
                    f"command: ends with '--port {command[-1]}' and port is {self.port}",
                    fix="set the port only once, with the port key",
                )
            object.__setattr__(self, "command", command[:-2])
            object.__setattr__(self, "port", int(command[-1]))

    @classmethod
    def from_settings(cls, variables: Mapping[str, Any]) -> RunSpec:
        """The spec in ``fleet_run``, with ``fleet_run_overrides`` merged on top."""
        spec = cls()
        for key, section in _run_layers(variables):
            spec = spec.with_overrides(section, location=key)
        return spec

    def with_overrides(self, overrides: Mapping[str, Any], *, location: str = "") -> RunSpec:
        """A copy with ``overrides`` (settings keys) merged on top; see the module doc."""
        changes: dict[str, Any] = {}
        for raw_key, value in overrides.items():
            key = str(raw_key)
            where = f"{location}.{key}" if location else key
            if key == "health":
                continue
            if key not in _SETTINGS_FIELDS:
                raise RunSpecError(
                    f"{where}: unknown run setting",
                    fix="use one of: " + ", ".join(sorted(_SETTINGS_FIELDS | {"health"})),
                )
            changes[key] = _setting_value(self, key, value, where)
        try:
            return dataclasses.replace(self, **changes)
        except RunSpecError as exc:
            prefix = f"{location}." if location else ""
            raise RunSpecError(prefix + exc.message, fix=exc.fix) from None

    def to_argv(self, image: str) -> list[str]:
        """The ``docker run`` argv of this spec for ``image`` (no shell involved)."""
        _check_image(image)
        argv = ["docker", "run"]
        if self.detach:
            argv.append("-d")
        _option(argv, "--name", self.name)
        _option(argv, "--restart", self.restart)
        for volume in self.volumes:
            argv += ["--volume", volume]
        _option(argv, "--network", self.network)
        _option(argv, "--hostname", self.hostname)
        _option(argv, "--runtime", self.runtime)
        _option(argv, "--gpus", self.gpus)
        if self.shm_size is not None:
            argv.append(f"--shm-size={self.shm_size}")
        for name, limit in self.ulimits:
            argv += ["--ulimit", f"{name}={limit}"]
        for key, value in self.env:
            argv += ["--env", f"{key}={value}"]
        for mapping in self.publish:
            argv += ["--publish", mapping]
        _option(argv, "--ipc", self.ipc)
        _option(argv, "--pid", self.pid)
        _option(argv, "--userns", self.userns)
        if self.privileged:
            argv.append("--privileged")
        for capability in self.cap_add:
            argv += ["--cap-add", capability]
        for device in self.devices:
            argv += ["--device", device]
        for option in self.security_opt:
            argv += ["--security-opt", option]
        argv.append(image)
        argv += self.command
        if self.port is not None:
            argv += ["--port", str(self.port)]
        return argv

    def render(self, image: str) -> str:
        """The command as one line of shell words: the ``docker.cmd`` label text."""
        return shlex.join(self.to_argv(image))

    def bind_sources(self) -> tuple[str, ...]:
        """The host paths this spec mounts (``HOSTPATH:...`` volumes), in order."""
        return tuple(
            source for source in (_bind_source(volume) for volume in self.volumes) if source
        )

    def named_volumes(self) -> tuple[str, ...]:
        """The named volumes this spec mounts (``NAME:...`` volumes), in order."""
        return tuple(
            volume.partition(":")[0]
            for volume in self.volumes
            if ":" in volume and not volume.startswith("/")
        )

    def dangers(
        self,
        allowed_paths: Collection[str] = (DEFAULT_DATA_ROOT,),
        *,
        runtimes: Collection[str] = DEFAULT_RUNTIMES,
        volumes: Collection[str] = (),
    ) -> tuple[Danger, ...]:
        """The flags of this spec that hand the container part of the host.

        A host path is one unless it is one of ``allowed_paths`` itself (normalised), lies
        in no other of them and holds no host-system tree; a named volume unless it is in
        ``volumes``; a runtime unless it is in ``runtimes``.
        """
        found: list[Danger] = []
        if self.privileged:
            found.append(Danger("--privileged", "true"))
        found += [Danger("--cap-add", capability) for capability in self.cap_add]
        found += [Danger("--device", device) for device in self.devices]
        found += [Danger("--security-opt", option) for option in self.security_opt]
        if self.pid is not None:
            found.append(Danger("--pid", self.pid))
        if self.ipc is not None and (self.ipc == "host" or self.ipc.startswith("container:")):
            found.append(Danger("--ipc", self.ipc))
        if self.userns is not None:
            found.append(Danger("--userns", self.userns))
        if self.network is not None and self.network not in SAFE_NETWORKS:
            found.append(Danger("--network", self.network))
        if self.runtime is not None and self.runtime not in runtimes:
            found.append(Danger("--runtime", self.runtime))
        found += [Danger("--ulimit", f"{n}={v}") for n, v in self.ulimits if n == "rtprio"]
        for volume in self.volumes:
            source = _bind_source(volume)
            if source is not None:
                granted = bind_allowed(source, allowed_paths)
            else:  # a named volume (NAME:...), or an anonymous one (a container path alone)
                granted = ":" not in volume or volume.partition(":")[0] in volumes
            if not granted:
                found.append(Danger("--volume", volume))
        return tuple(found)


def bind_allowed(source: str, roots: Collection[str]) -> bool:
    """True when ``source`` is one of ``roots`` itself, inside no other, and no system tree.

    Never a path below a root: every framework container may write the roots, and Docker
    resolves a bind source again at every start, so a path below one could be a symlink
    to ``/`` by the next restart.
    """
    return (
        source in roots
        and _is_normalised(source)
        and not any(other != source and path_within(source, (other,)) for other in roots)
        and not holds_host_system(source)
    )


@dataclass(frozen=True)
class HealthCheck:
    """How a started container is judged healthy: HTTP GET ``path`` until 200 or timeout."""

    path: str = "/health"
    timeout: float = 60.0
    interval: float = 1.0

    @classmethod
    def from_settings(cls, variables: Mapping[str, Any]) -> HealthCheck:
        """``fleet_run.health``, with ``fleet_run_overrides.health`` merged on top."""
        check = cls()
        for key, section in _run_layers(variables):
            if section.get("health") is None:
                continue
            health = section["health"]
            where = f"{key}.health"
            if not isinstance(health, Mapping):
                raise RunSpecError(
                    f"{where}: expected a mapping", fix="e.g. health: {path: /health, timeout: 60}"
                )
            changes: dict[str, Any] = {}
            for name, value in health.items():
                if name == "path":
                    if not isinstance(value, str) or not value.startswith("/"):
                        raise RunSpecError(
                            f"{where}.path: expected an absolute URL path, got {value!r}",
                            fix="e.g. path: /health",
                        )
                    changes["path"] = value
                elif name in {"timeout", "interval"}:
                    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                        raise RunSpecError(
                            f"{where}.{name}: expected a positive number of seconds, got {value!r}"
                        )
                    changes[name] = float(value)
                else:
                    raise RunSpecError(
                        f"{where}.{name}: unknown health setting",
                        fix="use path, timeout or interval",
                    )
            check = dataclasses.replace(check, **changes)
        return check


def parse_docker_cmd(
    label: str,
    expected_image: str,
    *,
    allow: Collection[str] = frozenset(),
    allowed_paths: Collection[str] = (DEFAULT_DATA_ROOT,),
    runtimes: Collection[str] = DEFAULT_RUNTIMES,
    volumes: Collection[str] = (),
) -> RunSpec:
    """The ``RunSpec`` of an untrusted ``docker run`` command line.

    Accepts only ``docker run -d [whitelisted flags] EXPECTED_IMAGE [command...]`` of at
    most ``MAX_LABEL_BYTES``. Flags that hand the container the host raise
    ``DangerousRunError`` unless their long name (e.g. ``"--privileged"``, ``"--volume"``
    for any host path, ``"--network"`` for a named network) is in ``allow``; a host path is
    allowed when it is one of ``allowed_paths`` (whole), a named volume when it is in
    ``volumes``, a runtime when it is in ``runtimes``. Anything else malformed raises
    ``RunSpecError``. The text is split like a POSIX shell would split words (in time
    linear in its length), and nothing in it is ever interpreted by a shell.
    """
    tokens = _label_tokens(label)
    parsed = _Flags()
    index = 2
    while index < len(tokens):
        word = tokens[index]
        if not word.startswith("-") or word == "-":
            break
        flag, value, consumed = _read_flag(tokens, index)
        index += consumed
        parsed.store(flag, value)
    if index >= len(tokens):
        raise RunSpecError(
            "docker.cmd: names no image", fix=f"the command must run {expected_image}"
        )
    image = tokens[index]
    if image != expected_image:
        raise RunSpecError(
            f"docker.cmd: runs image {image[:200]!r}, expected {expected_image!r}",
            fix="a framework image's run command may only run that image itself",
        )
    try:
        spec = RunSpec(**parsed.values(), command=tuple(tokens[index + 1 :]))
    except RunSpecError as exc:
        raise RunSpecError(f"docker.cmd: {exc.message}", fix=exc.fix) from None
    _refuse_dangers(spec, allow, allowed_paths, runtimes, volumes)
    if not spec.detach:
        raise RunSpecError(
            "docker.cmd: runs the container attached (no -d): 'docker run' would not return "
            "until the container exits, and every deploy would wait for it",
            fix="add -d to the run command (fleet_run: detach: true, the default) and "
            "rebuild the image",
        )
    return spec


def _label_tokens(label: str) -> list[str]:
    """The label's words, split as a POSIX shell would; refused when too big or not a run."""
    if not isinstance(label, str):
        raise RunSpecError(f"docker.cmd: expected text, got {type(label).__name__}")
    size = len(label.encode("utf-8", "replace"))
    if size > MAX_LABEL_BYTES:
        raise RunSpecError(
            f"docker.cmd: the label is {size} bytes, more than fleet accepts "
            f"({MAX_LABEL_BYTES // 1024} KiB)",
            fix="keep the run command short: settings such as env and volumes belong in "
            "the inventory's fleet_run, not in the image's label",
        )
    try:
        tokens = shlex.split(label)
    except ValueError as exc:
        raise RunSpecError(
            f"docker.cmd: not a valid command line ({exc}): {label[:200]!r}",
            fix="quote the command as shlex.join does",
        ) from None
    if any("\x00" in token for token in tokens):
        raise RunSpecError("docker.cmd: contains a NUL character")
    if tokens[:2] != ["docker", "run"]:
        raise RunSpecError(
            f"docker.cmd: must start with 'docker run', got {shlex.join(tokens[:2])[:200]!r}",
            fix="the label must be a plain 'docker run ...' command",
        )
    return tokens


def _refuse_dangers(
    spec: RunSpec,
    allow: Collection[str],
    allowed_paths: Collection[str],
    runtimes: Collection[str],
    volumes: Collection[str],
) -> None:
    """Raise DangerousRunError for the first flag that hands the host over and is not allowed."""
    dangers = spec.dangers(allowed_paths, runtimes=runtimes, volumes=volumes)
    refused = [danger for danger in dangers if danger.flag not in allow]
    if refused:
        fix = None
        if any(danger.flag == "--volume" for danger in refused):
            named = ", ".join(sorted(volumes)) or "none"
            fix = (
                "mount only whole host directories among "
                + ", ".join(sorted(allowed_paths))
                + " (never a path below one: a container may swap it for a symlink, and "
                "Docker follows it at the next restart); let a host mount another "
                f"directory with {FLEET_RUN_ALLOW_PATHS} (outside those, and never a "
                "host-system tree such as /etc or /var/lib/docker), a named volume with "
                f"{FLEET_RUN_ALLOW_VOLUMES} (allowed: {named}), or allow any host path with "
                f"{FLEET_RUN_ALLOW}: [--volume] if you trust whoever builds the image"
            )
        elif any(danger.flag == "--network" for danger in refused):
            fix = (
                "use --network host or bridge, or, if you trust whoever builds the image, "
                f"allow other networks with {FLEET_RUN_ALLOW}: [--network] in the inventory"
            )
        elif any(danger.flag == "--runtime" for danger in refused):
            fix = (
                "use one of the runtimes the host allows ("
                + ", ".join(sorted(runtimes))
                + f"), or allow this one with {FLEET_RUN_ALLOW_RUNTIMES} in the inventory"
            )
        raise DangerousRunError(refused[0].flag, refused[0].value, dangers=refused, fix=fix)


# --- fields -------------------------------------------------------------------------------

_SCALAR_FIELDS = frozenset(
    {"name", "restart", "network", "hostname", "runtime", "gpus", "shm_size", "ipc", "pid"}
    | {"userns"}
)
_SEQUENCE_FIELDS = frozenset({"volumes", "publish", "cap_add", "devices", "security_opt"})
_MAPPING_FIELDS = frozenset({"ulimits", "env"})
_BOOLEAN_FIELDS = frozenset({"detach", "privileged"})
_SETTINGS_FIELDS = (
    _SCALAR_FIELDS | _SEQUENCE_FIELDS | _MAPPING_FIELDS | _BOOLEAN_FIELDS | {"command", "port"}
)

# Long flag -> (field, kind). Kinds: bool, scalar, list, map.
_FLAGS: dict[str, tuple[str, str]] = {
    "--detach": ("detach", "bool"),
    "--name": ("name", "scalar"),
    "--restart": ("restart", "scalar"),
    "--volume": ("volumes", "list"),
    "--network": ("network", "scalar"),
    "--hostname": ("hostname", "scalar"),
    "--runtime": ("runtime", "scalar"),
    "--gpus": ("gpus", "scalar"),
    "--shm-size": ("shm_size", "scalar"),
    "--ulimit": ("ulimits", "map"),
    "--env": ("env", "map"),
    "--publish": ("publish", "list"),
    "--ipc": ("ipc", "scalar"),
    "--pid": ("pid", "scalar"),
    "--userns": ("userns", "scalar"),
    "--privileged": ("privileged", "bool"),
    "--cap-add": ("cap_add", "list"),
    "--device": ("devices", "list"),
    "--security-opt": ("security_opt", "list"),
}
_ALIASES = {"-d": "--detach", "-v": "--volume", "-e": "--env", "-p": "--publish"}
_ALIASES |= {"-h": "--hostname", "--net": "--network"}
# Flags that give the container the host and that a RunSpec cannot even express.
_UNEXPRESSIBLE_DANGERS = frozenset(
    [
        "--uts",
        "--cgroupns",
        "--mount",
        "--volumes-from",
        "--device-cgroup-rule",
        "--cgroup-parent",
        "--sysctl",
        "--group-add",
        "--oom-kill-disable",
        "--env-file",
        "--label-file",
        "--cidfile",
        "--volume-driver",
        "--isolation",
    ]
)


def _validate(spec: RunSpec) -> None:
    _match("name", spec.name, _NAME, "e.g. cauchy_service")
    _match("restart", spec.restart, _RESTART, "no, always, unless-stopped or on-failure[:N]")
    for index, volume in enumerate(spec.volumes):
        _check_volume(f"volumes[{index}]", volume)
    _match("network", spec.network, _NETWORK, "e.g. host, bridge or a network name")
    _match("hostname", spec.hostname, HOSTNAME, "letters, digits, '-' and '.'")
    _match("runtime", spec.runtime, _RUNTIME, "e.g. nvidia or runc")
    _match("gpus", spec.gpus, _GPUS, "e.g. all, 2 or device=0,1")
    _match("shm_size", spec.shm_size, _SHM_SIZE, "e.g. 2g or 512m")
    seen: set[str] = set()
    for name, limit in spec.ulimits:
        if name not in _ULIMITS:
            raise RunSpecError(
                f"ulimits.{name}: unknown ulimit", fix="use one of " + ", ".join(sorted(_ULIMITS))
            )
        _match(f"ulimits.{name}", limit, _ULIMIT_VALUE, "a number or SOFT:HARD, -1 = unlimited")
        _unique(f"ulimits.{name}", name, seen)
    seen = set()
    for key, value in spec.env:
        _match(f"env.{key}", key, _ENV_KEY, "a variable name: letters, digits, '_'")
        _no_nul(f"env.{key}", value)
        _unique(f"env.{key}", key, seen)
    for index, mapping in enumerate(spec.publish):
        _match(f"publish[{index}]", mapping, _PUBLISH, "[IP:][HOSTPORT]:PORT[/PROTO]")
    _match("ipc", spec.ipc, _IPC, "none, private, shareable, host or container:NAME")
    _match("pid", spec.pid, _PID, "host or container:NAME")
    _match("userns", spec.userns, _USERNS, "host")
    for index, capability in enumerate(spec.cap_add):
        _match(f"cap_add[{index}]", capability, _CAPABILITY, "e.g. SYS_PTRACE")
    for index, device in enumerate(spec.devices):
        _match(f"devices[{index}]", device, _DEVICE, "HOSTPATH[:CONTAINERPATH][:rwm]")
    for index, option in enumerate(spec.security_opt):
        _match(f"security_opt[{index}]", option, _SECURITY_OPT, "e.g. seccomp=unconfined")
    for index, word in enumerate(spec.command):
        if not isinstance(word, str):
            raise RunSpecError(f"command[{index}]: expected text, got {word!r}")
        _no_nul(f"command[{index}]", word)
    for name in _BOOLEAN_FIELDS:
        if not isinstance(getattr(spec, name), bool):
            raise RunSpecError(f"{name}: expected true or false, got {getattr(spec, name)!r}")
    port = spec.port
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
        raise RunSpecError(f"port: expected a number, got {port!r}")
    if port is not None and not 1 <= port <= 65535:
        raise RunSpecError(f"port: {port} is not a TCP port", fix="use 1..65535")


def _as_tuple(name: str, value: Any) -> tuple[Any, ...]:
    """Sequence fields as tuples, mapping fields as tuples of (key, value) text pairs."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise RunSpecError(f"{name}: expected a sequence, got {value!r}")
    if name not in _MAPPING_FIELDS:
        return tuple(value)
    pairs = value.items() if isinstance(value, Mapping) else value
    result = []
    for pair in pairs:
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise RunSpecError(f"{name}: expected (name, value) pairs, got {pair!r}")
        result.append((str(pair[0]), str(pair[1])))
    return tuple(result)


def _match(where: str, value: str | None, pattern: re.Pattern[str], expected: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise RunSpecError(f"{where}: expected text, got {value!r}", fix=expected)
    if not pattern.fullmatch(value):
        raise RunSpecError(f"{where}: {value!r} is not valid", fix=f"expected {expected}")


def _no_nul(where: str, value: str) -> None:
    if not isinstance(value, str):
        raise RunSpecError(f"{where}: expected text, got {value!r}")
    if "\x00" in value:
        raise RunSpecError(f"{where}: contains a NUL character")


def _unique(where: str, key: str, seen: set[str]) -> None:
    if key in seen:
        raise RunSpecError(f"{where}: given twice", fix="give each entry once")
    seen.add(key)


def _check_volume(where: str, volume: str) -> None:
    if not isinstance(volume, str) or not volume or "\x00" in volume:
        raise RunSpecError(f"{where}: expected SOURCE:DEST[:OPTIONS], got {volume!r}")
    parts = volume.split(":")
    fix = "expected HOSTPATH:CONTAINERPATH[:ro], VOLUME:CONTAINERPATH or CONTAINERPATH"
    if len(parts) > 3:
        raise RunSpecError(f"{where}: {volume!r} has too many ':'", fix=fix)
    if len(parts) == 1:
        source, destination, options = None, parts[0], None
    else:
        source, destination = parts[0], parts[1]
        options = parts[2] if len(parts) == 3 else None
    if not destination.startswith("/"):
        raise RunSpecError(f"{where}: container path {destination!r} is not absolute", fix=fix)
    if source is not None and not (source.startswith("/") or _VOLUME_NAME.fullmatch(source)):
        raise RunSpecError(
            f"{where}: source {source!r} is neither an absolute path nor a volume name", fix=fix
        )
    propagation = sorted(set(options.split(",")) & _PROPAGATION) if options else []
    if propagation:
        raise RunSpecError(
            f"{where}: mount propagation {propagation[0]!r} is refused: mounts made on one "
            "side would appear on the other (the container's in the host, or the host's "
            "in the container)",
            fix="drop it: the default (rprivate) keeps the container's mounts to itself",
        )
    if options is not None and not set(options.split(",")) <= _VOLUME_OPTIONS:
        raise RunSpecError(
            f"{where}: unknown mount options {options!r}",
            fix="use " + ", ".join(sorted(_VOLUME_OPTIONS)),
        )


def _bind_source(volume: str) -> str | None:
    """The host path a ``HOSTPATH:CONTAINERPATH[:OPTIONS]`` volume binds (else None)."""
    source, colon, _ = volume.partition(":")
    return source if colon and source.startswith("/") else None


def holds_host_system(source: str) -> bool:
    """True when ``source`` is ``/``, in a host-system tree, or a parent of one."""
    path = "/" + posixpath.normpath(source).lstrip("/")
    if path == "/":
        return True
    return any(
        path == system or path.startswith(system + "/") or system.startswith(path + "/")
        for system in _HOST_SYSTEM_PATHS
    )


def _is_port_text(text: str) -> bool:
    return bool(_PORT_TEXT.fullmatch(text)) and 1 <= int(text) <= 65535


def _check_image(image: str) -> None:
    if not isinstance(image, str) or not image or image.startswith("-"):
        raise RunSpecError(f"image: {image!r} is not an image reference")
    if any(character.isspace() or character == "\x00" for character in image):
        raise RunSpecError(f"image: {image!r} contains whitespace")


def _option(argv: list[str], flag: str, value: str | None) -> None:
    if value is not None:
        argv += [flag, value]


# --- settings -----------------------------------------------------------------------------


def _setting_value(spec: RunSpec, key: str, value: Any, where: str) -> Any:
    """The field value for settings ``key``; ``None`` clears scalars, lists and mappings."""
    if key in _SCALAR_FIELDS:
        return None if value is None else _setting_text(value, where)
    if key in _BOOLEAN_FIELDS:
        if not isinstance(value, bool):
            raise RunSpecError(f"{where}: expected true or false, got {value!r}")
        return value
    if key == "port":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise RunSpecError(f"{where}: expected a port number, got {value!r}", fix="e.g. 8339")
        return value
    if key in _SEQUENCE_FIELDS or key == "command":
        if value is None:
            return ()
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise RunSpecError(
                f"{where}: expected a list, got {value!r}",
                fix=f"write {key} as a YAML list, e.g. [python, cauchy_services.py]",
            )
        return tuple(_setting_text(item, f"{where}[{index}]") for index, item in enumerate(value))
    # ulimits / env: merged entry by entry, None drops an entry
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise RunSpecError(
            f"{where}: expected a mapping, got {value!r}", fix=f"e.g. {key}: {{NAME: VALUE}}"
        )
    merged = dict(getattr(spec, key))
    for raw_name, item in value.items():
        name = str(raw_name)
        if item is None:
            merged.pop(name, None)
        else:
            merged[name] = _setting_text(item, f"{where}.{name}")
    return tuple(merged.items())


def _setting_text(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise RunSpecError(f"{where}: expected text or a number, got {value!r}")


# --- parsing ------------------------------------------------------------------------------


def _read_flag(tokens: Sequence[str], index: int) -> tuple[str, str | None, int]:
    """(long flag, value, tokens consumed) of the flag at ``tokens[index]``."""
    token = tokens[index]
    if token.startswith("--"):
        flag, equals, inline = token.partition("=")
    else:
        flag, rest = token[:2], token[2:]
        if rest and not rest.startswith("="):
            raise RunSpecError(
                f"docker.cmd: {token!r}: combined or attached short flags are not accepted",
                fix="write each flag and its value separately, e.g. -d -v /data:/data",
            )
        equals, inline = ("=", rest[1:]) if rest else ("", "")
    flag = _ALIASES.get(flag, flag)
    if flag == "--":
        raise RunSpecError("docker.cmd: '--' before the image is not accepted")
    if flag in _UNEXPRESSIBLE_DANGERS:
        raise DangerousRunError(
            flag,
            inline or (tokens[index + 1] if index + 1 < len(tokens) else ""),
            fix=f"remove {flag}: fleet's run spec cannot express it",
        )
    if flag not in _FLAGS:
        raise RunSpecError(
            f"docker.cmd: flag {flag!r} is not supported",
            fix="fleet accepts only " + ", ".join(sorted(_FLAGS)),
        )
    kind = _FLAGS[flag][1]
    if kind == "bool":
        if not equals:
            return flag, None, 1
        if inline not in {"true", "false"}:
            raise RunSpecError(f"docker.cmd: {token!r}: expected {flag}=true or {flag}=false")
        return flag, inline, 1
    if equals:
        value, consumed = inline, 1
    elif index + 1 < len(tokens):
        value, consumed = tokens[index + 1], 2
    else:
        raise RunSpecError(f"docker.cmd: {flag} needs a value")
    if not value or value.startswith("-"):
        raise RunSpecError(
            f"docker.cmd: {flag} {value!r}: a value must not be empty or start with '-'"
        )
    return flag, value, consumed


class _Flags:
    """The flags of a label as they are read: lists and mappings grow in place (linear time)."""

    def __init__(self) -> None:
        self._scalars: dict[str, Any] = {}
        self._lists: dict[str, list[str]] = {}
        self._maps: dict[str, dict[str, str]] = {}

    def store(self, flag: str, value: str | None) -> None:
        field_name, kind = _FLAGS[flag]
        if kind == "list":
            assert value is not None
            self._lists.setdefault(field_name, []).append(value)
            return
        if kind == "map":
            assert value is not None
            key, equals, item = value.partition("=")
            if not equals:
                raise RunSpecError(
                    f"docker.cmd: {flag} {value[:200]!r}: expected NAME=VALUE",
                    fix="pass-through variables (--env NAME) are not accepted: give the value",
                )
            entries = self._maps.setdefault(field_name, {})
            if key in entries:
                raise RunSpecError(f"docker.cmd: {flag} {key[:200]} given twice")
            entries[key] = item
            return
        if field_name in self._scalars:
            raise RunSpecError(f"docker.cmd: {flag} given twice", fix="give each flag once")
        self._scalars[field_name] = value != "false" if kind == "bool" else value

    def values(self) -> dict[str, Any]:
        """``RunSpec`` keyword arguments (``detach`` false unless the label says ``-d``)."""
        values: dict[str, Any] = {"detach": False, **self._scalars}
        values.update((name, tuple(items)) for name, items in self._lists.items())
        values.update((name, tuple(entries.items())) for name, entries in self._maps.items())
        return values


__all__ = [
    "DEFAULT_DATA_ROOT",
    "FLEET_RUN",
    "FLEET_RUN_ALLOW",
    "FLEET_RUN_ALLOW_PATHS",
    "FLEET_RUN_ALLOW_RUNTIMES",
    "FLEET_RUN_ALLOW_VOLUMES",
    "FLEET_RUN_OVERRIDES",
    "MAX_LABEL_BYTES",
    "SAFE_NETWORKS",
    "Danger",
    "DangerousRunError",
    "HealthCheck",
    "RunPolicy",
    "RunSpec",
    "RunSpecError",
    "bind_allowed",
    "data_root",
    "holds_host_system",
    "parse_docker_cmd",
    "path_within",
    "run_spec_for",
]


@dataclass(frozen=True)
class RunPolicy:
    """What a host lets an image's run command do, from the host's inventory variables."""

    # Flags allowed although they hand the container part of the host (fleet_run_allow).
    allow: frozenset[str] = frozenset()
    # Host directories that may be mounted whole: the data root, then fleet_run_allow_paths.
    # None holds another (checked by for_host): see the module doc.
    paths: tuple[str, ...] = (DEFAULT_DATA_ROOT,)
    # The container's name from fleet_run/fleet_run_overrides; None when they name none.
    name: str | None = None
    # Runtimes (fleet_run_allow_runtimes) and named volumes (fleet_run_allow_volumes).
    runtimes: frozenset[str] = DEFAULT_RUNTIMES
    volumes: frozenset[str] = frozenset()

    @classmethod
    def for_host(
        cls, variables: Mapping[str, Any], options_allow: Collection[str] = frozenset()
    ) -> RunPolicy:
        """The policy of a host's variables; ``RunSpecError`` names a malformed setting."""
        allow = frozenset(_text_list(variables.get(FLEET_RUN_ALLOW), FLEET_RUN_ALLOW))
        paths = [data_root(variables)]
        for index, text in enumerate(
            _text_list(variables.get(FLEET_RUN_ALLOW_PATHS), FLEET_RUN_ALLOW_PATHS)
        ):
            where = f"{FLEET_RUN_ALLOW_PATHS}[{index}]"
            path = _allowed_path(text, where)
            _refuse_nested_root(path, paths, where)
            paths.append(path)
        runtimes = variables.get(FLEET_RUN_ALLOW_RUNTIMES)
        return cls(
            allow=allow | frozenset(options_allow),
            paths=tuple(dict.fromkeys(paths)),
            name=RunSpec.from_settings(variables).name,
            runtimes=DEFAULT_RUNTIMES
            if runtimes is None
            else frozenset(_names(runtimes, FLEET_RUN_ALLOW_RUNTIMES, _RUNTIME)),
            volumes=frozenset(
                _names(
                    variables.get(FLEET_RUN_ALLOW_VOLUMES), FLEET_RUN_ALLOW_VOLUMES, _VOLUME_NAME
                )
            ),
        )

    @property
    def roots(self) -> tuple[str, ...]:
        """The allowed paths, trusted in their resolved form (a data root that is a symlink
        to a bigger disk): none lies in another, so no container can have swapped one."""
        return self.paths

    def swappable_binds(self, spec: RunSpec) -> tuple[str, ...]:
        """The bind sources of ``spec`` below a tree a container can write.

        Those trees are the allowed roots (any framework container may mount them) and the
        spec's own read-write binds. Holds for the inventory's own settings too: a swap
        does not care who wrote the path.
        """
        writable = [*self.paths, *_rw_bind_sources(spec)]
        return tuple(
            source
            for source in spec.bind_sources()
            if any(source != tree and path_within(source, (tree,)) for tree in writable)
        )


def _rw_bind_sources(spec: RunSpec) -> list[str]:
    """The host paths ``spec`` mounts without ``ro``."""
    found = []
    for volume in spec.volumes:
        source = _bind_source(volume)
        options = volume.split(":")[2].split(",") if volume.count(":") == 2 else []
        if source is not None and "ro" not in options:
            found.append(source)
    return found


def _refuse_nested_root(path: str, roots: Sequence[str], where: str) -> None:
    """An allowed root must hold no other, lie in none, and be no host-system tree."""
    for other in roots:
        if path != other and (path_within(path, (other,)) or path_within(other, (path,))):
            raise RunSpecError(
                f"{where}: {path} and {other} nest: every framework container may write an "
                "allowed directory, so it could swap the inner one for a symlink (say to /), "
                "which Docker would follow at the container's next start",
                fix=f"allow only {min(path, other, key=len)}, mounted whole, or choose "
                "directories apart",
            )
    if holds_host_system(path):
        raise RunSpecError(
            f"{where}: {path} is, holds or lies in a host-system tree (such as /etc, /usr, "
            "/var/lib/docker, /var/lib/fleet): a container that mounts it has the host",
            fix="allow a directory of its own, e.g. /scratch/models",
        )


def _names(value: Any, where: str, pattern: re.Pattern[str]) -> list[str]:
    names = _text_list(value, where)
    for index, name in enumerate(names):
        if not pattern.fullmatch(name):
            raise RunSpecError(
                f"{where}[{index}]: {name!r} is not a valid name",
                fix="letters, digits, '_', '.' and '-', as Docker names runtimes and volumes",
            )
    return names


def _run_layers(variables: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return layered.layers(
        variables, FLEET_RUN, error=RunSpecError, example="{name: cauchy_service}"
    )


def data_root(variables: Mapping[str, Any]) -> str:
    """The host's data root: ``fleet_provision_overrides``/``fleet_provision`` ``data_root``."""
    # The keys provision reads (fleet.ops.provision.settings.settings_from_vars), layered the same way.
    value, where = layered.merged(
        variables, "fleet_provision", error=RunSpecError, example="{data_root: /data}"
    ).get("data_root", (None, ""))
    return DEFAULT_DATA_ROOT if value is None else _allowed_path(value, where)


def path_within(path: str, allowed: Iterable[str]) -> bool:
    """True when ``path`` is normalised and equal to or under one of ``allowed``."""
    if not _is_normalised(path):
        return False
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in allowed)


def _is_normalised(path: str) -> bool:
    """An absolute path with no '.', '..', '//' or trailing '/' and no control character."""
    return (
        path.startswith("/")
        and posixpath.normpath(path) == path
        and not path.startswith("//")
        and not any(ord(character) < 32 or ord(character) == 127 for character in path)
    )


def _allowed_path(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _is_normalised(value):
        raise RunSpecError(
            f"{where}: {value!r} is not an absolute, normalised path",
            fix="write it like /scratch/models (no '..', no trailing '/')",
        )
    return value


def _text_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise RunSpecError(
            f"{where}: expected a list, got {value!r}", fix=f"e.g. {where}: [--network]"
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise RunSpecError(f"{where}[{index}]: expected text, got {item!r}")
    return list(value)


@functools.lru_cache(maxsize=64)
def _parsed_label(label: str, reference: str, policy: RunPolicy) -> RunSpec:
    """A label parsed once per policy: an audit of a thousand hosts reads one label a
    thousand times (a RunSpec is immutable, so the hosts may share it)."""
    return parse_docker_cmd(
        label,
        reference,
        allow=policy.allow,
        allowed_paths=policy.paths,
        runtimes=policy.runtimes,
        volumes=policy.volumes,
    )


def run_spec_for(
    host: Host, image: FrameworkImage, reference: str, options_allow: frozenset[str] = frozenset()
) -> RunSpec:
    """The host's run command: the image's label, parsed as untrusted, with overrides.

    The container's name is the inventory's (``fleet_run.name``, ``fleet_run_overrides``):
    a label that names another container is refused, so an image cannot pick which of the
    host's containers a deploy stops.
    """
    label = image.docker_cmd
    if not label:
        raise HostError(
            host.name,
            f"image {reference} has no org.label-schema.docker.cmd label",
            fix="build it with 'fleet build'",
        )
    try:
        policy = RunPolicy.for_host(host.vars, options_allow)
        spec = _parsed_label(label, reference, policy)
        if policy.name is not None and spec.name not in (None, policy.name):
            raise RunSpecError(
                f"docker.cmd: names the container {spec.name!r}, but the inventory's run spec "
                f"names it {policy.name!r}",
                fix=f"build the image with fleet_run.name: {policy.name}; if the framework's "
                f"container is to be called {spec.name!r}, set fleet_run.name (or "
                "fleet_run_overrides.name) in the inventory first",
            )
        overrides = host.vars.get(FLEET_RUN_OVERRIDES)
        if isinstance(overrides, Mapping):
            spec = spec.with_overrides(overrides, location=FLEET_RUN_OVERRIDES)
        if policy.name is not None:
            spec = dataclasses.replace(spec, name=policy.name)
        swappable = policy.swappable_binds(spec)
        if swappable and "--volume" not in policy.allow:
            raise RunSpecError(
                f"the run spec mounts {swappable[0]}, below a directory that framework "
                "containers can write: one could swap it for a symlink (say to /), and "
                "Docker follows it at the container's next start, with no fleet present",
                fix="mount the whole directory instead (e.g. /data:/data), or move "
                f"{swappable[0]} out of it and allow it with {FLEET_RUN_ALLOW_PATHS}",
            )
        if not spec.detach:
            raise RunSpecError(
                f"{FLEET_RUN_OVERRIDES}.detach: false would run the container attached, and "
                "every deploy would wait for it to exit",
                fix=f"remove detach from {FLEET_RUN_OVERRIDES}",
            )
    except RunSpecError as exc:
        raise HostError(
            host.name, f"refusing the run command of {reference}: {exc.message}", fix=exc.fix
        ) from exc
    return spec

"""fleet_provision settings: read from the inventory, checked, as frozen values (exit 4)."""

from __future__ import annotations

import ipaddress
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet import units
from fleet.errors import InputError, ProvisionSettingsError
from fleet.hosts import settings as layered
from fleet.hosts.model import Host
from fleet.images.runspec import HOSTNAME, RunSpec
from fleet.ops.hostfiles import ACCOUNT, CRON_D_NAME, CRON_SCHEDULE, MODE
from fleet.ops.provision import sources
from fleet.ops.provision.engine import EngineSettings
from fleet.ops.provision.packages import (
    APT_LOCK_TIMEOUT,
    ENGINE_PACKAGE,
    ENGINE_PACKAGES,
    INSTALLABLE,
    AptRepository,
)

FLEET_PROVISION = "fleet_provision"


FLEET_PROVISION_OVERRIDES = "fleet_provision_overrides"


BEGIN_MARKER = "# BEGIN fleet aicron"


END_MARKER = "# END fleet aicron"


SCRIPT_NAME = "aicron.sh"


# What cron runs: root's, outside every path a framework container may mount.
SCRIPT_DIR = "/usr/local/lib/fleet"


SCRIPT_PATH = f"{SCRIPT_DIR}/{SCRIPT_NAME}"


SCRIPT_DIR_MODE = 0o755


SCRIPT_MODE = 0o755


# <data_root>/aicron.sh: a copy for people to read, not executable.
COPY_MODE = 0o644


COPY_NOTE = (
    f"# A COPY, for reading: cron runs {SCRIPT_PATH} (root's, outside the data root,\n"
    "# which every framework container can write). Editing this file changes nothing.\n"
)


CRON_MODE = 0o644


# The cron file is read whole to edit it (the facts script's "head -c 1048576"); a larger
# one is refused rather than truncated.
CRON_MAX_BYTES = 1 << 20


CAP_SYS_RESOURCE = 24


_GIB = 1 << 30


DEFAULT_DIRS = ("checkpoints", "datasets", "pretrained_models", "projects")


@dataclass(frozen=True)
class DirSpec:
    """One managed directory: its absolute path, owner, group and mode."""

    path: str
    owner: str
    group: str
    mode: int


@dataclass(frozen=True)
class ProvisionSettings:
    """A host's ``fleet_provision`` settings, validated, with everything derived from them."""

    data_root: str = "/data"
    owner: str = "root"
    group: str = "root"
    mode: int = 0o755
    dirs: tuple[DirSpec, ...] = tuple(
        DirSpec(f"/data/{name}", "root", "root", 0o755) for name in DEFAULT_DIRS
    )
    weights_dir: str = "/data/pretrained_models"
    weights_port: int = 8340
    weights_bind: str = "0.0.0.0"  # noqa: S104 - the service is meant for the lab's network
    weights_user: str = "nobody"
    cron_file: str = "/etc/crontab"
    cron_user: str = "root"
    cron_schedule: str = "*/5 * * * *"
    log_file: str = "/var/log/aicron.log"
    min_free_docker: int = 10 * _GIB
    min_free_data: int = 1 * _GIB
    base_image: str | None = None
    allow_writable_data_root: bool = False
    engine: EngineSettings = field(default_factory=EngineSettings)
    # What provisioning installs where it lacks (apt): engine, tools, nvidia_toolkit.
    install: frozenset[str] = frozenset()
    nvidia_repository: AptRepository | None = None
    apt_lock_timeout: int = APT_LOCK_TIMEOUT
    engine_package: str = ENGINE_PACKAGE  # docker.io, or docker-ce from docker_repository
    docker_repository: AptRepository | None = None
    # Users made members of the docker group (they may then use the engine: root's equal).
    docker_users: tuple[str, ...] = ()
    # Derived, not settings of their own.
    pid_file: str = "/run/aicron-weights-8340.pid"
    run_spec: RunSpec = field(default_factory=RunSpec)
    # The script cron runs: always SCRIPT_PATH on a host (a field so that a test can run it
    # elsewhere).
    script_path: str = SCRIPT_PATH

    @property
    def script_dir(self) -> str:
        return posixpath.dirname(self.script_path)

    @property
    def copy_path(self) -> str:
        """The copy of the script for people, in the data root; nothing runs it."""
        return posixpath.join(self.data_root, SCRIPT_NAME)

    @property
    def managed_dirs(self) -> tuple[DirSpec, ...]:
        """The data root, then each listed directory (the weights directory included)."""
        root = DirSpec(self.data_root, self.owner, self.group, self.mode)
        listed = [d for d in self.dirs if d.path != self.data_root]
        if self.weights_dir not in {d.path for d in listed} | {self.data_root}:
            listed.append(DirSpec(self.weights_dir, self.owner, self.group, self.mode))
        return (root, *listed)

    @property
    def weights_url(self) -> str:
        """Where aicron.sh and the facts probe the service (a wildcard bind: loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.weights_bind, self.weights_bind)  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.weights_port}/"

    @property
    def cron_command(self) -> str:
        """The command of the cron line (what cron hands to /bin/sh)."""
        return f"/bin/sh {shlex.quote(self.script_path)} >/dev/null"

    @property
    def cron_line(self) -> str:
        return f"{self.cron_schedule} {self.cron_user} {self.cron_command}"


_SETTING_KEYS = frozenset(
    {
        "data_root",
        "owner",
        "group",
        "mode",
        "dirs",
        "weights_dir",
        "weights_port",
        "weights_bind",
        "weights_user",
        "cron_file",
        "cron_user",
        "cron_schedule",
        "log_file",
        "min_free",
        "base_image",
        "allow_writable_data_root",
        "engine",
        "install",
        "nvidia_repository",
        "apt_lock_timeout",
        "engine_package",
        "docker_repository",
        "docker_users",
    }
)


_PATH_PART = r"[A-Za-z0-9_+@-][A-Za-z0-9._+@-]*"


_ABSOLUTE = re.compile(rf"/{_PATH_PART}(?:/{_PATH_PART})*")


_RELATIVE = re.compile(rf"{_PATH_PART}(?:/{_PATH_PART})*")


_IMAGE_REF = re.compile(r"[A-Za-z0-9][^\s]*")


# A data root that would have fleet chown/chmod a system directory.
_SYSTEM_DIRS = frozenset(
    {
        *("/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc"),
        *("/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var"),  # noqa: S108
        *("/var/lib", "/var/log"),
    }
)


def settings_from_vars(variables: Mapping[str, Any]) -> ProvisionSettings:
    """A host's settings: ``fleet_provision`` with ``fleet_provision_overrides`` on top.

    Overrides merge key by key (``min_free`` entry by entry), so a group or a host changes
    only what differs, as ``fleet_run_overrides`` does for the run spec.
    """
    raw = layered.merged(
        variables,
        FLEET_PROVISION,
        error=ProvisionSettingsError,
        example="{data_root: /data, cron_schedule: '*/5 * * * *'}",
        deep={"min_free", "engine"},
    )
    for key, (_, where) in raw.items():
        if key not in _SETTING_KEYS:
            raise ProvisionSettingsError(
                f"{where}: unknown setting",
                fix="use one of: " + ", ".join(sorted(_SETTING_KEYS)),
            )
    return _build_settings(raw, RunSpec.from_settings(variables))


def _build_settings(raw: Mapping[str, tuple[Any, str]], run_spec: RunSpec) -> ProvisionSettings:
    defaults = ProvisionSettings()

    def get(key: str, default: Any) -> tuple[Any, str]:
        value, where = raw.get(key, (None, f"{FLEET_PROVISION}.{key}"))
        return (default if value is None else value), where

    data_root = _absolute_path(*get("data_root", defaults.data_root))
    if data_root in _SYSTEM_DIRS or data_root == "/":
        raise ProvisionSettingsError(
            f"{get('data_root', '')[1]}: {data_root} is a system directory; fleet would chown "
            "and chmod it",
            fix="use a directory of its own, e.g. data_root: /data",
        )
    owner = _account(*get("owner", defaults.owner))
    group = _account(*get("group", defaults.group))
    mode = _mode(*get("mode", "0755"))
    dirs = _dirs(*get("dirs", list(DEFAULT_DIRS)), data_root, owner, group, mode)
    weights_dir = posixpath.join(
        data_root, _relative_path(*get("weights_dir", "pretrained_models"))
    )
    port_value, port_where = get("weights_port", defaults.weights_port)
    port = _port(port_value, port_where)
    bind = _bind(*get("weights_bind", defaults.weights_bind))
    weights_user_value, weights_user_where = raw.get("weights_user", ("nobody", ""))
    weights_user = (
        "" if weights_user_value in (None, "") else _account(weights_user_value, weights_user_where)
    )
    if is_below(SCRIPT_DIR, data_root) or is_below(data_root, SCRIPT_DIR):
        raise ProvisionSettingsError(
            f"{get('data_root', '')[1]}: {data_root} would hold {SCRIPT_DIR}, where the script "
            "cron runs as root lives; every framework container can write the data root",
            fix="use a directory of its own, e.g. data_root: /data",
        )
    cron_file = _outside(*get("cron_file", defaults.cron_file), data_root)
    if posixpath.dirname(cron_file) == "/etc/cron.d" and not CRON_D_NAME.fullmatch(
        posixpath.basename(cron_file)
    ):
        raise ProvisionSettingsError(
            f"{get('cron_file', '')[1]}: cron ignores files in /etc/cron.d whose name has "
            f"anything but letters, digits, '-' and '_' ({posixpath.basename(cron_file)!r})",
            fix="e.g. cron_file: /etc/cron.d/fleet",
        )
    cron_user = _account(*get("cron_user", defaults.cron_user))
    schedule = _schedule(*get("cron_schedule", defaults.cron_schedule))
    log_file = _outside(*get("log_file", defaults.log_file), data_root)
    min_free_docker, min_free_data = _min_free(raw.get("min_free"))
    base_image = _base_image(raw.get("base_image"))
    allow_writable = _allow_writable(raw.get("allow_writable_data_root"))
    installing = _installing(raw)
    return ProvisionSettings(
        data_root=data_root,
        owner=owner,
        group=group,
        mode=mode,
        dirs=dirs,
        weights_dir=weights_dir,
        weights_port=port,
        weights_bind=bind,
        weights_user=weights_user,
        cron_file=cron_file,
        cron_user=cron_user,
        cron_schedule=schedule,
        log_file=log_file,
        min_free_docker=min_free_docker,
        min_free_data=min_free_data,
        base_image=base_image,
        allow_writable_data_root=allow_writable,
        engine=_engine(raw.get("engine"), data_root),
        install=installing.install,
        nvidia_repository=installing.nvidia_repository,
        apt_lock_timeout=installing.apt_lock_timeout,
        engine_package=installing.engine_package,
        docker_repository=installing.docker_repository,
        docker_users=_docker_users(raw.get("docker_users")),
        pid_file=f"/run/aicron-weights-{port}.pid",
        run_spec=run_spec,
    )


def settings_for_hosts(hosts: Iterable[Host]) -> dict[str, ProvisionSettings]:
    """Every host's settings, or the first invalid one's error naming the host."""
    found: dict[str, ProvisionSettings] = {}
    for host in hosts:
        try:
            found[host.name] = settings_from_vars(host.vars)
        except InputError as exc:
            raise ProvisionSettingsError(f"host {host.name}: {exc.message}", fix=exc.fix) from None
    return found


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _absolute_path(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _ABSOLUTE.fullmatch(value) or "/./" in value + "/":
        raise ProvisionSettingsError(
            f"{where}: expected an absolute path of letters, digits and '._+@-', got {value!r}",
            fix="e.g. /data (no spaces, quotes, '%' or '..')",
        )
    return value


def is_below(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or inside it (both normalised absolute paths)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _outside(value: Any, where: str, data_root: str) -> str:
    """An absolute path that root writes, refused below the data root."""
    path = _absolute_path(value, where)
    if is_below(path, data_root):
        raise ProvisionSettingsError(
            f"{where}: {path} is below the data root {data_root}, which every framework "
            "container can write: root would write through the links planted there",
            fix=f"use a path outside {data_root}, e.g. the default",
        )
    return path


def _relative_path(value: Any, where: str) -> str:
    if (
        not isinstance(value, str)
        or not _RELATIVE.fullmatch(value)
        or any(part in (".", "..") for part in value.split("/"))
    ):
        raise ProvisionSettingsError(
            f"{where}: expected a path below the data root (letters, digits, '._+@-'), "
            f"got {value!r}",
            fix="e.g. pretrained_models or projects/shared",
        )
    return value


def _account(value: Any, where: str) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not ACCOUNT.fullmatch(text):
        raise ProvisionSettingsError(
            f"{where}: expected a user or group name (or a numeric id), got {value!r}",
            fix="e.g. root",
        )
    return text


def _mode(value: Any, where: str) -> int:
    if not isinstance(value, str) or not MODE.fullmatch(value):
        raise ProvisionSettingsError(
            f"{where}: expected an octal mode as a quoted string, got {value!r}",
            fix='write it quoted, e.g. mode: "0755" (unquoted, YAML reads 0755 as the number 493)',
        )
    return int(value, 8)


def _dirs(
    value: Any, where: str, root: str, owner: str, group: str, mode: int
) -> tuple[DirSpec, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ProvisionSettingsError(
            f"{where}: expected a list of directories, got {value!r}",
            fix="e.g. dirs: [checkpoints, datasets, {path: projects, mode: '2775', group: lab}]",
        )
    found: list[DirSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(value):
        at = f"{where}[{index}]"
        if isinstance(entry, Mapping):
            unknown = sorted(set(map(str, entry)) - {"path", "owner", "group", "mode"})
            if unknown:
                raise ProvisionSettingsError(
                    f"{at}.{unknown[0]}: unknown setting", fix="use path, owner, group, mode"
                )
            relative = _relative_path(entry.get("path"), f"{at}.path")
            spec = DirSpec(
                posixpath.join(root, relative),
                _account(entry["owner"], f"{at}.owner") if "owner" in entry else owner,
                _account(entry["group"], f"{at}.group") if "group" in entry else group,
                _mode(entry["mode"], f"{at}.mode") if "mode" in entry else mode,
            )
        else:
            spec = DirSpec(posixpath.join(root, _relative_path(entry, at)), owner, group, mode)
        if spec.path in seen:
            raise ProvisionSettingsError(f"{at}: {spec.path} is listed twice", fix="list it once")
        seen.add(spec.path)
        found.append(spec)
    # Parents before children, so that each mkdir finds its parent.
    return tuple(sorted(found, key=lambda d: d.path.count("/")))


def _port(value: Any, where: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ProvisionSettingsError(
            f"{where}: expected a TCP port, got {value!r}", fix="e.g. 8340"
        )
    return value


def _bind(value: Any, where: str) -> str:
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            if HOSTNAME.fullmatch(value):
                return value
    raise ProvisionSettingsError(
        f"{where}: expected an address to listen on, got {value!r}",
        fix="0.0.0.0 (every interface: the lab's network) or 127.0.0.1 (this host only)",
    )


def _schedule(value: Any, where: str) -> str:
    if not isinstance(value, str) or not CRON_SCHEDULE.fullmatch(value.strip()):
        raise ProvisionSettingsError(
            f"{where}: expected a cron schedule of 5 fields (or @hourly, @daily, ...), "
            f"got {value!r}",
            fix='e.g. cron_schedule: "*/5 * * * *" (quoted: YAML reads a leading * as an alias)',
        )
    return " ".join(value.split())


def parse_size(value: Any, where: str = "size") -> int:
    """Bytes from ``10G``, ``500M``, ``1.5T``, ``10GiB`` or a plain number of bytes."""
    try:
        return units.parse_size(value)
    except ValueError as exc:
        raise ProvisionSettingsError(f"{where}: {exc}", fix="e.g. 10G") from None


def _min_free(entry: tuple[Any, str] | None) -> tuple[int, int]:
    defaults = ProvisionSettings()
    if entry is None:
        return defaults.min_free_docker, defaults.min_free_data
    value, where = entry
    if not isinstance(value, Mapping):
        raise ProvisionSettingsError(
            f"{where}: expected a mapping, got {value!r}",
            fix="e.g. min_free: {docker: 10G, data: 1G}",
        )
    unknown = sorted(set(map(str, value)) - {"docker", "data"})
    if unknown:
        raise ProvisionSettingsError(
            f"{where}.{unknown[0]}: unknown setting", fix="use docker, data"
        )
    docker = value.get("docker")
    data = value.get("data")
    return (
        defaults.min_free_docker if docker is None else parse_size(docker, f"{where}.docker"),
        defaults.min_free_data if data is None else parse_size(data, f"{where}.data"),
    )


def _base_image(entry: tuple[Any, str] | None) -> str | None:
    if entry is None or entry[0] is None:
        return None
    value, where = entry
    if not isinstance(value, str) or not _IMAGE_REF.fullmatch(value):
        raise ProvisionSettingsError(
            f"{where}: expected an image reference, got {value!r}", fix="e.g. cauchy_base:latest"
        )
    return value


_LOG_SIZE = re.compile(r"[1-9][0-9]*[kmg]")


def _engine(entry: tuple[Any, str] | None, data_root: str) -> EngineSettings:
    """``engine``: false (leave daemon.json alone), true, or what to set in it."""
    if entry is None or entry[0] is None or entry[0] is True:
        return EngineSettings()
    value, where = entry
    if value is False:
        return EngineSettings(manage=False)
    example = "engine: {live_restore: true, log_max_size: 100m, log_max_file: 3}, or false"
    if not isinstance(value, Mapping):
        raise ProvisionSettingsError(
            f"{where}: expected a mapping, true or false, got {_type(value)}", fix=example
        )
    known = {"live_restore", "log_max_size", "log_max_file", "restart_timeout", "data_root"}
    unknown = sorted(set(map(str, value)) - known)
    if unknown:
        raise ProvisionSettingsError(
            f"{where}.{unknown[0]}: unknown setting", fix="use " + ", ".join(sorted(known))
        )
    defaults = EngineSettings()
    live = value.get("live_restore", defaults.live_restore)
    if not isinstance(live, bool):
        raise ProvisionSettingsError(f"{where}.live_restore: expected true or false", fix=example)
    size = str(value.get("log_max_size", defaults.log_max_size))
    if not _LOG_SIZE.fullmatch(size):
        raise ProvisionSettingsError(
            f"{where}.log_max_size: {size!r} is not a size Docker's log-opts take",
            fix="a number and k, m or g, e.g. log_max_size: 100m",
        )
    files = value.get("log_max_file", defaults.log_max_file)
    if isinstance(files, bool) or not isinstance(files, int) or not 1 <= files <= 100:
        raise ProvisionSettingsError(
            f"{where}.log_max_file: expected a number of files from 1 to 100, got {files!r}",
            fix="e.g. log_max_file: 3",
        )
    wait = value.get("restart_timeout", defaults.restart_timeout)
    if isinstance(wait, bool) or not isinstance(wait, int) or not 1 <= wait <= 3600:
        raise ProvisionSettingsError(
            f"{where}.restart_timeout: expected seconds from 1 to 3600, got {wait!r}",
            fix="e.g. restart_timeout: 60",
        )
    root = value.get("data_root")
    if root is not None:
        root = _engine_root(root, f"{where}.data_root", data_root)
    return EngineSettings(True, live, size, files, wait, root or "")


def _engine_root(value: Any, where: str, data_root: str) -> str:
    """Docker's data-root: a path of its own, apart from the data root either way."""
    path = _outside(value, where, data_root)
    if is_below(data_root, path):
        raise ProvisionSettingsError(
            f"{where}: {path} would hold the data root {data_root}, which the framework's "
            "containers see: Docker's root is for the engine alone",
            fix="give the engine a directory of its own, e.g. data_root: /srv/docker",
        )
    return path


@dataclass(frozen=True)
class _Installing:
    install: frozenset[str]
    nvidia_repository: AptRepository | None
    apt_lock_timeout: int
    engine_package: str
    docker_repository: AptRepository | None


def _installing(raw: Mapping[str, tuple[Any, str]]) -> _Installing:
    """``install``, the repositories, ``engine_package`` and ``apt_lock_timeout``, checked
    together."""
    install = _install(raw.get("install"))
    nvidia = sources.read(
        _entry(raw, "nvidia_repository"), "nvidia_toolkit" in install, sources.NVIDIA
    )
    where = f"{FLEET_PROVISION}.engine_package"
    package, where = raw.get("engine_package", (ENGINE_PACKAGE, where))
    if package not in ENGINE_PACKAGES:
        raise ProvisionSettingsError(
            f"{where}: {package!r} is no engine fleet installs",
            fix="use docker.io (the distribution's) or docker-ce (Docker's own repository)",
        )
    wants_docker = "engine" in install and package == "docker-ce"
    docker = sources.read(_entry(raw, "docker_repository"), wants_docker, sources.DOCKER)
    where = f"{FLEET_PROVISION}.apt_lock_timeout"
    value, where = raw.get("apt_lock_timeout", (APT_LOCK_TIMEOUT, where))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProvisionSettingsError(
            f"{where}: expected seconds to wait for the dpkg lock, got {value!r}",
            fix="e.g. apt_lock_timeout: 120",
        )
    return _Installing(install, nvidia, value, str(package), docker)


def _entry(raw: Mapping[str, tuple[Any, str]], key: str) -> tuple[Any, str]:
    """A setting's value and where it was set; (None, its name) when it was not."""
    return raw.get(key, (None, f"{FLEET_PROVISION}.{key}"))


def _docker_users(entry: tuple[Any, str] | None) -> tuple[str, ...]:
    """``docker_users``: who joins the docker group."""
    if entry is None or entry[0] is None:
        return ()
    value, where = entry
    if not isinstance(value, list):
        raise ProvisionSettingsError(
            f"{where}: expected a list of user names, got {_type(value)}",
            fix="e.g. docker_users: [deploy]",
        )
    users = tuple(_account(name, f"{where}[{i}]") for i, name in enumerate(value))
    if "root" in users or any(name.isdigit() for name in users):
        raise ProvisionSettingsError(
            f"{where}: name users by name, and not root (root needs no group to use the engine)",
            fix="e.g. docker_users: [deploy]",
        )
    return tuple(dict.fromkeys(users))


def _install(entry: tuple[Any, str] | None) -> frozenset[str]:
    """``install``: what provisioning installs where a host lacks it."""
    if entry is None or entry[0] is None:
        return frozenset()
    value, where = entry
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProvisionSettingsError(
            f"{where}: expected a list, got {_type(value)}",
            fix="e.g. install: [engine, tools, nvidia_toolkit]",
        )
    unknown = sorted(set(value) - set(INSTALLABLE))
    if unknown:
        raise ProvisionSettingsError(
            f"{where}: {unknown[0]!r} is nothing fleet installs",
            fix="use " + ", ".join(INSTALLABLE),
        )
    return frozenset(value)


def _allow_writable(entry: tuple[Any, str] | None) -> bool:
    value, where = entry if entry is not None else (False, "")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ProvisionSettingsError(
            f"{where}: expected true or false, got {value!r}",
            fix="allow_writable_data_root: true (only when others than the data root's "
            "owner are meant to write it)",
        )
    return value

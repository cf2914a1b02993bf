"""``fleet provision``: make a fresh GPU server ready for the framework.

What a provisioned host has (every item is a setting of ``fleet_provision``, see
``inventory/group_vars/all.yml``):

- the shared data tree, ``/data/{checkpoints,datasets,pretrained_models,projects}``, with
  its owner, group and mode. Only the listed directories themselves are created, chowned
  or chmodded (never recursively): existing content is never touched or removed;
- ``/usr/local/lib/fleet/aicron.sh`` (:data:`SCRIPT_PATH`), rendered from the template
  ``fleet/data/aicron.sh``: it keeps the pretrained-weights HTTP service up (``python3 -m
  http.server`` on ``weights_port``, serving ``/data/pretrained_models``) and logs what it
  did to ``/var/log/aicron.log``. ``<data_root>/aicron.sh`` is a copy of it for people to
  read (mode 0644, marked as a copy at its top); nothing runs it;
- a managed block in ``/etc/crontab`` that runs ``/usr/local/lib/fleet/aicron.sh`` on
  ``cron_schedule``;
- the weights service itself, answering (started by running ``aicron.sh`` once);
- an engine that answers and can run what the run spec (``fleet_run``) asks: the runtime,
  GPUs, ulimits; free disk at Docker's root and at the data root: the *preflight*;
- the base image (layers 1-2), shipped with :func:`fleet.ship.push`, so that a
  framework release then only sends its thin top layer.

Nothing a container can write is run by root. The framework's run command mounts the data
root read-write into a root container, so anything below it may have been written or
replaced by any framework image: the script cron runs lives in a root-owned directory
outside it (0755, not 0700, so that a non-root ``cron_user`` can read it; its content is no
secret, only who may change it matters), whose parents must be root's and not writable by
everyone (preflight). A hand-made cron line that runs ``<data_root>/aicron.sh`` fails the
host. ``log_file`` and ``cron_file`` below the data root are refused (root would write
through links planted there). Below the data root, fleet never follows a symbolic link:
directories are walked one component at a time and changed through the directory itself
(:data:`DIR_SCRIPT`), and files are written through a ``mktemp`` file (``O_EXCL``) in the
target's directory that is checked to be the file just made, then renamed over the target
(:data:`WRITE_SCRIPT`), so a link planted by a container redirects nothing.

The data root itself must be writable by its owner only: a ``mode`` that lets a group
(other than ``root``) or everyone write it is refused per host, unless
``allow_writable_data_root: true`` says that this is wanted (for example a lab group that
shares ``/data``). Subdirectories (``projects`` at ``2775`` for a lab group) are not
checked: they hold data, not what cron runs.

Design (pyinfra's): per host one round trip gathers every fact (:data:`FACTS_SCRIPT`, a
constant script that takes the settings as arguments; :func:`parse_facts` is pure). Pure
functions decide: :func:`preflight` (what stops the host; what only deserves a warning) and
:func:`plan` (a list of :class:`Change`: what, why, and the argv to run). Only the needed
changes run; then the facts are gathered again and the plan must be empty (the host
converged), else the host fails with what is still missing. Nothing to do is ``ok``.
``check`` stops after planning; ``diff`` adds unified diffs of the files to the details.
Files are written atomically (see above), their content sent on stdin, and refused when
the file changed since its facts were read.

Where the cron entry goes: ``/etc/crontab`` (setting ``cron_file``), because that is where
the lab's hosts carry the aicron entry today and where their admins look for it, and every
cron reads it; files in ``/etc/cron.d`` are silently ignored by Debian's cron when their name
has a dot or they are group/other writable, and a new ``/etc/cron.d/fleet`` beside an old
hand-made line in ``/etc/crontab`` would run the script twice unnoticed. Sharing the file
with its owner is safe: fleet only rewrites the lines between its markers (``# BEGIN fleet
aicron`` / ``# END fleet aicron``) and keeps every other byte; a hand-made aicron line
outside the block is never edited: it is a warning, or a failure when it runs the copy in
the data root. ``cron_file: /etc/cron.d/fleet``
works the same way for those who prefer it. A host provisioned before the script moved
(its block runs ``/data/aicron.sh``) converges on the next run: the block is rewritten to
the new path and ``/data/aicron.sh`` becomes the copy.

Errors: invalid settings raise :class:`ProvisionSettingsError` (an ``InputError``, exit 4)
before any host is touched; a host that fails its preflight or a change is ``failed`` with
the reason and the fix, and never stops the others.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import difflib
import hashlib
import ipaddress
import json
import posixpath
import re
import shlex
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fleet import units
from fleet.errors import (
    CommandError,
    CronBlockError,
    InputError,
    ProvisionSettingsError,
    UsageError,
)
from fleet.hosts import settings as layered
from fleet.hosts.model import Host
from fleet.images import build as images
from fleet.ops import facts as facts_mod
from fleet.ops.facts import Disk, HostFacts
from fleet.ops.runspec import RunSpec
from fleet.programs import program
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, Runner
from fleet.ship.plan import PushOptions
from fleet.ship.push import push
from fleet.ship.state import engine_fix
from fleet.ssh.base import Transport, gathered, parses_host_output

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


# -- settings ---------------------------------------------------------------------------
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
    }
)
_PATH_PART = r"[A-Za-z0-9_+@-][A-Za-z0-9._+@-]*"
_ABSOLUTE = re.compile(rf"/{_PATH_PART}(?:/{_PATH_PART})*")
_RELATIVE = re.compile(rf"{_PATH_PART}(?:/{_PATH_PART})*")
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10}")
_MODE = re.compile(r"0?[0-7]{3,4}")
_CRON_FIELD = r"[0-9A-Za-z*/,-]+"
_SCHEDULE = re.compile(
    rf"{_CRON_FIELD}(?:[ \t]+{_CRON_FIELD}){{4}}"
    r"|@(?:reboot|yearly|annually|monthly|weekly|daily|midnight|hourly)"
)
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_IMAGE_REF = re.compile(r"[A-Za-z0-9][^\s]*")
_CRON_D_NAME = re.compile(r"[A-Za-z0-9_-]+")
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
        deep={"min_free"},
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
    if _below(SCRIPT_DIR, data_root) or _below(data_root, SCRIPT_DIR):
        raise ProvisionSettingsError(
            f"{get('data_root', '')[1]}: {data_root} would hold {SCRIPT_DIR}, where the script "
            "cron runs as root lives; every framework container can write the data root",
            fix="use a directory of its own, e.g. data_root: /data",
        )
    cron_file = _outside(*get("cron_file", defaults.cron_file), data_root)
    if posixpath.dirname(cron_file) == "/etc/cron.d" and not _CRON_D_NAME.fullmatch(
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
    allow_writable, allow_where = get("allow_writable_data_root", False)
    if not isinstance(allow_writable, bool):
        raise ProvisionSettingsError(
            f"{allow_where}: expected true or false, got {allow_writable!r}",
            fix="allow_writable_data_root: true (only when others than the data root's "
            "owner are meant to write it)",
        )
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


def _below(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or inside it (both normalised absolute paths)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _outside(value: Any, where: str, data_root: str) -> str:
    """An absolute path that root writes, refused below the data root."""
    path = _absolute_path(value, where)
    if _below(path, data_root):
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
    if not isinstance(text, str) or not _ACCOUNT.fullmatch(text):
        raise ProvisionSettingsError(
            f"{where}: expected a user or group name (or a numeric id), got {value!r}",
            fix="e.g. root",
        )
    return text


def _mode(value: Any, where: str) -> int:
    if not isinstance(value, str) or not _MODE.fullmatch(value):
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
            if _HOSTNAME.fullmatch(value):
                return value
    raise ProvisionSettingsError(
        f"{where}: expected an address to listen on, got {value!r}",
        fix="0.0.0.0 (every interface: the lab's network) or 127.0.0.1 (this host only)",
    )


def _schedule(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _SCHEDULE.fullmatch(value.strip()):
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


# -- the script and the cron block ------------------------------------------------------
def script_template() -> str:
    """The aicron.sh template shipped with fleet."""
    return resources.files("fleet").joinpath("data", SCRIPT_NAME).read_text(encoding="utf-8")


def render_script(settings: ProvisionSettings, template: str | None = None) -> bytes:
    """aicron.sh for these settings: each placeholder replaced by a shell-quoted value."""
    text = script_template() if template is None else template
    values = {
        "SELF": settings.script_path,
        "WEIGHTS_DIR": settings.weights_dir,
        "WEIGHTS_PORT": str(settings.weights_port),
        "WEIGHTS_BIND": settings.weights_bind,
        "WEIGHTS_USER": settings.weights_user,
        "URL": settings.weights_url,
        "LOG": settings.log_file,
        "PID_FILE": settings.pid_file,
    }
    for name, value in values.items():
        text = text.replace(f"__FLEET_{name}__", shlex.quote(value))
    if "__FLEET_" in text:
        leftover = re.search(r"__FLEET_[A-Z_]*__", text)
        raise ValueError(
            f"aicron.sh template has an unknown placeholder {leftover and leftover[0]}"
        )
    return text.encode()


def render_copy(settings: ProvisionSettings, template: str | None = None) -> bytes:
    """The copy in the data root: the script with :data:`COPY_NOTE` after its first line."""
    script = render_script(settings, template)
    first, newline, rest = script.partition(b"\n")
    return first + newline + COPY_NOTE.encode() + rest


def cron_block(settings: ProvisionSettings) -> bytes:
    """fleet's block in the cron file, markers included, ending with a newline."""
    return (
        f"{BEGIN_MARKER}\n"
        "# Managed by 'fleet provision' (fleet_provision.cron_schedule); edits here are replaced.\n"
        f"{settings.cron_line}\n"
        f"{END_MARKER}\n"
    ).encode()


def _lines(content: bytes) -> list[tuple[int, bytes]]:
    """(offset, line with its newline) of every line, split on ``\\n`` only, as cron does."""
    found: list[tuple[int, bytes]] = []
    offset = 0
    for match in re.finditer(rb"[^\n]*\n|[^\n]+\Z", content):
        found.append((offset, match[0]))
        offset += len(match[0])
    return found


def find_block(content: bytes) -> tuple[int, int] | None:
    """Byte span of fleet's block (BEGIN line start to END line end), None when absent.

    Raises :class:`CronBlockError` when the markers are not exactly one BEGIN followed by
    one END: fleet then refuses to guess which lines are its own.
    """
    begins: list[tuple[int, int]] = []
    ends: list[tuple[int, int]] = []
    for number, (offset, line) in enumerate(_lines(content), start=1):
        text = line.strip()
        if text == BEGIN_MARKER.encode():
            begins.append((number, offset))
        elif text == END_MARKER.encode():
            ends.append((number, offset + len(line)))
    if not begins and not ends:
        return None
    if len(begins) == 1 and len(ends) == 1 and begins[0][0] < ends[0][0]:
        return begins[0][1], ends[0][1]
    where = ", ".join(
        [f"{BEGIN_MARKER!r} at line {n}" for n, _ in begins]
        + [f"{END_MARKER!r} at line {n}" for n, _ in ends]
    )
    raise CronBlockError(f"fleet's markers are not one well-formed block: {where}")


def apply_block(content: bytes, block: bytes) -> bytes:
    """``content`` with fleet's block replaced in place, or appended; every other byte kept.

    A last line without its newline gets one before an appended block (cron ignores an
    unterminated last line anyway).
    """
    span = find_block(content)
    if span is None:
        if content and not content.endswith(b"\n"):
            content += b"\n"
        return content + block
    start, end = span
    return content[:start] + block + content[end:]


def _other_aicron_lines(content: bytes, span: tuple[int, int] | None) -> list[int]:
    """Line numbers outside fleet's block that also run aicron.sh (a hand-made entry)."""
    found = []
    for number, (offset, line) in enumerate(_lines(content), start=1):
        inside = span is not None and span[0] <= offset < span[1]
        text = line.strip()
        if not inside and SCRIPT_NAME.encode() in text and not text.startswith(b"#"):
            found.append(number)
    return found


def unified_diff(path: str, before: bytes | None, after: bytes) -> str:
    """A unified diff of a file's content (``/dev/null`` before a new file)."""
    label = path
    old = (before or b"").decode("utf-8", "replace").splitlines(keepends=True)
    new = after.decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(
        old,
        new,
        fromfile=f"{label} (before)" if before is not None else "/dev/null",
        tofile=f"{label} (after)",
    )
    text = ""
    for line in lines:
        text += line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
    return text


def label_diff(text: str, host: str) -> str:
    """A diff's file names prefixed with the host, as ``lab1:/etc/crontab``."""
    lines = []
    for line in text.splitlines(keepends=True):
        named = line.startswith(("--- /", "+++ /")) and not line.startswith("--- /dev/null")
        lines.append(f"{line[:4]}{host}:{line[4:]}" if named else line)
    return "".join(lines)


# -- facts ------------------------------------------------------------------------------
# Appended to fleet.ops.facts.SCRIPT (engine, runtimes, nvidia-smi, disk at Docker's root):
# one round trip. Settings arrive as arguments, never interpolated: $1 cron file, $2
# script, $3 owner, $4 group, $5 weights user, $6 weights URL, $7 data root, $8 the
# script's copy, then the directories to stat. File contents travel base64-encoded, so
# every byte survives. Below the data root nothing is followed: a symbolic link there shows
# as one (the data root itself may be the admin's link to a bigger disk).
#   p_lib: the script's directory (not followed) and each of its parents (followed);
#   p_lib_real: that directory's parent and the data root, links resolved.
FACTS_SCRIPT = program("provision_facts.sh")


@dataclass(frozen=True)
class PathState:
    """What ``stat -L`` says about a path."""

    kind: str  # "directory", "regular file", ...
    mode: int
    uid: int
    gid: int
    user: str = ""
    group: str = ""


@dataclass(frozen=True)
class FileState:
    """A file's metadata and (when readable and small enough) its bytes."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    sha256: str = ""
    content: bytes | None = None

    @property
    def complete(self) -> bool:
        """Whether ``content`` is the whole file."""
        return self.content is not None and len(self.content) == self.size


@dataclass(frozen=True)
class ProvisionFacts:
    """What one host is and has, as far as provisioning is concerned."""

    host: HostFacts
    uid: int | None = None
    user: str = ""
    owner_uid: int | None = None
    group_gid: int | None = None
    weights_uid: int | None = None  # None: no weights user set, or it does not exist
    weights_user_exists: bool = True
    paths: Mapping[str, PathState | None] = field(default_factory=dict)  # None: absent
    script: FileState | None = None
    copy: FileState | None = None
    # The script's directory and its parents (None: absent; not a key: not reported).
    lib: Mapping[str, PathState | None] = field(default_factory=dict)
    lib_parent_real: str = ""  # the script directory's parent, links resolved
    data_root_real: str = ""
    cron: FileState | None = None
    daemon_json: FileState | None = None
    tools: frozenset[str] = frozenset()
    nvidia_cdi: bool = False
    nvidia_smi_output: str = ""
    cron_running: bool | None = None  # None: cannot tell
    logging_driver: str = ""
    limits_source: str = ""
    hard_limits: Mapping[str, int | None] = field(default_factory=dict)  # None: unlimited
    cap_sys_resource: bool | None = None
    data_disk: Disk | None = None
    weights_up: bool = False
    weights_probe: str = ""


def gather(
    transport: Transport, settings: ProvisionSettings, timeout: float | None = None
) -> ProvisionFacts:
    """A host's provisioning facts, in one round trip."""
    paths = [d.path for d in settings.managed_dirs]
    argv = ["sh", "-c", FACTS_SCRIPT, "fleet-provision-facts", *facts_arguments(settings)]
    ran = transport.run(argv, timeout=timeout, check=False)
    return parse_facts(ran.stdout, paths)


def facts_arguments(settings: ProvisionSettings) -> list[str]:
    """The positional arguments of :data:`FACTS_SCRIPT` for these settings."""
    return [
        settings.cron_file,
        settings.script_path,
        settings.owner,
        settings.group,
        settings.weights_user,
        settings.weights_url,
        settings.data_root,
        settings.copy_path,
        *(d.path for d in settings.managed_dirs),
    ]


# /proc/PID/limits row -> docker's --ulimit name.
_LIMIT_ROWS = {
    "Max cpu time": "cpu",
    "Max file size": "fsize",
    "Max data size": "data",
    "Max stack size": "stack",
    "Max core file size": "core",
    "Max resident set": "rss",
    "Max processes": "nproc",
    "Max open files": "nofile",
    "Max locked memory": "memlock",
    "Max file locks": "locks",
    "Max pending signals": "sigpending",
    "Max msgqueue size": "msgqueue",
    "Max nice priority": "nice",
    "Max realtime priority": "rtprio",
    "Max realtime timeout": "rttime",
}
_BYTE_LIMITS = frozenset({"core", "data", "fsize", "memlock", "msgqueue", "rss", "stack"})
_LIMIT_LINE = re.compile(r"(Max [a-z ]+?)\s{2,}(\S+)\s+(\S+)")


def _int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _id(text: str) -> int:
    """A uid or gid; -1 when unreadable."""
    found = _int(text)
    return -1 if found is None else found


def _first(parts: Mapping[str, list[str]], name: str) -> str:
    lines = parts.get(name) or [""]
    return lines[0].strip()


def _file_state(lines: list[str]) -> FileState | None:
    if not lines or lines[0].strip() == "absent":
        return None
    cells = lines[0].split("|")
    if len(cells) != 5:
        # stat failed: unreadable path; say so through an unknown kind.
        return FileState(kind=f"unreadable: {lines[0].strip()}", mode=0, uid=-1, gid=-1, size=0)
    kind, mode, uid, gid, size = cells
    state = FileState(
        kind=kind,
        mode=int(mode, 8) if re.fullmatch(r"[0-7]+", mode) else 0,
        uid=_id(uid),
        gid=_id(gid),
        size=_int(size) or 0,
    )
    if len(lines) >= 2 and re.fullmatch(r"[0-9a-f]{64}", lines[1].strip()):
        content: bytes | None = None
        encoded = lines[2].strip() if len(lines) >= 3 else ""
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            content = None
        state = dataclasses.replace(state, sha256=lines[1].strip(), content=content)
    return state


def _path_states(lines: list[str], paths: Sequence[str]) -> dict[str, PathState | None]:
    found: dict[str, PathState | None] = {}
    for line in lines:
        cells = line.strip().split("|")
        index = _int(cells[0]) if cells else None
        if index is None or not 0 <= index < len(paths):
            continue
        if cells[1:] == ["absent"]:
            found[paths[index]] = None
        elif len(cells) == 7 and re.fullmatch(r"[0-7]+", cells[2]):
            found[paths[index]] = PathState(
                kind=cells[1],
                mode=int(cells[2], 8),
                uid=_id(cells[3]),
                gid=_id(cells[4]),
                user=cells[5],
                group=cells[6],
            )
        else:
            found[paths[index]] = PathState(
                kind=f"unreadable: {'|'.join(cells[1:])}", mode=0, uid=-1, gid=-1
            )
    return found


def _lib_states(lines: list[str]) -> dict[str, PathState | None]:
    found: dict[str, PathState | None] = {}
    for line in lines:
        cells = line.strip().split("|")
        if not cells[0].startswith("/"):
            continue
        if cells[1:] == ["absent"]:
            found[cells[0]] = None
        elif len(cells) == 5 and re.fullmatch(r"[0-7]+", cells[2]):
            found[cells[0]] = PathState(cells[1], int(cells[2], 8), _id(cells[3]), _id(cells[4]))
        else:
            found[cells[0]] = PathState(
                f"unreadable: {'|'.join(cells[1:])}", mode=0, uid=-1, gid=-1
            )
    return found


def _limits(lines: list[str]) -> tuple[str, dict[str, int | None], bool | None]:
    source = ""
    hard: dict[str, int | None] = {}
    caps: dict[str, int] = {}
    for line in lines:
        if line.startswith("source "):
            source = line.split(" ", 1)[1].strip()
        elif line.startswith(("CapEff:", "CapBnd:")):
            name, _, value = line.partition(":")
            try:
                caps[name] = int(value.strip(), 16)
            except ValueError:
                continue
        else:
            match = _LIMIT_LINE.match(line)
            if match and match[1] in _LIMIT_ROWS:
                value_text = match[3]
                hard[_LIMIT_ROWS[match[1]]] = (
                    None if value_text == "unlimited" else _int(value_text)
                )
    # dockerd's own effective set; from a shell, what a root daemon could have at most.
    mask = caps.get("CapEff") if source == "dockerd" else caps.get("CapBnd")
    capable = None if mask is None else bool(mask >> CAP_SYS_RESOURCE & 1)
    return source, hard, capable


def _disk(lines: list[str]) -> Disk | None:
    for line in lines:
        words = line.split()
        if len(words) >= 6 and words[1].isdigit() and words[3].isdigit():
            return Disk(path=words[5], total=int(words[1]), free=int(words[3]))
    return None


@parses_host_output("the provisioning facts")
def parse_facts(text: str, paths: Sequence[str]) -> ProvisionFacts:
    """Facts from the output of :data:`FACTS_SCRIPT`; ``paths`` are the directories asked."""
    parts = {
        name: [line for line in lines if line.strip()]
        for name, lines in facts_mod.sections(gathered(text, "the provisioning facts")).items()
    }
    host = facts_mod.parse(text)
    ids = parts.get("p_id", [])
    uid = _int(ids[0]) if ids else None
    owner = _first(parts, "p_owner")
    group = _first(parts, "p_group")
    weights = _first(parts, "p_weights_user")
    logging_driver = ""
    for line in parts.get("docker_info", []):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError, AttributeError):
                logging_driver = str(json.loads(line).get("LoggingDriver", ""))
    crond = _first(parts, "p_crond")
    source, hard, capable = _limits(parts.get("p_limits", []))
    smi = parts.get("nvidia_smi", [])
    probe = _first(parts, "p_weights")
    real = [line.strip() for line in parts.get("p_lib_real", [])]
    real = ["" if line == "absent" else line for line in real]
    real += ["", ""]
    return ProvisionFacts(
        host=host,
        uid=uid,
        user=ids[1].strip() if len(ids) > 1 else "",
        owner_uid=_int(owner),
        group_gid=_int(group),
        weights_uid=_int(weights),
        weights_user_exists=weights != "absent",
        paths=_path_states(parts.get("p_paths", []), paths),
        script=_file_state(parts.get("p_script", [])),
        copy=_file_state(parts.get("p_copy", [])),
        lib=_lib_states(parts.get("p_lib", [])),
        lib_parent_real=real[0],
        data_root_real=real[1],
        cron=_file_state(parts.get("p_cron", [])),
        daemon_json=_file_state(parts.get("p_daemon_json", [])),
        tools=frozenset(line.strip() for line in parts.get("p_tools", [])),
        nvidia_cdi=bool(parts.get("p_cdi")),
        nvidia_smi_output="\n".join(smi),
        cron_running=None if crond in ("unknown", "") else crond != "none",
        logging_driver=logging_driver,
        limits_source=source,
        hard_limits=hard,
        cap_sys_resource=capable,
        data_disk=_disk(parts.get("p_df_data", [])),
        weights_up=probe == "up" or probe.startswith("up "),
        weights_probe=probe,
    )


# -- preflight --------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """Why a host cannot be provisioned (or run the framework), and the fix."""

    message: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {"message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Preflight:
    """The verdict on a host before anything changes: failures stop it, warnings do not."""

    failures: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures


def preflight(settings: ProvisionSettings, facts: ProvisionFacts) -> Preflight:
    """Everything that would stop this host, and what is only worth a warning (pure)."""
    failures: list[Problem] = []
    warnings: list[str] = []
    _check_engine(settings, facts, failures, warnings)
    _check_disk(settings, facts, failures)
    _check_files(settings, facts, failures, warnings)
    _check_accounts(settings, facts, failures)
    _check_tools(settings, facts, failures, warnings)
    if not failures and facts.uid not in (None, 0) and plan(settings, facts):
        failures.append(
            Problem(
                f"provisioning needs root (it writes {settings.cron_file} and chowns "
                f"{settings.data_root}); connected as {facts.user or facts.uid}",
                "set ansible_become: true for this host (sudo -n), or connect as root",
            )
        )
    return Preflight(tuple(failures), tuple(warnings))


def _check_engine(
    settings: ProvisionSettings,
    facts: ProvisionFacts,
    failures: list[Problem],
    warnings: list[str],
) -> None:
    host = facts.host
    if not host.engine_ok:
        failures.append(
            Problem(
                f"Docker engine not usable: {host.engine_error or 'docker info failed'}",
                engine_fix(host.engine_error),
            )
        )
        return
    _check_log_rotation(facts, warnings)
    spec = settings.run_spec
    runtimes = ", ".join(host.runtimes) or "none"
    if spec.runtime is not None and spec.runtime not in host.runtimes:
        if spec.runtime == "nvidia":
            failures.append(
                Problem(
                    "the run spec asks for --runtime nvidia, but the engine has no 'nvidia' "
                    f"runtime (it has: {runtimes})",
                    "install the NVIDIA Container Toolkit, run 'nvidia-ctk runtime configure "
                    "--runtime=docker' and restart Docker; for a host without GPU, set "
                    "fleet_run_overrides: {runtime: null} for it",
                )
            )
        else:
            failures.append(
                Problem(
                    f"the run spec asks for --runtime {spec.runtime}, which the engine does not "
                    f"have (it has: {runtimes})",
                    "register that runtime in /etc/docker/daemon.json and restart Docker, or "
                    "change fleet_run.runtime for this host",
                )
            )
    if spec.gpus is not None and not (
        host.has_nvidia_runtime
        or "nvidia-container-runtime-hook" in facts.tools
        or facts.nvidia_cdi
    ):
        failures.append(
            Problem(
                f"the run spec asks for --gpus {spec.gpus}, but the NVIDIA Container Toolkit is "
                "missing (no nvidia-container-runtime-hook, no 'nvidia' runtime, no CDI spec)",
                "install the NVIDIA Container Toolkit and restart Docker; for a host without "
                "GPU, set fleet_run_overrides: {gpus: null} for it",
            )
        )
    if spec.runtime == "nvidia" or spec.gpus is not None:
        if not host.nvidia_smi:
            failures.append(
                Problem(
                    "the run spec needs a GPU, but nvidia-smi is not installed (no NVIDIA driver)",
                    "install the NVIDIA driver, so that 'nvidia-smi' lists the GPUs; for a host "
                    "without GPU, set fleet_run_overrides: {runtime: null, gpus: null} for it",
                )
            )
        elif not host.gpus:
            output = facts.nvidia_smi_output.strip().splitlines()[:2]
            failures.append(
                Problem(
                    f"nvidia-smi lists no GPU: {' / '.join(output) or 'no output'}",
                    "run 'nvidia-smi' on the host; a driver/library version mismatch needs a "
                    "reboot, a missing device a look at the hardware",
                )
            )
    _check_ulimits(spec, facts, failures)


def _check_log_rotation(facts: ProvisionFacts, warnings: list[str]) -> None:
    daemon: Mapping[str, Any] = {}
    state = facts.daemon_json
    if state is not None and state.content is not None:
        try:
            loaded = json.loads(state.content or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            warnings.append("/etc/docker/daemon.json is not valid JSON")
            return
        daemon = loaded if isinstance(loaded, Mapping) else {}
    driver = str(daemon.get("log-driver") or facts.logging_driver or "json-file")
    options = daemon.get("log-opts")
    if driver == "json-file" and not (isinstance(options, Mapping) and options.get("max-size")):
        warnings.append(
            "container logs are not rotated: the json-file log driver has no max-size; set "
            '"log-opts": {"max-size": "100m", "max-file": "3"} in /etc/docker/daemon.json '
            "(or use the 'local' driver) and restart Docker"
        )


def _ulimit_hard(value: str) -> int | None:
    """The hard limit a ``--ulimit`` value asks for; None is unlimited."""
    hard = value.rsplit(":", maxsplit=1)[-1]
    number = int(hard)
    return None if number < 0 else number


def _check_ulimits(spec: RunSpec, facts: ProvisionFacts, failures: list[Problem]) -> None:
    if facts.cap_sys_resource:
        return  # the runtime may raise any hard limit
    where = "the engine's" if facts.limits_source == "dockerd" else "the host's"
    for name, value in spec.ulimits:
        if name not in facts.hard_limits:
            continue
        host_hard = facts.hard_limits[name]
        wanted = _ulimit_hard(value)
        if host_hard is None or (wanted is not None and wanted <= host_hard):
            continue
        shown = "unlimited" if wanted is None else str(wanted)
        limit = f"{host_hard} bytes" if name in _BYTE_LIMITS else str(host_hard)
        failures.append(
            Problem(
                f"host cannot grant {name}={shown}: {where} hard limit is {limit} and it "
                "lacks CAP_SYS_RESOURCE to raise it",
                f"raise the limit for Docker (systemd: Limit{name.upper()}=infinity in "
                "docker.service and containerd.service, then restart them); for a host that "
                f"cannot, drop it: fleet_run_overrides: {{ulimits: {{{name}: null}}}}",
            )
        )


def _check_disk(
    settings: ProvisionSettings, facts: ProvisionFacts, failures: list[Problem]
) -> None:
    checks = (
        ("docker", facts.host.disk_docker, settings.min_free_docker, "Docker's root"),
        ("data", facts.data_disk, settings.min_free_data, settings.data_root),
    )
    for key, disk, minimum, label in checks:
        if disk is None or disk.free >= minimum:
            continue
        failures.append(
            Problem(
                f"refused: only {units.format_size(disk.free)} free at {label} (filesystem of "
                f"{disk.path}), below fleet_provision.min_free.{key} = {units.format_size(minimum)}",
                "free space on the host (docker system prune, old checkpoints) or grow the "
                f"disk; or lower fleet_provision.min_free.{key}",
            )
        )


def _check_files(
    settings: ProvisionSettings,
    facts: ProvisionFacts,
    failures: list[Problem],
    warnings: list[str],
) -> None:
    for spec in settings.managed_dirs:
        state = facts.paths.get(spec.path)
        if state is not None and state.kind != "directory":
            failures.append(
                Problem(
                    f"{spec.path} exists and is not a directory ({state.kind}); fleet does not "
                    "replace it",
                    f"move it away on the host, or change fleet_provision for {spec.path}",
                )
            )
    script = facts.script
    if script is not None and (script.kind not in ("regular file", "regular empty file")):
        failures.append(
            Problem(
                f"{settings.script_path} exists and is not a regular file ({script.kind})",
                "move it away on the host",
            )
        )
    cron = facts.cron
    if cron is not None:
        if cron.kind not in ("regular file", "regular empty file") or cron.content is None:
            failures.append(
                Problem(
                    f"cannot read {settings.cron_file} ({cron.kind})",
                    "check the file on the host; fleet needs to read it to edit its block",
                )
            )
        elif not cron.complete:
            failures.append(
                Problem(
                    f"{settings.cron_file} is larger than {CRON_MAX_BYTES} bytes; fleet does "
                    "not edit it",
                    "shorten it, or use cron_file: /etc/cron.d/fleet",
                )
            )
        else:
            content = cron.content or b""
            try:
                span = find_block(content)
            except CronBlockError as exc:
                failures.append(
                    Problem(
                        f"{settings.cron_file}: {exc}",
                        "fix the markers by hand (one BEGIN line, then one END line), or remove "
                        "them and the lines between; fleet then adds its block again",
                    )
                )
            else:
                _check_other_lines(settings, content, span, failures, warnings)
    copy = facts.copy
    if copy is not None and copy.kind == "directory":
        warnings.append(
            f"{settings.copy_path} is a directory: the readable copy of {settings.script_path} "
            "is not written there (nothing runs it; remove the directory when convenient)"
        )
    if _writable_by_others(settings) and not settings.allow_writable_data_root:
        state = facts.paths.get(settings.data_root)
        now = (
            f"; on the host now: mode {state.mode:04o}, owner {state.user or state.uid}:"
            f"{state.group or state.gid}"
            if state is not None and state.kind == "directory"
            else ""
        )
        failures.append(
            Problem(
                f"refused: the data root {settings.data_root} would be writable by others than "
                f"its owner: mode {settings.mode:04o}, owner {settings.owner}:{settings.group} "
                f"(fleet_provision.mode/owner/group){now}",
                f'set fleet_provision.mode: "{settings.mode & ~0o022:04o}" (fleet then does the '
                f"chmod), or, when others than {settings.owner} are meant to write it, "
                "fleet_provision.allow_writable_data_root: true",
            )
        )
    _check_script_home(settings, facts, failures, warnings)


def _check_other_lines(
    settings: ProvisionSettings,
    content: bytes,
    span: tuple[int, int] | None,
    failures: list[Problem],
    warnings: list[str],
) -> None:
    """Hand-made aicron lines: one that runs the copy in the data root fails the host."""
    others = _other_aicron_lines(content, span)
    lines = _lines(content)
    runs_copy = [n for n in others if settings.copy_path.encode() in lines[n - 1][1]]
    if runs_copy:
        failures.append(
            Problem(
                f"{settings.cron_file}: line(s) {', '.join(map(str, runs_copy))} outside fleet's "
                f"block run {settings.copy_path}, which every framework container can write: "
                "whatever a container appends to it would run on this host",
                f"remove those lines from {settings.cron_file} (fleet's block runs "
                f"{settings.script_path}, root's own)",
            )
        )
    rest = [n for n in others if n not in runs_copy]
    if rest:
        warnings.append(
            f"{settings.cron_file}: line(s) {', '.join(map(str, rest))} outside "
            "fleet's block also run aicron.sh; fleet leaves them alone (runs are "
            "serialised by flock); remove them when convenient"
        )


def _writable_by_others(settings: ProvisionSettings) -> bool:
    """Whether the data root, as configured, lets others than its owner write it.

    Sticky or not: everyone may create names in a sticky directory. A group-writable root
    is fine when the group is root's, whose members are root-equivalent by convention.
    """
    mode = settings.mode
    return bool(mode & 0o002 or (mode & 0o020 and settings.group not in ("root", "0")))


def _check_script_home(
    settings: ProvisionSettings,
    facts: ProvisionFacts,
    failures: list[Problem],
    warnings: list[str],
) -> None:
    """The script cron runs: in a directory that only root can change, outside the data root."""
    home = facts.lib.get(settings.script_dir)
    if home is not None and home.kind != "directory":
        failures.append(
            Problem(
                f"{settings.script_dir} exists and is not a directory ({home.kind}); cron's script must "
                "live in a directory of root's own",
                "move it away on the host; fleet then creates the directory",
            )
        )
    for path, state in facts.lib.items():
        if path == settings.script_dir or state is None:
            continue
        if state.kind != "directory" or state.uid != 0 or state.mode & 0o002:
            failures.append(
                Problem(
                    f"{path} ({state.kind}, mode {state.mode:04o}, uid {state.uid}) holds "
                    f"{settings.script_path}, which cron runs as root, but is not a directory "
                    "of root's that others cannot write",
                    f"chown root {path} and chmod o-w {path} on the host",
                )
            )
        elif state.mode & 0o020 and state.gid != 0:
            warnings.append(
                f"{path} is writable by group {state.gid}: its members can replace "
                f"{settings.script_path}, which cron runs as root (chmod g-w {path})"
            )
    real = facts.lib_parent_real and posixpath.join(
        facts.lib_parent_real, posixpath.basename(settings.script_dir)
    )
    if real and facts.data_root_real and _below(real, facts.data_root_real):
        failures.append(
            Problem(
                f"{settings.script_dir} is really {real}, inside the data root {facts.data_root_real} "
                "(through a symbolic link), which every framework container can write",
                f"make {posixpath.dirname(settings.script_dir)} a directory outside the data root",
            )
        )


def _check_accounts(
    settings: ProvisionSettings, facts: ProvisionFacts, failures: list[Problem]
) -> None:
    # The data root's owner and group are resolved on the host; a directory's own (other)
    # owner is left to chown, whose error names it.
    for kind, name, resolved in (
        ("owner", settings.owner, facts.owner_uid),
        ("group", settings.group, facts.group_gid),
    ):
        if resolved is None and not name.isdigit():
            failures.append(
                Problem(
                    f"the {kind} {name!r} of {settings.data_root} does not exist on the host",
                    f"create it on the host, or change fleet_provision.{kind}",
                )
            )
    if settings.weights_user and not facts.weights_user_exists:
        failures.append(
            Problem(
                f"the weights service's user {settings.weights_user!r} does not exist on the host",
                "create it, or change fleet_provision.weights_user",
            )
        )


def _check_tools(
    settings: ProvisionSettings,
    facts: ProvisionFacts,
    failures: list[Problem],
    warnings: list[str],
) -> None:
    needed = {
        "python3": "python3 (the weights service is python3 -m http.server)",
        "flock": "flock (util-linux: serialises aicron.sh runs)",
        "setsid": "setsid (util-linux: detaches the weights service)",
    }
    if settings.weights_user and settings.cron_user in ("root", "0"):
        needed["setpriv"] = "setpriv (util-linux: runs the weights service unprivileged)"
    for tool, why in needed.items():
        if tool not in facts.tools:
            failures.append(
                Problem(
                    f"{tool} is missing on the host: aicron.sh needs {why}",
                    f"install it (Debian: apt-get install {'python3' if tool == 'python3' else 'util-linux'})",
                )
            )
    if facts.cron_running is False:
        warnings.append(
            "no cron daemon is running: aicron.sh will not run on its schedule "
            "(systemctl enable --now cron)"
        )


# -- planning ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One remote command: an argv (quoted, never a shell string) and its stdin."""

    argv: tuple[str, ...]
    stdin: bytes | None = None
    label: str = ""  # how to show it, when the argv is a long constant script

    def __str__(self) -> str:
        if self.label:
            return self.label
        text = shlex.join(self.argv)
        return text if self.stdin is None else f"{text} <({len(self.stdin)} bytes)"


@dataclass(frozen=True)
class Change:
    """One thing a host still needs: what, why, the commands that do it, a diff for files."""

    kind: str
    target: str
    what: str
    why: str
    commands: tuple[Command, ...]
    diff: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "what": self.what,
            "why": self.why,
            "commands": [str(c) for c in self.commands],
        }


# Writes stdin to $1 atomically with mode $2, root's, but only when the file is still what
# the facts saw ($3: its sha256, "absent", or "any" for the copy nobody runs); a concurrent
# edit is never overwritten. It works inside the target's directory (its own links
# followed, as the admin made them) and never through a name that may have been swapped:
# mktemp creates the temporary file there with O_EXCL; where others can write the
# directory (the data root: every framework container can), that name may be replaced by a
# link before it is opened, so the open descriptor must be that very file (same inode, one
# link, not a link) and its mode and owner are set through the descriptor. The rename
# replaces a link at the target instead of writing through it (-T: nor into a directory).
# The temporary file is removed on any failure or signal.
WRITE_SCRIPT = program("provision_write.sh")


def write_command(
    path: str, content: bytes, mode: int, expected: FileState | str | None
) -> Command:
    """The command that writes ``content`` to ``path`` (see :data:`WRITE_SCRIPT`).

    ``expected`` is what the facts saw (None: no file); the string ``"any"`` writes whatever
    is there (the copy in the data root, which nothing runs).
    """
    if isinstance(expected, str):
        seen = expected
    else:
        seen = "absent" if expected is None else expected.sha256
    argv = ("sh", "-c", WRITE_SCRIPT, "fleet-write", path, f"{mode:04o}", seen)
    unless = "" if seen == "any" else ", unless changed"
    label = f"write {path} (root, mode {mode:04o}, {len(content)} bytes, atomically{unless})"
    return Command(argv, content, label)


# Creates directory $2 (or only fixes it), then chowns it to $3 and chmods it to $4 (either
# may be empty: left alone). $1 is the data root: it and its parents are followed as the
# admin made them (a link to a bigger disk); below it, every component is entered with
# "cd -P" and checked to be where it should be, so a link planted by a container fails
# the change instead of redirecting a chown or chmod; created and changed through the
# directory itself (the current one), never through its name.
DIR_SCRIPT = program("provision_dir.sh")


def dir_command(
    root: str, path: str, owner: str = "", mode: int | None = None, create: bool = False
) -> Command:
    """Creates or fixes ``path`` (``root`` or below it) following no link below ``root``.

    See :data:`DIR_SCRIPT`; ``owner`` empty and ``mode`` None leave them alone.
    """
    # Five digits: GNU chmod keeps a directory's setgid bit on "0755" but sets it exactly on "00755".
    mode_text = "" if mode is None else f"0{mode:04o}"
    argv = ("sh", "-c", DIR_SCRIPT, "fleet-dir", root, path, owner, mode_text)
    done = ["mkdir"] if create else []
    done += [f"chown {owner}"] if owner else []
    done += [f"chmod {mode_text}"] if mode_text else []
    return Command(argv, label=f"{', '.join(done)} {path} (following no link below {root})")


def _chmod(mode: int, path: str) -> Command:
    # Five digits: GNU chmod keeps a directory's setgid bit on "0755" but sets it exactly on "00755".
    return Command(("chmod", f"0{mode:04o}", path))


def _owned_by(
    spec: DirSpec, state: PathState, facts: ProvisionFacts, settings: ProvisionSettings
) -> bool:
    def same(name: str, uid: int, known_name: str, resolved: int | None, default_name: str) -> bool:
        if name.isdigit():
            return int(name) == uid
        if name == default_name and resolved is not None:
            return resolved == uid
        return name == known_name

    return same(spec.owner, state.uid, state.user, facts.owner_uid, settings.owner) and same(
        spec.group, state.gid, state.group, facts.group_gid, settings.group
    )


def plan(settings: ProvisionSettings, facts: ProvisionFacts) -> list[Change]:
    """The changes this host still needs, in the order they must run (pure).

    Empty when the host has converged. Assumes :func:`preflight` found nothing that stops
    the host; what it cannot plan (a path that is not a directory, a malformed cron block)
    it leaves out.
    """
    changes: list[Change] = []
    for spec in settings.managed_dirs:
        changes += _plan_dir(spec, facts, settings)
    changes += _plan_script_dir(settings, facts)
    changes += _plan_script(settings, facts)
    changes += _plan_copy(settings, facts)
    changes += _plan_cron(settings, facts)
    if not facts.weights_up:
        changes.append(
            Change(
                "service_started",
                settings.weights_url,
                f"start the weights service on {settings.weights_bind}:{settings.weights_port} "
                f"(run {settings.script_path})",
                f"nothing answers on {settings.weights_url}"
                + (f" ({facts.weights_probe})" if facts.weights_probe else ""),
                (Command(("/bin/sh", settings.script_path)),),
            )
        )
    return changes


def _plan_dir(spec: DirSpec, facts: ProvisionFacts, settings: ProvisionSettings) -> list[Change]:
    owner = f"{spec.owner}:{spec.group}"
    if spec.path not in facts.paths:
        return []  # not asked (or unparsable): preflight reports it
    state = facts.paths[spec.path]
    if state is None:
        return [
            Change(
                "dir_created",
                spec.path,
                f"create directory {spec.path} ({owner} {spec.mode:04o})",
                "missing",
                (dir_command(settings.data_root, spec.path, owner, spec.mode, create=True),),
            )
        ]
    if state.kind != "directory":
        return []
    changes = []
    if not _owned_by(spec, state, facts, settings):
        changes.append(
            Change(
                "dir_owner_fixed",
                spec.path,
                f"fix owner of {spec.path}: {state.user or state.uid}:{state.group or state.gid} -> {owner}",
                f"owned by {state.user or state.uid}:{state.group or state.gid}",
                (dir_command(settings.data_root, spec.path, owner),),
            )
        )
    if state.mode != spec.mode:
        changes.append(
            Change(
                "dir_mode_fixed",
                spec.path,
                f"fix mode of {spec.path}: {state.mode:04o} -> {spec.mode:04o}",
                f"mode is {state.mode:04o}",
                (dir_command(settings.data_root, spec.path, mode=spec.mode),),
            )
        )
    return changes


def _plan_script_dir(settings: ProvisionSettings, facts: ProvisionFacts) -> list[Change]:
    """The script's own directory: root's, 0755 (its parents are checked, never changed)."""
    if settings.script_dir not in facts.lib:
        return []  # not reported: nothing to plan from
    state = facts.lib[settings.script_dir]
    if state is None:
        return [
            Change(
                "script_dir_created",
                settings.script_dir,
                f"create directory {settings.script_dir} (root:root {SCRIPT_DIR_MODE:04o})",
                "missing",
                (
                    Command(("mkdir", "-p", "--", settings.script_dir)),
                    Command(("chown", "--", "0:0", settings.script_dir)),
                    _chmod(SCRIPT_DIR_MODE, settings.script_dir),
                ),
            )
        ]
    if state.kind == "directory" and (state.uid, state.gid, state.mode) != (0, 0, SCRIPT_DIR_MODE):
        return [
            Change(
                "script_dir_fixed",
                settings.script_dir,
                f"fix {settings.script_dir}: owner {state.uid}:{state.gid} mode {state.mode:04o} -> "
                f"root:root {SCRIPT_DIR_MODE:04o}",
                "cron runs a script from it as root; only root may change it",
                (
                    Command(("chown", "--", "0:0", settings.script_dir)),
                    _chmod(SCRIPT_DIR_MODE, settings.script_dir),
                ),
            )
        ]
    return []


def _plan_script(settings: ProvisionSettings, facts: ProvisionFacts) -> list[Change]:
    path = settings.script_path
    wanted = render_script(settings)
    digest = hashlib.sha256(wanted).hexdigest()
    current = facts.script
    if current is not None and current.kind not in ("regular file", "regular empty file"):
        return []
    if current is None or current.sha256 != digest:
        before = current.content if current is not None else None
        return [
            Change(
                "script_installed" if current is None else "script_updated",
                path,
                f"{'install' if current is None else 'update'} {path}",
                "missing" if current is None else f"content differs (sha256 {current.sha256[:12]})",
                (write_command(path, wanted, SCRIPT_MODE, current),),
                diff=unified_diff(path, before, wanted),
            )
        ]
    if current.mode != SCRIPT_MODE or current.uid != 0 or current.gid != 0:
        return [
            Change(
                "script_mode_fixed",
                path,
                f"fix {path}: owner {current.uid}:{current.gid} mode {current.mode:04o} -> "
                f"root:root {SCRIPT_MODE:04o}",
                "cron runs it; only root may change it",
                (Command(("chown", "--", "0:0", path)), _chmod(SCRIPT_MODE, path)),
            )
        ]
    return []


def _plan_copy(settings: ProvisionSettings, facts: ProvisionFacts) -> list[Change]:
    """The readable copy in the data root: rewritten whole (never chmodded by name)."""
    path = settings.copy_path
    wanted = render_copy(settings)
    current = facts.copy
    if current is not None and current.kind == "directory":
        return []  # preflight warns
    if (
        current is not None
        and current.kind in ("regular file", "regular empty file")
        and current.sha256 == hashlib.sha256(wanted).hexdigest()
        and (current.mode, current.uid, current.gid) == (COPY_MODE, 0, 0)
    ):
        return []
    why = (
        "missing"
        if current is None
        else f"it is a {current.kind}"
        if current.kind not in ("regular file", "regular empty file")
        else f"differs from {settings.script_path} or is not root's {COPY_MODE:04o}"
    )
    return [
        Change(
            "copy_installed" if current is None else "copy_updated",
            path,
            f"{'write' if current is None else 'rewrite'} {path}, a copy of "
            f"{settings.script_path} to read (cron does not run it)",
            why,
            (write_command(path, wanted, COPY_MODE, "any"),),
        )
    ]


def _plan_cron(settings: ProvisionSettings, facts: ProvisionFacts) -> list[Change]:
    path = settings.cron_file
    current = facts.cron
    if current is not None and (not current.complete or current.content is None):
        return []
    before = current.content if current is not None else None
    content = before or b""
    try:
        span = find_block(content)
    except CronBlockError:
        return []
    block = cron_block(settings)
    after = apply_block(content, block)
    # A cron file must not be writable by group or others (cron would ignore it) and must
    # belong to root; otherwise its mode is kept.
    mode = CRON_MODE if current is None or current.mode & 0o022 else current.mode & 0o7777
    if after != content:
        old_line = _block_line(content[span[0] : span[1]]) if span else ""
        return [
            Change(
                "cron_block_added" if span is None else "cron_block_updated",
                path,
                f"add the aicron block to {path} ({settings.cron_schedule})"
                if span is None
                else f"update the aicron block in {path}",
                "missing"
                if span is None
                else f"block differs: {old_line!r} -> {settings.cron_line!r}",
                (write_command(path, after, mode, current),),
                diff=unified_diff(path, before, after),
            )
        ]
    if current is not None and (current.mode & 0o022 or current.uid != 0):
        return [
            Change(
                "cron_mode_fixed",
                path,
                f"fix {path}: owner uid {current.uid} mode {current.mode:04o} -> root {mode:04o}",
                "cron ignores a crontab that is group/other writable or not root's",
                (Command(("chown", "--", "0:0", path)), Command(("chmod", f"{mode:04o}", path))),
            )
        ]
    return []


def _block_line(block: bytes) -> str:
    for _, line in _lines(block):
        text = line.decode("utf-8", "replace").strip()
        if text and not text.startswith("#"):
            return text
    return ""


# -- running ----------------------------------------------------------------------------
# The base image as the controller has it: what push ships.
BaseImage = images.Shippable


@dataclass(frozen=True)
class ProvisionOptions:
    """How to provision: dry run, diffs, whether to ship the base image, timeouts."""

    check: bool = False
    diff: bool = False
    ship_base: bool = True
    compress: str = "auto"
    timeout: float | None = None


def resolve_base_images(
    settings: Mapping[str, ProvisionSettings], project: str | Path = "."
) -> tuple[dict[str, ProvisionSettings], dict[str, BaseImage]]:
    """Each host's base image, found on the controller, before any host is touched.

    A host without ``base_image`` gets the project's base (``fleet_image`` in ``project``).
    Returns the settings with every ``base_image`` filled in, and the images by name; a
    missing image is a :class:`UsageError` naming ``fleet build``.
    """
    resolved = dict(settings)
    named_by: dict[str, list[str]] = {}
    project_settings: images.Project | None = None
    for name, host_settings in settings.items():
        ref = host_settings.base_image
        if ref is None:
            project_settings = project_settings or images.load_project(project)
            ref = project_settings.base_reference
            resolved[name] = dataclasses.replace(host_settings, base_image=ref)
            source = project_settings.settings_path or project_settings.root
            named_by.setdefault(ref, []).append(
                f"the project's base image, fleet_image in {source}"
            )
        else:
            named_by.setdefault(ref, []).append(f"fleet_provision.base_image of {name}")
    if not named_by:
        return resolved, {}
    client = images.connect()
    found: dict[str, BaseImage] = {}
    for ref, sources in named_by.items():
        if not images.has_image(client, ref):
            raise UsageError(
                f"the base image {ref} ({', '.join(dict.fromkeys(sources))}) is not on this "
                "machine: there is nothing to ship",
                fix="build it with 'fleet build' (it builds the base, layers 1-2, first), set "
                "fleet_provision.base_image to an image you have, or pass --skip-base",
            )
        found[ref] = images.shippable(client, ref)
    return resolved, found


_SUMMARY = {
    "dir_created": ("created {n} dir{s}", "create {n} dir{s}"),
    "dir_owner_fixed": ("fixed owner of {n} dir{s}", "fix owner of {n} dir{s}"),
    "dir_mode_fixed": ("fixed mode of {n} dir{s}", "fix mode of {n} dir{s}"),
    "script_dir_created": (f"created {SCRIPT_DIR}", f"create {SCRIPT_DIR}"),
    "script_dir_fixed": (f"fixed {SCRIPT_DIR}'s mode", f"fix {SCRIPT_DIR}'s mode"),
    "script_installed": ("installed aicron.sh", "install aicron.sh"),
    "script_updated": ("updated aicron.sh", "update aicron.sh"),
    "script_mode_fixed": ("fixed aicron.sh's mode", "fix aicron.sh's mode"),
    "copy_installed": ("wrote its readable copy", "write its readable copy"),
    "copy_updated": ("rewrote its readable copy", "rewrite its readable copy"),
    "cron_block_added": ("added the cron block", "add the cron block"),
    "cron_block_updated": ("updated the cron block", "update the cron block"),
    "cron_mode_fixed": ("fixed the cron file's mode", "fix the cron file's mode"),
    "service_started": ("started the weights service", "start the weights service"),
    "base_shipped": ("shipped the base image", "ship the base image"),
}


def summarize(kinds: Iterable[str], check: bool) -> str:
    """One line naming what changed (or would), in plan order."""
    counts = Counter(kinds)
    if not counts:
        return "nothing to change"
    phrases = []
    for kind, n in counts.items():
        done, would = _SUMMARY.get(kind, (kind, kind))
        phrases.append((would if check else done).format(n=n, s="" if n == 1 else "s"))
    return ("would " if check else "") + ", ".join(phrases)


def _engine_details(facts: ProvisionFacts) -> dict[str, Any]:
    host = facts.host
    return {
        "engine": host.engine_version or "down",
        "store": host.image_store,
        "docker_root": host.docker_root,
        "runtimes": list(host.runtimes),
        "gpus": len(host.gpus),
        "user": facts.user,
        "disk": {
            "docker_free": host.disk_docker.free if host.disk_docker else None,
            "data_free": facts.data_disk.free if facts.data_disk else None,
        },
    }


def provision_host(
    ctx: HostContext, settings: ProvisionSettings, options: ProvisionOptions
) -> HostResult:
    """Provision one host (everything but the base image); its result."""
    ctx.progress("facts")
    facts = gather(ctx.transport, settings, options.timeout)
    verdict = preflight(settings, facts)
    details: dict[str, Any] = {**_engine_details(facts), "warnings": list(verdict.warnings)}
    if verdict.failures:
        return HostResult(
            ctx.name,
            Outcome.FAILED,
            "\n".join(p.message for p in verdict.failures),
            # The recap prints "fix: " before the first; one "fix:" line per problem.
            "\n  fix: ".join(dict.fromkeys(p.fix for p in verdict.failures)),
            details={**details, "problems": [p.to_json() for p in verdict.failures]},
        )
    changes = plan(settings, facts)
    details["changes"] = [c.to_json() for c in changes]
    if options.diff:
        details["diff"] = label_diff("".join(c.diff for c in changes), ctx.name)
    kinds = [c.kind for c in changes]
    if options.check or not changes:
        outcome = Outcome.CHANGED if changes else Outcome.OK
        return ctx.result(outcome, summarize(kinds, options.check), details=details)
    for done, change in enumerate(changes):
        ctx.progress(change.what, done, len(changes))
        try:
            for command in change.commands:
                ctx.transport.run(command.argv, stdin=command.stdin, timeout=options.timeout)
        except CommandError as exc:
            details["changes"] = [c.to_json() for c in changes[:done]]
            return HostResult(
                ctx.name,
                Outcome.FAILED,
                f"{change.what}: {exc.reason}",
                exc.fix or "look at the evidence above, fix the host, and rerun",
                details={**details, "failed_change": change.to_json()},
            )
    ctx.progress("verifying")
    left = plan(settings, gather(ctx.transport, settings, options.timeout))
    if left:
        return HostResult(
            ctx.name,
            Outcome.FAILED,
            "the host did not converge; still needed after applying: "
            + "; ".join(c.what for c in left),
            "look at the host (the listed items), then rerun",
            details=details,
        )
    return ctx.result(Outcome.CHANGED, summarize(kinds, False), details=details)


def with_base(result: HostResult, pushed: HostResult, ref: str, check: bool) -> HostResult:
    """A host's provision result with its base-image shipping merged in."""
    base = {"ref": ref, **pushed.details}
    details = {**result.details, "base_image": base}
    seconds = result.seconds + pushed.seconds
    if not pushed.succeeded:
        return HostResult(
            result.host,
            pushed.outcome,
            f"base image {ref}: {pushed.reason}",
            pushed.fix,
            seconds,
            details,
        )
    if pushed.outcome is not Outcome.CHANGED:
        return dataclasses.replace(result, details=details, seconds=seconds)
    entry = {
        "kind": "base_shipped",
        "target": ref,
        "what": f"ship base image {ref}: {pushed.reason}",
        "why": "missing on the host" if not base.get("layers_present") else "layers missing",
        "commands": ["docker load (only the missing layers)"],
    }
    changes = [*details.get("changes", []), entry]
    details["changes"] = changes
    return HostResult(
        result.host,
        Outcome.CHANGED,
        summarize((c["kind"] for c in changes), check),
        None,
        seconds,
        details,
    )


def provision(
    runner: Runner,
    hosts: Sequence[Host],
    settings: Mapping[str, ProvisionSettings],
    bases: Mapping[str, BaseImage],
    options: ProvisionOptions = ProvisionOptions(),
) -> FleetResult:
    """Provision every host; one result per host, in host order.

    First each host on its own (facts, preflight, plan, changes, verification); then the
    hosts that succeeded get their base image (``settings[host].base_image``, which must be
    a key of ``bases``; None ships nothing), grouped by image and disk reserve (the reserve
    is ``min_free.docker``: left free after loading), through :func:`push`.
    """
    started = time.monotonic()
    first = runner.run(
        "provision", hosts, lambda ctx: provision_host(ctx, settings[ctx.name], options)
    )
    results = {r.host: r for r in first.results}
    if options.ship_base:
        groups: dict[tuple[str, int], list[Host]] = {}
        for host in hosts:
            ref = settings[host.name].base_image
            if ref is not None and results[host.name].succeeded:
                key = (ref, settings[host.name].min_free_docker)
                groups.setdefault(key, []).append(host)
        for (ref, reserve), members in groups.items():
            push_options = PushOptions(
                compress=options.compress,
                check=options.check,
                min_free_bytes=reserve,
                state_timeout=options.timeout,
            )
            pushed = push(runner, members, bases[ref], push_options)
            for row in pushed.results:
                results[row.host] = with_base(results[row.host], row, ref, options.check)
    command = "provision --check" if options.check else "provision"
    return FleetResult.of(command, (results[h.name] for h in hosts), time.monotonic() - started)

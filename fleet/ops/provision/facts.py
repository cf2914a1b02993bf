"""What provision needs to know of a host, gathered in one round trip (parsed purely)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.hostoutput import Fact, gathered, parses_host_output, sections
from fleet.ops import facts as facts_mod
from fleet.ops.facts import Disk, HostFacts
from fleet.ops.provision.packages import OsRelease
from fleet.ops.provision.settings import CAP_SYS_RESOURCE, ProvisionSettings
from fleet.programs import program
from fleet.ssh.base import Transport

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
    live_restore: bool | None = None  # the running engine's; None: it did not say
    containers_running: int | None = None
    # What the engine holds, running or not: a new data-root would leave it behind.
    containers: int | None = None
    images: int | None = None
    # What starts and stops the engine: systemd, sysv (its init script), or none.
    engine_manager: str = ""
    os_release: OsRelease = field(default_factory=OsRelease)
    # Of packages.KNOWN_PACKAGES: which are installed (absent: not).
    packages: Mapping[str, bool] = field(default_factory=dict)
    # Of docker_users: in the docker group or not; None: no such user.
    docker_users: Mapping[str, bool | None] = field(default_factory=dict)
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
    fact = Fact(
        "the provisioning facts",
        FACTS_SCRIPT,
        lambda text: parse_facts(text, paths),
        "fleet-provision-facts",
    )
    return fact.gather(transport, *facts_arguments(settings), timeout=timeout)


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
        " ".join(settings.docker_users),  # names checked: no blank, one word each
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


BYTE_LIMITS = frozenset({"core", "data", "fsize", "memlock", "msgqueue", "rss", "stack"})


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


def _os_release(line: str) -> OsRelease:
    cells = [cell.strip() for cell in [*line.split("|"), "", "", "", "", ""][:5]]
    return OsRelease(*cells)


def _docker_users(lines: list[str]) -> dict[str, bool | None]:
    """Each asked user: member of the docker group (True/False), None when no such user."""
    found: dict[str, bool | None] = {}
    for line in lines:
        cells = line.strip().split("|")
        if len(cells) == 3:
            found[cells[0]] = None if cells[1] == "absent" else cells[2] == "yes"
    return found


def _count(value: Any) -> int | None:
    """A count the engine's info gave (None: it gave none)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
        for name, lines in sections(gathered(text, "the provisioning facts")).items()
    }
    host = facts_mod.parse(text)
    ids = parts.get("p_id", [])
    uid = _int(ids[0]) if ids else None
    owner = _first(parts, "p_owner")
    group = _first(parts, "p_group")
    weights = _first(parts, "p_weights_user")
    info: dict[str, Any] = {}
    for line in parts.get("docker_info", []):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                loaded = json.loads(line)
                info = loaded if isinstance(loaded, dict) else {}
    live = info.get("LiveRestoreEnabled")
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
        logging_driver=str(info.get("LoggingDriver", "")),
        live_restore=live if isinstance(live, bool) else None,
        containers_running=_count(info.get("ContainersRunning")),
        containers=_count(info.get("Containers")),
        images=_count(info.get("Images")),
        engine_manager=_first(parts, "p_engine_manager"),
        os_release=_os_release(_first(parts, "p_os")),
        packages={
            words[0]: words[1].startswith("ii")
            for words in (line.split() for line in parts.get("p_packages", []))
            if len(words) >= 2
        },
        docker_users=_docker_users(parts.get("p_docker_users", [])),
        limits_source=source,
        hard_limits=hard,
        cap_sys_resource=capable,
        data_disk=_disk(parts.get("p_df_data", [])),
        weights_up=probe == "up" or probe.startswith("up "),
        weights_probe=probe,
    )

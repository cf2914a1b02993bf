"""What stops a host before any change (failures), and what only deserves a warning."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleet import units
from fleet.errors import CronBlockError
from fleet.images.runspec import RunSpec
from fleet.ops.facts import GPU
from fleet.ops.gpu import in_use, reading
from fleet.ops.provision.cron import find_block, numbered_lines, other_aicron_lines
from fleet.ops.provision.engine import DAEMON_JSON, DaemonJsonError
from fleet.ops.provision.facts import BYTE_LIMITS, ProvisionFacts
from fleet.ops.provision.plan import engine_config, plan
from fleet.ops.provision.settings import CRON_MAX_BYTES, ProvisionSettings, is_below
from fleet.ship.state import engine_fix


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
    if settings.engine.manage:
        _check_engine_config(settings, facts, failures, warnings)
    else:
        _check_log_rotation(facts, warnings)
    _check_runtime(settings, facts, failures, warnings)
    _check_ulimits(settings.run_spec, facts, failures)


def _check_runtime(
    settings: ProvisionSettings,
    facts: ProvisionFacts,
    failures: list[Problem],
    warnings: list[str],
) -> None:
    """The runtime, toolkit, driver and free GPUs the run spec asks for."""
    host = facts.host
    spec = settings.run_spec
    # Where the toolkit is and the engine lacks its runtime, provisioning registers it.
    registers = settings.engine.manage and "nvidia-container-runtime" in facts.tools
    known = {*host.runtimes, *(("nvidia",) if registers else ())}
    runtimes = ", ".join(host.runtimes) or "none"
    if spec.runtime is not None and spec.runtime not in known:
        if spec.runtime == "nvidia":
            failures.append(
                Problem(
                    "the run spec asks for --runtime nvidia, but the engine has no 'nvidia' "
                    f"runtime (it has: {runtimes})",
                    "let provisioning install the NVIDIA Container Toolkit "
                    "(fleet_provision.install: [nvidia_toolkit], with nvidia_repository), or "
                    "install it yourself; for a host without GPU, set "
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
        or registers
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
        elif all(gpu_busy(gpu) for gpu in host.gpus):
            # A warning, not a failure: provisioning again a server that trains is routine.
            shown = "; ".join(
                f"GPU {g.index}: {g.utilization} used, {g.memory_used} of {g.memory}"
                for g in host.gpus
            )
            warnings.append(
                f"no GPU is free ({shown}): the framework's container would share them with "
                "what runs there now"
            )


def gpu_busy(gpu: GPU) -> bool:
    """Whether a GPU is in use, from nvidia-smi's utilization and memory (unknown: no)."""

    return in_use(reading(gpu.utilization), reading(gpu.memory_used), reading(gpu.memory))


def _check_engine_config(
    settings: ProvisionSettings,
    facts: ProvisionFacts,
    failures: list[Problem],
    warnings: list[str],
) -> None:
    """daemon.json can be merged, and the engine take it without stopping a job."""
    state = facts.daemon_json
    leave = "or set fleet_provision.engine: false to leave the engine's configuration alone"
    if state is not None and (
        state.kind not in ("regular file", "regular empty file") or not state.complete
    ):
        failures.append(
            Problem(
                f"{DAEMON_JSON} is a {state.kind} of {state.size} bytes that fleet cannot read "
                "whole; it merges only a regular file it read",
                f"make it a regular file (at most 64 KiB), {leave}",
            )
        )
        return
    try:
        config = engine_config(settings, facts)
    except DaemonJsonError as exc:
        failures.append(
            Problem(
                f"{exc}; fleet merges its keys into the file and never overwrites it",
                f"fix the file by hand (the engine cannot restart with it either), {leave}",
            )
        )
        return
    warnings.extend(f"{DAEMON_JSON}: {kept}" for kept in config.kept)
    if config.new_root:
        _check_new_root(config.new_root, facts, failures, leave)
    if not config.restart:
        return
    running = facts.containers_running or 0
    if config.live_restore is not True and running:
        failures.append(
            Problem(
                f"setting {', '.join(config.sets)} needs an engine restart, and with "
                f"live-restore off (your daemon.json) it would stop the {running} running "
                "container(s)",
                f"set live-restore: true in {DAEMON_JSON}, or restart the engine yourself "
                f"when nothing runs, {leave}",
            )
        )
    elif (facts.engine_manager or "none") == "none":
        failures.append(
            Problem(
                f"setting {', '.join(config.sets)} needs an engine restart, and nothing "
                "manages the engine here (no systemd unit 'docker', no /etc/init.d/docker "
                "that knows it): fleet cannot restart it",
                f"run the engine under systemd (the docker.io package's unit), {leave}",
            )
        )


def _check_new_root(
    new_root: str, facts: ProvisionFacts, failures: list[Problem], leave: str
) -> None:
    """A new data-root only for an engine that holds nothing: its images and containers
    would stay behind in the old root (the framework gone, its image shipped again)."""
    held = [
        f"{count} {what}"
        for count, what in ((facts.containers, "container(s)"), (facts.images, "image(s)"))
        if count
    ]
    if facts.containers is None or facts.images is None:
        held.append("an unknown number of images and containers (the engine did not say)")
    if held:
        old = facts.host.docker_root or "its root"
        failures.append(
            Problem(
                f"setting data-root: {new_root} moves the engine, which holds "
                f"{' and '.join(held)} in {old}: they would stay behind there",
                f"set data_root on hosts whose engine holds nothing yet (a fresh one), or "
                f"move the engine yourself: stop it, copy {old} to {new_root} (rsync -aHAX), "
                f"set data-root in {DAEMON_JSON}, start it; {leave}",
            )
        )


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
        limit = f"{host_hard} bytes" if name in BYTE_LIMITS else str(host_hard)
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
    others = other_aicron_lines(content, span)
    lines = numbered_lines(content)
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
    if real and facts.data_root_real and is_below(real, facts.data_root_real):
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
    failures += missing_docker_users(settings, facts)


def missing_docker_users(settings: ProvisionSettings, facts: ProvisionFacts) -> list[Problem]:
    """``docker_users`` the host does not have (checked before anything is installed)."""
    return [
        Problem(
            f"docker_users names {user!r}, who does not exist on the host",
            "create the user first, or take it out of fleet_provision.docker_users",
        )
        for user in settings.docker_users
        if user in facts.docker_users and facts.docker_users[user] is None
    ]


def _check_tools(
    settings: ProvisionSettings,
    facts: ProvisionFacts,
    failures: list[Problem],
    warnings: list[str],
) -> None:
    needed = {
        "python3": "python3 (the weights service and fleet's file changes run on it)",
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

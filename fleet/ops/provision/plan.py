"""The changes a host needs: what, why, and the argv that makes each (a pure function)."""

from __future__ import annotations

import base64
import hashlib
import shlex
from dataclasses import dataclass
from typing import Any

from fleet.errors import (
    CronBlockError,
)
from fleet.ops import hostfiles
from fleet.ops.provision.cron import (
    apply_block,
    cron_block,
    find_block,
    numbered_lines,
    render_copy,
    render_script,
    unified_diff,
)
from fleet.ops.provision.engine import DAEMON_JSON, DAEMON_JSON_MODE, EngineConfig, merged
from fleet.ops.provision.facts import FileState, PathState, ProvisionFacts
from fleet.ops.provision.packages import Install, needed
from fleet.ops.provision.settings import (
    COPY_MODE,
    CRON_MODE,
    SCRIPT_DIR_MODE,
    SCRIPT_MODE,
    DirSpec,
    ProvisionSettings,
)
from fleet.programs import program


@dataclass(frozen=True)
class Command:
    """One remote command: an argv (quoted, never a shell string) and its stdin."""

    argv: tuple[str, ...]
    stdin: bytes | None = None
    label: str = ""  # how to show it, when the argv is a long constant script
    # At least this long, whatever --timeout says: an engine restart waits for the engine.
    timeout: float | None = None

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


def write_command(
    root: str, path: str, content: bytes, mode: int, expected: FileState | str | None
) -> Command:
    """The command that writes ``content`` to ``path`` as root's, walking from ``root``.

    Through the host helper (:mod:`fleet.ops.hostfiles`): no link below ``root`` is
    followed, the file is made beside its target with ``O_EXCL``, owned and moded through
    its descriptor and renamed into place, and only while the target is still what the
    facts saw (``expected``: None for no file; the string ``"any"`` writes whatever is
    there, for the copy in the data root, which nothing runs), so a concurrent edit is
    never overwritten.
    """
    if isinstance(expected, str):
        seen = expected
    else:
        seen = "absent" if expected is None else expected.sha256
    argv = hostfiles.write_argv(root, path, mode, seen)
    unless = "" if seen == "any" else ", unless changed"
    label = f"write {path} (root, mode {mode:04o}, {len(content)} bytes, atomically{unless})"
    return Command(tuple(argv), content, label)


def dir_command(
    root: str, path: str, owner: str = "", mode: int | None = None, create: bool = False
) -> Command:
    """Creates or fixes ``path`` (``root`` or below it) following no link below ``root``.

    ``root`` and its parents are followed as the admin made them (a link to a bigger disk);
    every component below it is entered without following a link, and the directory is
    changed through its own descriptor. ``owner`` empty and ``mode`` None leave them alone.
    """
    argv = hostfiles.dir_argv(root, path, mode, owner or hostfiles.LEAVE, create)
    done = ["mkdir"] if create else []
    done += [f"chown {owner}"] if owner else []
    done += [f"chmod {mode:04o}"] if mode is not None else []
    return Command(tuple(argv), label=f"{', '.join(done)} {path} (following no link below {root})")


def _fix_file(path: str, mode: int) -> Command:
    """Make file ``path`` root's with ``mode``, through the file itself, never a link."""
    return Command(
        tuple(hostfiles.fix_argv(_parent(path), path, mode, "0:0")),
        label=f"chown 0:0, chmod {mode:04o} {path} (through the file, not a link)",
    )


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
    # The engine first: its restart is the one change that can fail half-way (then undone,
    # with nothing else changed yet).
    changes: list[Change] = _plan_engine(settings, facts)
    changes += _plan_docker_users(settings, facts)
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


def _plan_docker_users(settings: ProvisionSettings, facts: ProvisionFacts) -> list[Change]:
    # A user that does not exist is preflight's to report.
    return [
        Change(
            "docker_user_added",
            user,
            f"add {user} to the docker group",
            "docker_users names it: it may then use the engine without sudo (as root's equal)",
            (Command(("usermod", "-aG", "docker", user)),),
        )
        for user in settings.docker_users
        if facts.docker_users.get(user) is False
    ]


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
                (_script_dir_command(settings, create=True),),
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
                (_script_dir_command(settings, create=False),),
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
                (write_command(settings.script_dir, path, wanted, SCRIPT_MODE, current),),
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
                (_fix_file(path, SCRIPT_MODE),),
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
            (write_command(settings.data_root, path, wanted, COPY_MODE, "any"),),
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
                (write_command(_parent(path), path, after, mode, current),),
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
                (_fix_file(path, mode),),
            )
        ]
    return []


def _parent(path: str) -> str:
    return path.rpartition("/")[0] or "/"


def _script_dir_command(settings: ProvisionSettings, *, create: bool) -> Command:
    """The script's directory, root's (its parents are the admin's: followed)."""
    return dir_command(
        _parent(settings.script_dir), settings.script_dir, "0:0", SCRIPT_DIR_MODE, create=create
    )


def _block_line(block: bytes) -> str:
    for _, line in numbered_lines(block):
        text = line.decode("utf-8", "replace").strip()
        if text and not text.startswith("#"):
            return text
    return ""


ENGINE_APPLY = program("engine_apply.sh")
# The program waits up to 10 s for a reload and the restarts themselves; on top of this,
# twice the engine's restart_timeout (after the restart, and after putting the old file
# back).
ENGINE_APPLY_TIMEOUT = 60.0


def engine_config(settings: ProvisionSettings, facts: ProvisionFacts) -> EngineConfig:
    """What daemon.json should become on this host (:class:`DaemonJsonError` when it is
    not JSON: preflight refuses the host)."""
    state = facts.daemon_json
    return merged(
        state.content if state is not None else None,
        settings.engine,
        running_driver=facts.logging_driver,
        runtimes=frozenset(facts.host.runtimes),
        has_nvidia_runtime="nvidia-container-runtime" in facts.tools,
        engine_root=facts.host.docker_root,
    )


def _plan_engine(settings: ProvisionSettings, facts: ProvisionFacts) -> list[Change]:
    """daemon.json merged, backed up, and the engine reloaded or restarted to take it."""
    if not settings.engine.manage or not facts.host.engine_ok:
        return []
    state = facts.daemon_json
    config = engine_config(settings, facts)
    manager = facts.engine_manager or "none"
    if config.content is None:
        wanted, running = config.live_restore, facts.live_restore
        if wanted is not None and running is not None and wanted != running:
            # The file says it, the engine does not: edited by hand, or never reloaded.
            return [
                Change(
                    "engine_reloaded",
                    DAEMON_JSON,
                    "reload the engine (SIGHUP) to take its daemon.json",
                    f"daemon.json says live-restore {str(wanted).lower()}, the running "
                    f"engine has it {'on' if running else 'off'}",
                    (_apply_command(settings, False, manager, "="),),
                )
            ]
        return []
    before = state.content if state is not None else None
    commands: list[Command] = []
    backup = "-"
    if state is None:
        commands.append(dir_command("/etc", "/etc/docker", mode=0o755, create=True))
    else:
        backup = f"{DAEMON_JSON}.fleet-{state.sha256[:12]}.bak"
        commands.append(write_command("/etc/docker", backup, before or b"", 0o600, "any"))
    commands.append(
        write_command("/etc/docker", DAEMON_JSON, config.content, DAEMON_JSON_MODE, state)
    )
    commands.append(_apply_command(settings, config.restart, manager, backup))
    how = (
        "restart the engine (live-restore keeps containers running)"
        if config.restart
        else ("reload the engine (SIGHUP: nothing stops)")
    )
    return [
        Change(
            "engine_configured",
            DAEMON_JSON,
            f"set {', '.join(config.sets)} in {DAEMON_JSON}, then {how}",
            "the engine lacks what a GPU host needs: "
            + ", ".join(s.split(":", 1)[0] for s in config.sets),
            tuple(commands),
            unified_diff(DAEMON_JSON, before, config.content),
        )
    ]


def _apply_command(
    settings: ProvisionSettings, restart: bool, manager: str, backup: str
) -> Command:
    verb = "restart" if restart else "reload"
    wait = settings.engine.restart_timeout
    return Command(
        (
            *("sh", "-c", ENGINE_APPLY, "fleet-engine"),
            *("yes" if restart else "no", manager, backup, str(wait)),
        ),
        label=f"{verb} the engine ({manager}); on failure put back {backup}",
        # A restart, a wait, and when it does not come back another restart and wait.
        timeout=ENGINE_APPLY_TIMEOUT + 2 * wait,
    )


INSTALL = program("install.sh")
# apt's download and install of an engine take minutes on a slow mirror.
INSTALL_TIMEOUT = 1800.0


def install_plan(settings: ProvisionSettings, facts: ProvisionFacts) -> Install:
    """What this host lacks of what ``fleet_provision.install`` names (pure)."""
    return needed(
        settings.install,
        facts.packages,
        engine_present=facts.host.engine_ok or "dockerd" in facts.tools,
        nvidia_smi=facts.host.nvidia_smi,
        has_runtime="nvidia-container-runtime" in facts.tools,
        repository=settings.nvidia_repository,
        engine_package=settings.engine_package,
        docker_repository=settings.docker_repository,
        release=facts.os_release,
    )


def install_change(settings: ProvisionSettings, wanted: Install) -> Change | None:
    """The apt run that installs ``wanted`` (:func:`install_plan`); None when it is
    nothing."""
    if not wanted.packages:
        return None
    argv = ["sh", "-c", INSTALL, "fleet-install", str(settings.apt_lock_timeout)]
    argv += [" ".join(wanted.packages), "yes" if wanted.engine else "no"]
    added = []
    for repository, source in wanted.repositories:
        key = base64.b64encode(repository.key).decode()
        argv += [repository.sources, repository.keyring, source, key]
        added.append(f"{source.split()[0]}, signed-by {repository.keyring}")
    source_text = f" (adding {'; '.join(added)})" if added else ""
    command = Command(
        tuple(argv),
        label=f"apt-get install {' '.join(wanted.packages)}{source_text}",
        timeout=INSTALL_TIMEOUT,
    )
    what = f"install {', '.join(wanted.packages)}" + (
        " and start the engine" if wanted.engine else ""
    )
    return Change(
        "packages_installed",
        "apt",
        what,
        "fleet_provision.install names them and the host lacks them",
        (command,),
    )

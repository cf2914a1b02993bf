"""A playbook's steps: fleet-wide ones (build, push, deploy, rollback, prune, provision,
audit) call the operations the CLI calls; host steps (exec, dir, copy, cron) run on each
host through the link-safe host programs; debug prints. :data:`STEPS` maps a step's name to
its implementation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fleet import units
from fleet.errors import HostError, PlaybookError, UsageError
from fleet.hosts.model import Host
from fleet.images import build as images
from fleet.images import daemon
from fleet.images.project import load_project
from fleet.ops import deploy as deploy_mod
from fleet.ops import files, hostfiles, prune
from fleet.playbook.schema import Play, Task
from fleet.playbook.template import render
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext
from fleet.ship.codec import compression
from fleet.ship.plan import PushOptions, via_of
from fleet.ship.push import push

if TYPE_CHECKING:
    from fleet.playbook.run import Player

# -- fleet-wide steps -------------------------------------------------------------------
Step = Callable[["Player", Play, Task, dict[str, Any], list[Host]], FleetResult]


def _not_built(reference: str, hosts: list[Host], what: str) -> FleetResult:
    return FleetResult.of(
        what,
        (
            HostResult(
                h.name, Outcome.CHANGED, f"would {what} {reference} (not built yet: check mode)"
            )
            for h in hosts
        ),
    )


def _push(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    reference = image_of(player, args, "image")
    if player.options.check and not daemon.has_image(player.client, reference):
        return _not_built(reference, hosts, "push")
    image = daemon.shippable(player.client, reference)
    min_free = args.get("min_free") or 0
    options = _push_options(args, check=player.options.check, min_free_bytes=_size(min_free))
    return push(player.runner, hosts, image, options)


def shipping_options(args: Mapping[str, Any]) -> dict[str, Any]:
    """The push/deploy arguments that say how the image travels (``fleet push --via``...)."""
    rates = {
        key: float(_size(str(args[key]).removesuffix("/s"), key)) if args.get(key) else None
        for key in ("max_rate", "max_rate_per_host")
    }
    return {"via": via_of(str(args.get("via", "ssh"))), "registry": args.get("registry"), **rates}


def _push_options(args: Mapping[str, Any], **fields: Any) -> PushOptions:
    """A push or deploy task's shipping, as ``fleet push`` options say it."""
    compress = compression(str(args.get("compress", "auto")))
    return PushOptions(compress=compress, **shipping_options(args), **fields)


def _deploy_options(
    player: Player, args: Mapping[str, Any], repository: str
) -> deploy_mod.DeployOptions:
    return deploy_mod.DeployOptions(
        repository=repository,
        check=player.options.check,
        wait_lock=float(args.get("wait", 0)),
        shipping=_push_options(args),
    )


def _deploy(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    reference = image_of(player, args, "version")
    if player.options.check and not daemon.has_image(player.client, reference):
        return _not_built(reference, hosts, "deploy")
    options = _deploy_options(player, args, reference.rpartition(":")[0])
    return deploy_mod.deploy(
        player.runner, hosts, daemon.shippable(player.client, reference), options
    )


def _repository(player: Player, args: Mapping[str, Any]) -> str:
    return load_project(str(args.get("project", player.options.project))).repository


def _rollback(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    options = _deploy_options(player, args, _repository(player, args))
    to = args.get("to")
    return deploy_mod.rollback(player.runner, hosts, str(to) if to else None, options)


def _prune(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    options = _deploy_options(player, args, _repository(player, args))
    return prune.prune(player.runner, hosts, int(args.get("keep", 3)), options)


def _size(value: Any, what: str = "min_free") -> int:
    try:
        return units.parse_size(value)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


# -- the controller's steps ------------------------------------------------------------
def build_step(player: Player, play: Play, task: Task, hosts: list[Host]) -> FleetResult:
    """The build task: once per play on the controller (reused when asked again the same)."""
    args = render(task.args, player.variables(play, None))
    player.refuse_recorded_secrets(task, args)
    if "build" in player.controller_vars and player.controller_vars["build"].get("args") == args:
        built = player.controller_vars["build"]
        return FleetResult.of(
            "build",
            (
                HostResult(h.name, Outcome.OK, f"{built['reference']} (built earlier in this play)")
                for h in hosts
            ),
        )
    project = load_project(
        str(args.get("project", player.options.project)), tag_prefix=args.get("tag_prefix")
    )
    if player.options.check:
        from fleet.images import gitinfo

        git = gitinfo.read(project.root)
        tag = project.tag(git)
        reference = f"{project.repository}:{tag}"
        player.controller_vars["build"] = {
            "reference": reference,
            "tag": tag,
            "image_id": "",
            "args": args,
        }
        outcome, note = Outcome.CHANGED, f"would build {reference}"
    else:
        options = images.BuildOptions(
            rebuild_base=bool(args.get("rebuild_base")), rebuild=bool(args.get("rebuild"))
        )
        built = images.build(player.client, project, options)
        player.controller_vars["build"] = {
            "reference": built.reference,
            "tag": built.tag,
            "image_id": built.image_id,
            "args": args,
        }
        reused = built.framework.action != "built"
        outcome = Outcome.OK if reused else Outcome.CHANGED
        note = f"{'reused' if reused else 'built'} {built.reference}"
    # Reported once per host so the recap shows the play's hosts saw it (Ansible's run_once).
    return FleetResult.of(
        "build",
        (
            HostResult(
                h.name,
                outcome,
                note,
                details={"image": player.controller_vars["build"]["reference"]},
            )
            for h in hosts
        ),
    )


def image_of(player: Player, args: Mapping[str, Any], key: str) -> str:
    """The image a step ships: its argument, the play's build, or the newest built."""
    value = args.get(key)
    if value:
        text = str(value)
        if ":" not in text:
            text = f"{load_project(str(args.get('project', player.options.project))).repository}:{text}"
        return text
    if "build" in player.controller_vars:
        return str(player.controller_vars["build"]["reference"])
    repository = load_project(str(args.get("project", player.options.project))).repository
    for version in daemon.list_versions(player.client, repository):
        if version.tagged:
            return version.reference
    raise UsageError(
        f"no version of {repository} is built on this machine",
        fix="add a build task, or run 'fleet build'",
    )


# -- small host steps -------------------------------------------------------------------
def _host_step(
    player: Player, hosts: list[Host], name: str, body: Callable[[HostContext], HostResult]
) -> FleetResult:
    return player.runner.run(name, hosts, body)


def changed(row: HostResult) -> bool:
    """Whether a row changed its host: changed, or failed after changing (a command)."""
    if row.outcome is Outcome.FAILED:
        return row.details.get("changed") is True
    return row.outcome is Outcome.CHANGED


def registered_value(task: Task, row: HostResult) -> dict[str, Any]:
    """A host's result as ``register:`` keeps it: Ansible's keys (``changed``, ``failed``,
    ``skipped``, ``msg``; an exec's ``rc``, ``stdout``, ``stdout_lines``, ``stderr``,
    ``stderr_lines``; a deploy's ``version_before``/``version_after``) and fleet's details."""
    value: dict[str, Any] = dict(row.details)
    value.update(
        changed=changed(row),
        failed=row.outcome in (Outcome.FAILED, Outcome.UNREACHABLE),
        skipped=row.outcome is Outcome.SKIPPED,
        msg=row.details.get("msg", row.reason or ""),
    )
    if row.outcome is Outcome.SKIPPED:
        value["skip_reason"] = row.reason or ""
    # A command skipped by check mode still registers its (empty) output, as Ansible's.
    if task.step in ("exec", "command", "shell") and (
        row.outcome is not Outcome.SKIPPED or "rc" in row.details
    ):
        stdout = str(row.details.get("stdout", row.stdout)).removesuffix("\n")
        stderr = row.stderr.removesuffix("\n")
        value.update(
            rc=row.details.get("rc", row.details.get("exit_code")),
            stdout=stdout,
            stdout_lines=stdout.splitlines(),
            stderr=stderr,
            stderr_lines=stderr.splitlines(),
        )
    return value


def _exec(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    argv = (
        [str(a) for a in args["command"]] if "command" in args else ["sh", "-c", str(args["shell"])]
    )

    def body(ctx: HostContext) -> HostResult:
        if player.check(task):
            return ctx.result(Outcome.SKIPPED, "exec does not run in check mode")
        return ctx.run_command(argv)

    return _host_step(player, hosts, "exec", hiding(player, args, [argv], body))


def hiding(
    player: Player,
    args: Mapping[str, Any],
    commands: Sequence[Sequence[str]],
    body: Callable[[HostContext], HostResult],
) -> Callable[[HostContext], HostResult]:
    """``body``, whose reasons name none of ``commands`` when ``args`` hold a secret.

    Redaction finds a secret's known renderings; a command line can also show a part of one
    (an abbreviated message, a word split by the shell), so a task that holds a secret
    shows no command line at all.
    """
    if not player.secrets.found_in(args):
        return body

    def hidden(ctx: HostContext) -> HostResult:
        try:
            row = body(ctx)
        except HostError as exc:
            raise player.secrets.hide_commands_in_error(exc, commands) from None
        return player.secrets.hide_commands_in_row(row, commands)

    return hidden


def mode_of(task: Task, value: Any, default: str) -> str:
    text = str(value if value is not None else default)
    if isinstance(value, int) and not isinstance(value, bool):
        # A number is the mode itself, as Ansible takes it: YAML reads 0640 as octal (416),
        # so its octal digits are the mode; a bare 644 is decimal (octal 1204), as there.
        text = format(value, "o")
    if not hostfiles.MODE.fullmatch(text):
        raise PlaybookError(
            f"{task.where}: mode {value!r} is not an octal mode like '0755'", line=task.line
        )
    return text.lstrip("0").rjust(3, "0")


def given_mode(task: Task, args: Mapping[str, Any]) -> str | None:
    """A task's ``mode`` as octal text, or None when it gives none (the path's own stays,
    as Ansible's modules keep it)."""
    given = args.get("mode")
    return None if given is None else mode_of(task, given, "0644")


def host_path(task: Task, args: Mapping[str, Any], key: str) -> str:
    """A task's path on the hosts: absolute, and never climbing out with '..'."""
    path = str(args[key])
    if not path.startswith("/") or ".." in path.split("/"):
        raise PlaybookError(
            f"{task.where}.{task.step}.{key}: {path!r} must be absolute, without '..'",
            line=task.line,
        )
    return path.rstrip("/") or "/"


def _dir(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    path = host_path(task, args, "path")
    mode = mode_of(task, args.get("mode"), "0755")
    owner, group = (account(task, args, key) for key in ("owner", "group"))

    def body(ctx: HostContext) -> HostResult:
        return files.ensure_dir(ctx, path, mode, owner=owner, group=group, check=player.check(task))

    commands = [hostfiles.stat_argv("/", path), hostfiles.dir_argv("/", path, int(mode, 8))]
    return _host_step(player, hosts, "dir", hiding(player, args, commands, body))


def _copy(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    """Ansible's copy (and template, whose ``src`` the player rendered into ``content``)."""
    path = host_path(task, args, "dest")
    secret = player.secrets.found_in(args)
    # A file holding a secret is its owner's alone unless the task says otherwise (a mode
    # that lets others read it was refused before the task started); any other file keeps
    # its mode unless one is given, as Ansible's copy does (a new one: 0644).
    default = "0600" if player.secrets.found_in(args["content"]) else None
    mode = given_mode(task, args) or default
    owner, group = (account(task, args, key) for key in ("owner", "group"))
    content = str(args["content"]).encode()
    return _write_step(
        player,
        hosts,
        task,
        args,
        path,
        content,
        mode,
        secret,
        owner=owner,
        group=group,
        backup=bool(args.get("backup")),
    )


def account(task: Task, args: Mapping[str, Any], key: str) -> str | None:
    """A task's ``owner`` or ``group``: a user or group name (or id), or None."""
    value = args.get(key)
    if value is None:
        return None
    if not hostfiles.ACCOUNT.fullmatch(str(value)):
        raise PlaybookError(
            f"{task.where}.{task.step}.{key}: {value!r} is not a user or group name",
            line=task.line,
        )
    return str(value)


def _write_step(
    player: Player,
    hosts: list[Host],
    task: Task,
    args: Mapping[str, Any],
    path: str,
    content: bytes,
    mode: str | None,
    secret: bool,
    *,
    owner: str | None = None,
    group: str | None = None,
    backup: bool = False,
) -> FleetResult:
    def body(ctx: HostContext) -> HostResult:
        return files.ensure_file(
            ctx,
            path,
            content,
            mode,
            owner=owner,
            group=group,
            check=player.check(task),
            diff=player.options.diff,
            secret=secret,
            backup=backup,
        )

    commands = [
        hostfiles.stat_argv("/", path, content=True),
        hostfiles.write_argv("/", path, int(mode or "644", 8), "any", owner=hostfiles.LEAVE),
    ]
    return _host_step(player, hosts, task.step, hiding(player, args, commands, body))


def cron_file_step(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    """fleet's cron: ``schedule`` and ``job`` as a file ``/etc/cron.d/fleet-NAME``."""
    if "job" not in args:
        raise PlaybookError(f"{task.where}.cron.job: required with schedule", line=task.line)
    name, schedule, job = str(args["name"]), str(args["schedule"]).strip(), str(args["job"])
    if not hostfiles.CRON_D_NAME.fullmatch(name):
        # cron ignores /etc/cron.d files whose names have dots or odd characters.
        raise PlaybookError(
            f"{task.where}.cron.name: {name!r}: use letters, digits, '-' and '_'", line=task.line
        )
    if not hostfiles.CRON_SCHEDULE.fullmatch(schedule) or "\n" in job:
        raise PlaybookError(
            f"{task.where}.cron: schedule {schedule!r} needs five fields (or @daily...), job one line",
            line=task.line,
        )
    content = f"# Managed by fleet (playbook task '{task.title}'); edits are overwritten.\n{schedule} root {job}\n".encode()
    path = f"/etc/cron.d/fleet-{name}"
    # Only root's cron reads these files, and a job line often carries a credential, marked
    # secret or not: 0600 always, so a file's mode never depends on what a run marked.
    secret = player.secrets.found_in(args)
    return _write_step(player, hosts, task, args, path, content, "600", secret)


def _provision(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    from fleet.ops.provision.run import BaseImage, ProvisionOptions, provision, resolve_base_images
    from fleet.ops.provision.settings import settings_for_hosts

    options = ProvisionOptions(
        check=player.options.check, diff=player.options.diff, ship_base=not args.get("skip_base")
    )
    settings = settings_for_hosts(hosts)
    bases: Mapping[str, BaseImage] = {}
    if options.ship_base:
        settings, bases = resolve_base_images(settings, player.options.project)
    return provision(player.runner, hosts, settings, bases, options)


def _audit(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    from fleet.ops import audit as audit_mod

    repository = _repository(player, args)
    versions = daemon.list_versions(player.client, repository)
    expect = args.get("expect")
    options = audit_mod.AuditOptions(
        repository=repository,
        controller_versions=tuple(versions),
        expected=audit_mod.resolve_expected(str(expect), versions) if expect else None,
        history=int(args.get("history", 1)),
    )
    return audit_mod.audit(player.runner, hosts, options).result


def secret_references(value: Any, names: frozenset[str]) -> str | None:
    """The first secret name a template in ``value`` refers to."""
    if isinstance(value, str):
        for expression in re.findall(r"\{\{(.*?)\}\}", value, re.S):
            for name in sorted(names):
                if re.search(rf"\b{re.escape(name)}\b", expression):
                    return name
        return None
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return next((n for v in value if (n := secret_references(v, names))), None)
    return None


# Steps that act on a host and record nothing of their arguments: secrets may go there.
HOST_STEPS = frozenset(
    {
        "exec",
        "dir",
        "copy",
        "cron",
        "command",
        "shell",
        "file",
        "template",
        "lineinfile",
        "set_fact",
        "assert",
    }
)


STEPS: dict[str, Step] = {
    "audit": _audit,
    "provision": _provision,
    "push": _push,
    "deploy": _deploy,
    "rollback": _rollback,
    "prune": _prune,
    "exec": _exec,
    "dir": _dir,
    "copy": _copy,
    "cron": cron_file_step,
    "template": _copy,
}

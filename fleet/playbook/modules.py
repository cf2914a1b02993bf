"""Ansible's modules in a fleet playbook, with Ansible's arguments and results:
``command``, ``shell``, ``file``, ``copy`` and ``template`` (fleet's copy step is
Ansible's), ``lineinfile``, ``cron``, ``wait_for``, ``service``/``systemd``, ``apt``
(:mod:`fleet.playbook.apt`), ``ping``, ``pause``, and, decided on the controller, ``debug``, ``set_fact``, ``assert``, ``fail``.
Their names and free forms are read by :mod:`fleet.playbook.dialect`, their arguments
checked by :mod:`fleet.playbook.arguments`. Files change through the same link-safe host
helper as fleet's own steps (:mod:`fleet.ops.files`).

Two kinds of implementation: host modules run on each host (:data:`HOST_MODULES`, with the
fleet-wide steps' signature), and per-host *local* ones (:data:`LOCAL_MODULES`) are
decided on the controller with the host's variables, as Ansible's action plugins are.
"""

from __future__ import annotations

import datetime
import json
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet.errors import HostError, PlaybookError, UndefinedError
from fleet.hostoutput import json_answer
from fleet.hosts.model import Host
from fleet.ops import files, hostfiles
from fleet.playbook import crontab, lines, template
from fleet.playbook.apt import apt
from fleet.playbook.schema import Play, Task
from fleet.playbook.steps import account, cron_file_step, given_mode, hiding, host_path
from fleet.programs import program
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext

if TYPE_CHECKING:
    from fleet.playbook.run import Player


# Where a command's rendered ``environment`` travels with its arguments (no module has
# an argument of that name).
ENVIRONMENT = "environment"


# -- command and shell ------------------------------------------------------------------
def command_argv(args: Mapping[str, Any], shell: bool) -> list[str]:
    """The argv a command or shell task runs (before chdir and environment)."""
    if shell:
        executable = str(args.get("executable") or "/bin/sh")
        return [executable, "-c", str(args["cmd"])]
    if args.get("argv"):
        return [str(a) for a in args["argv"]]
    try:
        return shlex.split(str(args["cmd"]))
    except ValueError as exc:
        raise PlaybookError(f"cannot split the command '{args['cmd']}': {exc}") from None


def wrapped(argv: Sequence[str], chdir: str | None, environment: Mapping[str, Any]) -> list[str]:
    """``argv`` run in ``chdir`` with ``environment``: values are passed as arguments to
    ``env`` and ``sh``, never pasted into a shell string."""
    out = list(argv)
    if environment:
        out = ["env", *(f"{k}={v}" for k, v in environment.items()), *out]
    if chdir:
        out = ["sh", "-c", 'cd -- "$1" || exit 1; shift; exec "$@"', "fleet-chdir", chdir, *out]
    return out


def _any_exists_argv(pattern: str, chdir: str | None) -> list[str]:
    """Exit 0 when a path matching the glob ``pattern`` exists (relative to ``chdir``)."""
    script = 'cd -- "$1" || exit 2; IFS=; for p in $2; do [ -e "$p" ] && exit 0; done; exit 1'
    return ["sh", "-c", script, "fleet-creates", chdir or "/", pattern]


def _stamp(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M:%S.%f")


def run_command(
    ctx: HostContext,
    args: Mapping[str, Any],
    *,
    shell: bool,
    environment: Mapping[str, Any],
    check: bool,
) -> HostResult:
    """Ansible's command (or shell) on one host, with its registered keys as details."""
    argv = command_argv(args, shell)
    shown = str(args["cmd"]) if shell or not args.get("argv") else shlex.join(argv)
    chdir = str(args["chdir"]) if args.get("chdir") else None
    base: dict[str, Any] = {"cmd": shown if shell else argv, "rc": 0}
    for key, wants in (("creates", True), ("removes", False)):
        if not args.get(key):
            continue
        found = ctx.transport.run(_any_exists_argv(str(args[key]), chdir), check=False)
        if found.exit_code not in (0, 1):
            raise HostError(ctx.name, f"cannot check {key}={args[key]}: {found.stderr.strip()}")
        if (found.exit_code == 0) == wants:
            # Ansible's words, for whoever reads the registered result.
            state = "exists" if wants else "does not exist"
            done = "Would" if check else "Did"
            message = f"{done} not run command since '{args[key]}' {state}"
            stdout = f"skipped, since {args[key]} {state}"
            details = {**base, "msg": message, "stdout": stdout}
            return ctx.result(Outcome.OK, message, details=details, stdout=stdout)
    if check:
        # What Ansible's command registers when it does not run: empty output, rc 0.
        details = {
            **base,
            "stdout": "",
            "stderr": "",
            "msg": "Command would have run if not in check mode",
        }
        if not (args.get("creates") or args.get("removes")):
            return ctx.result(Outcome.SKIPPED, details["msg"], details=details)
        return ctx.result(Outcome.CHANGED, details["msg"], details=details)
    stdin: bytes | None = None
    if args.get("stdin") is not None:
        text = str(args["stdin"])
        stdin = (text + "\n" if args.get("stdin_add_newline", True) else text).encode()
    started = time.time()
    ran = ctx.transport.run(wrapped(argv, chdir, environment), stdin=stdin, check=False)
    ended = time.time()
    details = {
        **base,
        "rc": ran.exit_code,
        "start": _stamp(started),
        "end": _stamp(ended),
        "delta": str(datetime.timedelta(seconds=ended - started)),
        "msg": "" if ran.ok else "non-zero return code",
        # A command that ran changed something, as far as anyone can tell: in Ansible a
        # failed one reports changed too (a recap with ignore_errors counts it).
        "changed": True,
    }
    return ctx.result(
        Outcome.CHANGED if ran.ok else Outcome.FAILED,
        None if ran.ok else f"non-zero return code {ran.exit_code}: {shown}",
        details=details,
        stdout=ran.stdout,
        stderr=ran.stderr,
    )


def _command(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    shell = task.step == "shell"
    environment = args.get(ENVIRONMENT) or {}

    def body(ctx: HostContext) -> HostResult:
        return run_command(
            ctx, args, shell=shell, environment=environment, check=player.check(task)
        )

    commands = [command_argv(args, shell)]
    return player.runner.run(task.step, hosts, hiding(player, args, commands, body))


# -- files ------------------------------------------------------------------------------
FILE_STATES = ("directory", "file", "touch", "absent", "link")


def _file(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    path = host_path(task, args, "path")
    state = str(args.get("state") or "file")
    if state not in FILE_STATES:
        raise PlaybookError(
            f"{task.where}.file.state: {state!r} is not one of {', '.join(FILE_STATES)}",
            line=task.line,
        )
    if state == "link" and not args.get("src"):
        raise PlaybookError(f"{task.where}.file.src: required with state: link", line=task.line)
    mode = given_mode(task, args)
    owner, group = (account(task, args, key) for key in ("owner", "group"))
    recurse = bool(args.get("recurse"))
    if recurse and state != "directory":
        raise PlaybookError(
            f"{task.where}.file.recurse: recurse option requires state to be 'directory'",
            line=task.line,
        )

    def body(ctx: HostContext) -> HostResult:
        check = player.check(task)
        if state == "directory":
            row = files.ensure_dir(
                ctx, path, mode, owner=owner, group=group, check=check, shape_parents=True
            )
            below = 0
            if recurse and (row.outcome is Outcome.OK or not check):
                below = files.ensure_below(ctx, path, mode, owner=owner, group=group, check=check)
            if below and row.outcome is Outcome.OK:
                verb = "would change" if check else "changed"
                row = ctx.result(Outcome.CHANGED, f"{verb} {below} entries below {path}")
        else:
            row = files.ensure_state(
                ctx,
                path,
                state,
                mode=mode,
                owner=owner,
                group=group,
                target=str(args.get("src") or ""),
                force=bool(args.get("force")),
                check=check,
            )
        return _with_details(row, path=path, state=state)

    return player.runner.run("file", hosts, hiding(player, args, [], body))


def _with_details(row: HostResult, **details: Any) -> HostResult:
    return HostResult(
        row.host,
        row.outcome,
        row.reason,
        row.fix,
        row.seconds,
        {**row.details, **details},
        row.stdout,
        row.stderr,
        row.payload,
    )


def _lineinfile(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    """Ansible's lineinfile: the file's text edited on the controller (:mod:`lines`),
    written back through the link-safe helper only while it is what was read."""
    path = host_path(task, args, "path")
    state = str(args.get("state") or "present")
    if state not in ("present", "absent"):
        raise PlaybookError(f"{task.where}.lineinfile.state: present or absent", line=task.line)
    if state == "present" and "line" not in args:
        raise PlaybookError(
            f"{task.where}.lineinfile.line: required with state: present", line=task.line
        )
    if state == "absent" and not {"line", "regexp", "search_string"} & args.keys():
        raise PlaybookError(
            f"{task.where}.lineinfile: give regexp, search_string or line", line=task.line
        )
    if "search_string" in args and ("regexp" in args or args.get("backrefs")):
        raise PlaybookError(
            f"{task.where}.lineinfile.search_string: not with regexp or backrefs",
            line=task.line,
        )
    if args.get("backrefs") and "regexp" not in args:
        raise PlaybookError(
            f"{task.where}.lineinfile.backrefs: regexp is required with backrefs",
            line=task.line,
        )
    mode = given_mode(task, args)
    owner, group = (account(task, args, key) for key in ("owner", "group"))

    def body(ctx: HostContext) -> HostResult:
        found = files.stat(ctx, hostfiles.root_of(path, files.roots(ctx)), path, content=True)
        if found.kind == "absent":
            if state == "absent":
                return ctx.result(
                    Outcome.OK, "file not present", details={"msg": "file not present"}
                )
            if not args.get("create"):
                raise HostError(
                    ctx.name, f"Destination {path} does not exist !", fix="create: true makes it"
                )
        elif found.content is None:
            raise HostError(ctx.name, f"{path} exists and is a {found.kind}, not a file")
        before = (found.content or b"").decode("utf-8", "surrogateescape")
        if state == "absent":
            after, removed = lines.absent(
                before,
                line=args.get("line"),
                regexp=args.get("regexp"),
                search_string=args.get("search_string"),
            )
            message = f"{removed} line(s) removed" if removed else ""
        else:
            after, message = lines.present(
                before,
                str(args["line"]),
                regexp=args.get("regexp"),
                insertafter=args.get("insertafter"),
                insertbefore=args.get("insertbefore"),
                firstmatch=bool(args.get("firstmatch")),
                search_string=args.get("search_string"),
                backrefs=bool(args.get("backrefs")),
            )
        row = files.ensure_file(
            ctx,
            path,
            after.encode("utf-8", "surrogateescape"),
            mode,
            owner=owner,
            group=group,
            check=player.check(task),
            diff=player.options.diff,
        )
        if row.outcome is Outcome.CHANGED and not message:
            message = "ownership, perms or SE linux context changed"
        return _with_details(row, msg=message)

    return player.runner.run("lineinfile", hosts, hiding(player, args, [], body))


CRON_TIMES = ("minute", "hour", "day", "month", "weekday")
SPECIAL_TIMES = ("reboot", "yearly", "annually", "monthly", "weekly", "daily", "hourly")


def _cron(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    """Ansible's cron: a named job in a user's crontab or in a ``cron_file``; fleet's own
    cron step when the task gives a ``schedule``."""
    if "schedule" in args:
        return cron_file_step(player, play, task, args, hosts)
    where = f"{task.where}.cron"
    state, special = str(args.get("state") or "present"), args.get("special_time")
    cron_file, user = args.get("cron_file"), args.get("user")
    times = [str(args.get(key, "*")) for key in CRON_TIMES]
    problem = None
    if state not in ("present", "absent"):
        problem = f"state {state!r}: present or absent"
    elif special is not None and (special not in SPECIAL_TIMES or times != ["*"] * 5):
        problem = f"special_time is one of {', '.join(SPECIAL_TIMES)}, without time fields"
    elif state == "present" and "job" not in args:
        problem = "give the job to install"
    elif state == "present" and cron_file and not user:
        problem = "to use cron_file=... give user=... as well"
    elif cron_file in ("/etc/crontab", "crontab"):
        problem = "will not manage /etc/crontab through cron_file"
    elif user is not None and not hostfiles.ACCOUNT.fullmatch(str(user)):
        problem = f"user {user!r} is not a user name"
    if problem:
        raise PlaybookError(f"{where}: {problem}", line=task.line)
    path = None
    if cron_file:
        path = str(cron_file) if str(cron_file).startswith("/") else f"/etc/cron.d/{cron_file}"
    job = crontab.entry(
        times,
        str(args.get("job", "")),
        special=str(special) if special else None,
        disabled=bool(args.get("disabled")),
        user=str(user) if path else None,
    )
    as_user = ["-u", str(user)] if user and not path else []

    def body(ctx: HostContext) -> HostResult:
        check = player.check(task)
        if path:
            found = files.stat(ctx, hostfiles.root_of(path, files.roots(ctx)), path, content=True)
            text = (found.content or b"").decode("utf-8", "surrogateescape")
        else:
            listed = ctx.transport.run(["crontab", "-l", *as_user], check=False)
            if listed.exit_code not in (0, 1):  # 1: no crontab yet
                raise HostError(ctx.name, f"cannot read the crontab: {listed.stderr.strip()}")
            text = listed.stdout if listed.ok else ""
        before = crontab.read(text)
        if state == "present":
            after, changed = crontab.present(before, str(args["name"]), job)
        else:
            after, changed = crontab.absent(before, str(args["name"]))
        details = {"jobs": crontab.names(after), "envs": []}
        if path and state == "absent" and changed and not after:
            # A cron file goes with its last job, as Ansible's does.
            if not check:
                files.ensure_state(ctx, path, "absent")
            return ctx.result(Outcome.CHANGED, f"removed {path}", details=details)
        # A crontab whose last line has no newline is rewritten: cron skips such a line.
        changed = changed or (bool(text) and not text.endswith(("\n", "\r")))
        if not changed:
            return ctx.result(Outcome.OK, "as wanted", details=details)
        rendered = crontab.render(after).encode("utf-8", "surrogateescape")
        if path:
            row = files.ensure_file(
                ctx, path, rendered, None, check=check, diff=player.options.diff
            )
            return _with_details(row, **details)
        if not check:
            ctx.transport.run(["crontab", *as_user, "-"], stdin=rendered)
        verb = "would update" if check else "updated"
        return ctx.result(
            Outcome.CHANGED, f"{verb} the crontab of {user or 'the SSH user'}", details=details
        )

    return player.runner.run("cron", hosts, hiding(player, args, [], body))


def _wait_for(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    """Ansible's wait_for, on each host: a path there (or gone, or holding a pattern), a
    TCP port accepting connections (or not), or a pause of ``timeout`` seconds."""
    state = str(args.get("state") or "started")
    if state not in ("started", "present", "stopped", "absent"):
        raise PlaybookError(
            f"{task.where}.wait_for.state: started, present, stopped or absent", line=task.line
        )
    if "path" in args and "port" in args:
        raise PlaybookError(f"{task.where}.wait_for: give path or port, not both", line=task.line)
    try:
        timeout, delay, pause = (
            float(args.get(k, d)) for k, d in (("timeout", 300), ("delay", 0), ("sleep", 1))
        )
    except (TypeError, ValueError):
        raise PlaybookError(
            f"{task.where}.wait_for: timeout, delay and sleep are seconds", line=task.line
        ) from None
    if "path" in args:
        kind, target = "path", str(args["path"])
        waited = f"file {target}"
    elif "port" in args:
        kind, target = "port", f"{args.get('host', '127.0.0.1')}:{args['port']}"
        waited = target
    else:
        kind, target, waited = "none", "", ""
    argv = [
        "python3",
        "-I",
        "-c",
        program("wait_for.py"),
        kind,
        target,
        state,
        str(timeout),
        str(delay),
        str(pause),
        str(args.get("search_regex") or ""),
    ]

    def body(ctx: HostContext) -> HostResult:
        if player.check(task):
            # Ansible's wait_for has no check mode: the task is skipped.
            skipped = "remote module (wait_for) does not support check mode"
            return ctx.result(Outcome.SKIPPED, skipped, details={"msg": skipped})
        ran = ctx.transport.run(argv, check=False, timeout=timeout + delay + 60)
        said = json_answer(ctx.name, "wait_for", ran.stdout, ran.stderr)
        details = {"elapsed": said.get("elapsed"), "state": state}
        if ran.exit_code == 0:
            return ctx.result(Outcome.OK, f"waited {said.get('elapsed')}s", details=details)
        message = str(args.get("msg") or f"Timeout when waiting for {waited}")
        return ctx.result(Outcome.FAILED, message, details={**details, "msg": message})

    return player.runner.run("wait_for", hosts, body)


SERVICE_STATES = ("started", "stopped", "restarted", "reloaded")


def _service(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    """Ansible's service (systemd, else the init script) and systemd (systemd only)."""
    name, state = str(args.get("name") or "-"), args.get("state")
    if state is not None and state not in SERVICE_STATES:
        raise PlaybookError(
            f"{task.where}.{task.step}.state: one of {', '.join(SERVICE_STATES)}", line=task.line
        )
    if state is None and args.get("enabled") is None and not args.get("daemon_reload"):
        raise PlaybookError(
            f"{task.where}.{task.step}: give state, enabled or daemon_reload", line=task.line
        )
    if name == "-" and (
        task.step != "systemd" or state is not None or args.get("enabled") is not None
    ):
        raise PlaybookError(f"{task.where}.{task.step}.name: required", line=task.line)
    if name != "-" and not hostfiles.ACCOUNT.fullmatch(name.removesuffix(".service")):
        raise PlaybookError(
            f"{task.where}.{task.step}.name: {name!r} is not a service name", line=task.line
        )
    enabled = args.get("enabled")

    def body(ctx: HostContext) -> HostResult:
        argv = [
            "sh",
            "-c",
            program("service.sh"),
            "fleet-service",
            name,
            str(state or "-"),
            "-" if enabled is None else "yes" if enabled else "no",
            "yes" if args.get("daemon_reload") else "no",
            "systemd" if task.step == "systemd" else "auto",
            "yes" if player.check(task) else "no",
        ]
        ran = ctx.transport.run(argv, check=False)
        if not ran.ok:
            raise HostError(ctx.name, ran.stderr.strip() or f"exit {ran.exit_code}")
        said = dict(word.split("=", 1) for word in ran.stdout.split() if "=" in word)
        details = {
            "name": name,
            "state": "started" if said.get("active") == "yes" else "stopped",
            "enabled": said.get("enabled") == "yes",
            "manager": said.get("manager"),
        }
        changed = said.get("changed") == "yes"
        reason = f"{name} {details['state']}" + (" (changed)" if changed else "")
        return ctx.result(Outcome.CHANGED if changed else Outcome.OK, reason, details=details)

    return player.runner.run(task.step, hosts, body)


def read_source(player: Player, task: Task, name: str, folder: str) -> str:
    """A controller file a copy or template names: as Ansible finds it, in the playbook's
    ``files/`` or ``templates/`` folder first, then beside the playbook."""
    base = player.book.path.resolve().parent
    given = Path(name)
    candidates = [given] if given.is_absolute() else [base / folder / given, base / given]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return candidate.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise PlaybookError(f"{task.where}: cannot read {candidate}: {exc}") from None
    raise PlaybookError(
        f"{task.where} ({task.title}): could not find {name!r}",
        path=str(player.book.path),
        line=task.line,
        fix="looked in " + ", ".join(str(c) for c in candidates),
    )


def file_arguments(
    player: Player, task: Task, args: Mapping[str, Any], variables: Mapping[str, Any]
) -> dict[str, Any]:
    """A copy's or template's arguments with ``src`` read into ``content`` (a template's
    rendered with the host's variables), so hosts whose files come out the same share one
    run."""
    if task.step not in ("copy", "template") or "src" not in args:
        return dict(args)
    text = read_source(
        player, task, str(args["src"]), "templates" if task.step == "template" else "files"
    )
    if task.step == "template":
        try:
            text = template.render_text(text, variables)
        except PlaybookError as exc:
            raise PlaybookError(f"{args['src']}: {exc.message}", fix=exc.fix) from None
    content = {key: value for key, value in args.items() if key != "src"}
    return {**content, "content": text, "source": str(args["src"])}


# -- decided on the controller ----------------------------------------------------------
Local = Callable[[Task, Mapping[str, Any], Mapping[str, Any], str], HostResult]


def _debug(
    task: Task, args: Mapping[str, Any], variables: Mapping[str, Any], host: str
) -> HostResult:
    if "var" in args:
        name = str(args["var"])
        try:
            value = template.expression(name, variables)
        except (UndefinedError, PlaybookError):
            value = "VARIABLE IS NOT DEFINED!"
        return HostResult(host, Outcome.OK, f"{name}: {_shown(value)}", details={name: value})
    message = args.get("msg", "Hello world!")
    return HostResult(host, Outcome.OK, _shown(message), details={"msg": message})


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _set_fact(
    task: Task, args: Mapping[str, Any], variables: Mapping[str, Any], host: str
) -> HostResult:
    facts = {k: v for k, v in args.items() if k != "cacheable"}
    shown = ", ".join(sorted(facts))
    return HostResult(host, Outcome.OK, f"set {shown}", details={"ansible_facts": facts})


def _assert(
    task: Task, args: Mapping[str, Any], variables: Mapping[str, Any], host: str
) -> HostResult:
    that = args["that"]
    conditions = that if isinstance(that, list) else [that]
    for given in conditions:
        text = ("true" if given else "false") if isinstance(given, bool) else str(given)
        try:
            held = bool(template.expression(text, variables))
        except UndefinedError as exc:
            raise PlaybookError(
                f"{task.where}.assert.that: {exc.message}", line=task.line
            ) from None
        if not held:
            message = args.get("fail_msg", args.get("msg", "Assertion failed"))
            return HostResult(
                host,
                Outcome.FAILED,
                f"{_shown(message)} (assertion: {text})",
                details={"assertion": text, "evaluated_to": False, "msg": message},
            )
    message = args.get("success_msg", "All assertions passed")
    return HostResult(host, Outcome.OK, _shown(message), details={"msg": message})


def _fail(
    task: Task, args: Mapping[str, Any], variables: Mapping[str, Any], host: str
) -> HostResult:
    message = args.get("msg", "Failed as requested from task")
    return HostResult(host, Outcome.FAILED, _shown(message), details={"msg": message})


LOCAL_MODULES: Mapping[str, Local] = {
    "debug": _debug,
    "set_fact": _set_fact,
    "assert": _assert,
    "fail": _fail,
}


def _ping(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    data = str(args.get("data", "pong"))

    def body(ctx: HostContext) -> HostResult:
        ctx.transport.run(["true"])
        return ctx.result(Outcome.OK, data, details={"ping": data})

    return player.runner.run("ping", hosts, body)


def _pause(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    """Ansible's pause, for a time only (a prompt would wait for a person, and fleet runs
    unattended); the player runs it once, for the first host (:data:`ONCE`)."""
    try:
        seconds = float(args.get("seconds") or 0) + 60 * float(args.get("minutes") or 0)
    except (TypeError, ValueError):
        raise PlaybookError(
            f"{task.where}.pause: seconds and minutes are numbers", line=task.line
        ) from None
    started = time.monotonic()
    if not player.check(task):
        player.runner.stopping.wait(seconds)
    waited = time.monotonic() - started
    return FleetResult.of(
        "pause",
        (
            HostResult(h.name, Outcome.OK, f"paused {waited:.0f}s", details={"delta": waited})
            for h in hosts
        ),
    )


# Modules that run once for the batch, reported on its first host, as Ansible's do.
ONCE = frozenset({"pause"})

HOST_MODULES = {
    "apt": apt,
    "command": _command,
    "shell": _command,
    "file": _file,
    "lineinfile": _lineinfile,
    "cron": _cron,
    "wait_for": _wait_for,
    "service": _service,
    "systemd": _service,
    "ping": _ping,
    "pause": _pause,
}

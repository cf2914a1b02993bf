"""Running a playbook: plays in order, tasks in order, every host's outcome counted.

Ansible's semantics where they apply: a play's hosts run in ``serial`` batches; within a
batch each task runs on every host still in play; a host that fails (or cannot be
reached) leaves the play unless the task says ``ignore_errors``; ``max_fail_percentage``
ends the play when more of a batch failed; ``any_errors_fatal`` ends everything at the
first failure. Arguments are templated per host; a fleet-wide step (push, deploy, ...)
runs once for each group of hosts whose arguments came out the same. The result counts,
per host, ok/changed/failed/unreachable/skipped/ignored, plus the framework version before
and after (from deploy and rollback).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from fleet.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    FleetError,
    HostError,
    Interrupted,
    PlaybookError,
    PlayStopped,
    RunSpecError,
    UsageError,
)
from fleet.hosts.model import Host, Inventory
from fleet.hosts.patterns import group_hosts
from fleet.images import build as images
from fleet.images import daemon
from fleet.images.project import load_project
from fleet.images.runspec import RunPolicy
from fleet.ops import deploy as deploy_mod
from fleet.ops import hostfiles, prune
from fleet.playbook import loop
from fleet.playbook.schema import Play, Playbook, Task, condition
from fleet.playbook.secret import DIFF_HIDDEN, Secrets
from fleet.playbook.template import Taint, render, tracking
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, Runner
from fleet.ship.plan import PushOptions
from fleet.ship.push import push
from fleet.ssh.endpoint import BECOME_PASSWORD_VARS

__all__ = ["Interrupted", "PlayOptions", "PlaybookRun", "Player", "Tally", "run"]


@dataclass(frozen=True)
class PlayOptions:
    """How to run: dry run, diffs, tags, limit, extra variables."""

    check: bool = False
    diff: bool = False
    tags: frozenset[str] = frozenset()
    skip_tags: frozenset[str] = frozenset()
    limit: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    project: str = "."
    secret_names: frozenset[str] = frozenset()


class PlayEvents(Protocol):
    """What a reporter hears of a playbook run."""

    def play_started(self, play: Play, hosts: Sequence[str]) -> None: ...

    def task_started(self, play: Play, task: Task, hosts: Sequence[str]) -> None: ...

    def task_finished(self, play: Play, task: Task, result: FleetResult) -> None: ...


@dataclass
class Tally:
    """One host's counts over a whole playbook, and its framework version before and after."""

    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("ok", "changed", "failed", "unreachable", "skipped", "ignored"), 0
        )
    )
    version_before: str | None = None
    version_after: str | None = None

    def add(self, result: HostResult, ignored: bool) -> None:
        """Count a task's row: each item of a looped task, else the row's outcome."""
        for outcome in loop.item_outcomes(result) or [str(result.outcome)]:
            failed = outcome in (Outcome.FAILED, Outcome.UNREACHABLE)
            self.counts["ignored" if ignored and failed else outcome] += 1
        before = result.details.get("version_before")
        after = result.details.get("version_after")
        if before is not None and self.version_before is None:
            self.version_before = str(before)
        if after is not None:
            self.version_after = str(after)


@dataclass(frozen=True)
class TaskRun:
    play: str
    task: str
    step: str
    result: FleetResult


@dataclass
class PlaybookRun:
    """Everything a playbook run did."""

    tasks: list[TaskRun] = field(default_factory=list)
    tallies: dict[str, Tally] = field(default_factory=dict)
    stopped: str = ""
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if any(t.counts["unreachable"] for t in self.tallies.values()):
            return EXIT_UNREACHABLE
        if any(t.counts["failed"] for t in self.tallies.values()):
            return EXIT_FAILED
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
            "stopped": self.stopped or None,
            "tasks": [
                {"play": t.play, "task": t.task, "step": t.step, **t.result.to_json()}
                for t in self.tasks
            ],
            "recap": {
                host: {
                    **tally.counts,
                    "version_before": tally.version_before,
                    "version_after": tally.version_after,
                }
                for host, tally in self.tallies.items()
            },
        }


# -- running ----------------------------------------------------------------------------
class Player:
    """Runs a validated playbook against an inventory with one runner (one connection per host)."""

    def __init__(
        self,
        book: Playbook,
        inventory: Inventory,
        runner: Runner,
        options: PlayOptions,
        events: PlayEvents,
    ) -> None:
        self.book = book
        self.inventory = inventory
        # Ansible's groups (each group's hosts, its children's included) and hostvars.
        self._groups = {name: group_hosts(inventory, name) for name in inventory.groups}
        self._hostvars = {name: dict(h.vars) for name, h in inventory.hosts.items()}
        # Per host, what its tasks registered (register: NAME), for the tasks after them.
        self._registered: dict[str, dict[str, Any]] = {}
        self.runner = runner
        self.options = options
        self.events = events
        self.run = PlaybookRun()
        self._client: Any = None
        self.controller_vars: dict[str, Any] = {}
        # Sudo's password is a secret wherever it comes from, marked or not.
        self._secrets = Secrets.of(
            options.secret_names | frozenset(BECOME_PASSWORD_VARS),
            [
                options.extra,
                *(p.vars for p in book.plays),
                *(h.vars for h in inventory.hosts.values()),
            ],
        )
        # What templates derive from the secrets (an upper-cased token, its base64) is
        # secret too: found while rendering, redacted from then on.
        self.taint = Taint(self._secrets.values)

    @property
    def secrets(self) -> Secrets:
        """The run's secrets, with every value the templates derived from them so far."""
        self._secrets = self._secrets.adding(self.taint.derived)
        return self._secrets

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = daemon.connect()
        return self._client

    def prepare(self) -> list[tuple[Play, list[Host]]]:
        """Select every play's hosts before anything runs (bad patterns: exit 5, no host touched).

        Tasks that would record a secret are refused here too, before any host is touched.
        """
        for play in self.book.plays:
            for task in play.tasks:
                used = _secret_references(task.args, self.secrets.names)
                if task.step not in _HOST_STEPS and used:
                    raise self._secret_refused(task, f"the secret variable {used}")
                if task.step == "copy" and _secret_references(
                    task.args.get("content"), self.secrets.names
                ):
                    self._refuse_readable_secret_file(task, task.args)
        return [
            (play, self.inventory.select(play.hosts, self.options.limit))
            for play in self.book.plays
        ]

    def play_all(self) -> PlaybookRun:
        with tracking(self.taint):
            return self._play_all()

    def _play_all(self) -> PlaybookRun:
        started = time.monotonic()
        selected = self.prepare()
        for _, hosts in selected:
            for host in hosts:
                self.run.tallies.setdefault(host.name, Tally())
        try:
            for play, hosts in selected:
                self.events.play_started(play, [h.name for h in hosts])
                try:
                    self._play(play, hosts)
                except PlayStopped as stop:
                    self.run.stopped = stop.reason
                    if stop.everything:
                        break
        finally:
            self.run.seconds = time.monotonic() - started
        return self.run

    def _play(self, play: Play, hosts: list[Host]) -> None:
        tasks = [t for t in play.tasks if self._tag_selected(t)]
        for batch in deploy_mod.batches(hosts, play.serial):
            active = list(batch)
            for task in tasks:
                if not active:
                    break
                result = self._task(play, task, active)
                self.run.tasks.append(TaskRun(play.name, task.title, task.step, result))
                failed = [r.host for r in result.results if not r.succeeded]
                for row in result.results:
                    self.run.tallies.setdefault(row.host, Tally()).add(row, task.ignore_errors)
                if failed and not task.ignore_errors:
                    active = [h for h in active if h.name not in failed]
                    if play.any_errors_fatal:
                        raise PlayStopped(
                            f"any_errors_fatal: {task.title} failed on {', '.join(failed)}",
                            everything=True,
                        )
                    gone = len(batch) - len(active)
                    if (
                        play.max_fail_percentage is not None
                        and gone * 100 / len(batch) > play.max_fail_percentage
                    ):
                        raise PlayStopped(
                            f"play '{play.name}' stopped: {gone}/{len(batch)} hosts of a batch failed, "
                            f"more than max_fail_percentage {play.max_fail_percentage:g}",
                            everything=False,
                        )

    def _tag_selected(self, task: Task) -> bool:
        tags = set(task.tags)
        if "always" in tags:
            return True
        if self.options.skip_tags & tags:
            return False
        return not self.options.tags or bool(self.options.tags & tags)

    def variables(self, play: Play, host: Host | None) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        if host is not None:
            merged.update(host.vars)
            merged["inventory_hostname"] = host.name
            merged["group_names"] = sorted(g for g in host.groups if g not in ("all", "ungrouped"))
        # The variables Ansible provides every template.
        merged["groups"] = self._groups
        merged["hostvars"] = self._hostvars
        merged["ansible_check_mode"] = self.options.check
        merged.update(play.vars)
        merged.update(self.controller_vars)
        if host is not None:
            merged.update(self._registered.get(host.name, {}))
        merged.update(self.options.extra)
        # Play vars may refer to each other and to inventory vars: one rendering pass.
        for key in play.vars:
            if key not in self.options.extra:
                with contextlib.suppress(PlaybookError):
                    merged[key] = render(play.vars[key], merged)
        return merged

    def _task(self, play: Play, task: Task, hosts: list[Host]) -> FleetResult:
        started = time.monotonic()
        self.events.task_started(play, task, [h.name for h in hosts])
        if task.step == "build":
            result = self.secrets.result(self._build(play, task, hosts))
            self.events.task_finished(play, task, result)
            return result
        variables_of = {h.name: self.variables(play, h) for h in hosts}
        items_of = {
            h.name: self._guarded(task, h.name, partial(loop.items, task, variables_of[h.name]))
            for h in hosts
            if task.looped
        }
        runs: dict[str, list[loop.ItemRun]] = {h.name: [] for h in hosts}
        rounds = max(map(len, items_of.values()), default=0) if task.looped else 1
        # A host's items run in order, hosts side by side: round i runs every host's item i.
        for index in range(rounds):
            round_vars: dict[str, dict[str, Any]] = {}
            for host in hosts:
                variables = variables_of[host.name]
                if task.looped:
                    host_items = items_of[host.name]
                    if index >= len(host_items) or loop.gone(runs[host.name]):
                        continue
                    variables = {**variables, **loop.variables(task, host_items[index], index)}
                round_vars[host.name] = variables
            chosen = [h for h in hosts if h.name in round_vars]
            for ran in self._round(play, task, chosen, round_vars):
                variables = round_vars[ran.host]
                row, value = self._judge(task, variables, ran)
                if not task.looped:
                    runs[row.host].append(loop.ItemRun(None, "", row, value))
                    continue
                name = self._guarded(task, row.host, partial(loop.label, task, variables))
                runs[row.host].append(loop.ItemRun(variables[task.loop_var], name, row, value))
        results: dict[str, HostResult] = {}
        for host in hosts:
            if task.looped:
                row, value = loop.combined(host.name, runs[host.name], task.loop_var)
            else:
                only = runs[host.name][0]
                row, value = only.row, dict(only.value)
            if task.register:
                self._registered.setdefault(host.name, {})[task.register] = value
            results[host.name] = row
        result = FleetResult.of(
            task.step, (results[h.name] for h in hosts), time.monotonic() - started
        )
        result = self.secrets.result(result)
        self.events.task_finished(play, task, result)
        return result

    def _guarded(self, task: Task, host: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, a template's error named with the task, the host and the fix."""
        try:
            return compute()
        except PlaybookError as exc:
            raise PlaybookError(
                f"{task.where} ({task.title}) on {host}: {exc.message}",
                path=str(self.book.path),
                line=task.line,
                fix=exc.fix or "define the variable (play vars, inventory, -e)",
            ) from None

    def _round(
        self, play: Play, task: Task, hosts: list[Host], variables_of: Mapping[str, dict[str, Any]]
    ) -> list[HostResult]:
        """The step run once on each of ``hosts`` with its variables; a fleet-wide step once
        per group of hosts whose arguments came out the same."""
        results: dict[str, HostResult] = {}
        groups: dict[str, tuple[dict[str, Any], list[Host]]] = {}
        for host in hosts:
            variables = variables_of[host.name]
            if not self._guarded(task, host.name, partial(condition, task, variables)):
                results[host.name] = HostResult(host.name, Outcome.SKIPPED, f"when: {task.when}")
                continue
            args = self._guarded(task, host.name, partial(render, task.args, variables))
            self._refuse_recorded_secrets(task, args, f" on {host.name}")
            if task.step == "copy" and self.secrets.found_in(args.get("content")):
                self._refuse_readable_secret_file(task, args, f" on {host.name}")
            key = json.dumps(args, sort_keys=True, default=str)
            groups.setdefault(key, (args, []))[1].append(host)
        for args, members in groups.values():
            step = _STEPS[task.step]
            try:
                outcome = step(self, play, task, args, members)
            except Interrupted:
                raise
            except FleetError as exc:
                # A step that cannot start (no image, bad option) fails each of its hosts.
                outcome = FleetResult.of(
                    task.step,
                    (HostResult(h.name, Outcome.FAILED, exc.message, exc.fix) for h in members),
                )
            results.update({r.host: r for r in outcome.results})
        return [results[h.name] for h in hosts if h.name in results]

    def _judge(
        self, task: Task, variables: Mapping[str, Any], row: HostResult
    ) -> tuple[HostResult, dict[str, Any]]:
        """An exec's result judged by ``changed_when``/``failed_when`` (with the variables
        the task ran with), and the value ``register`` keeps of it."""
        value = registered_value(task, row)
        judged = row.outcome not in (Outcome.SKIPPED, Outcome.UNREACHABLE)
        if judged and (task.changed_when or task.failed_when):
            variables = dict(variables)
            if task.register:
                variables[task.register] = value
            failed = (
                self._guarded(task, row.host, partial(condition, task, variables, "failed_when"))
                if task.failed_when
                else row.outcome is Outcome.FAILED
            )
            changed = (
                self._guarded(task, row.host, partial(condition, task, variables, "changed_when"))
                if task.changed_when
                else True
            )
            outcome = Outcome.FAILED if failed else Outcome.CHANGED if changed else Outcome.OK
            if outcome is not row.outcome:
                why = f"failed_when: {task.failed_when}" if failed else row.reason
                row = dataclasses.replace(row, outcome=outcome, reason=why)
            value = {**value, "changed": changed and not failed, "failed": failed}
        return row, value

    def _refuse_recorded_secrets(
        self, task: Task, args: Mapping[str, Any], on_host: str = ""
    ) -> None:
        """Secrets stay out of steps whose arguments end up in image labels or host history."""
        if task.step in _HOST_STEPS or not self.secrets.found_in(args):
            return
        names = ", ".join(sorted(self.secrets.names))
        raise self._secret_refused(task, f"a secret variable ({names})", on_host)

    def _secret_refused(self, task: Task, what: str, on_host: str = "") -> PlaybookError:
        where = (
            "which shows them"
            if task.step == "debug"
            else "which records them (image labels, host history)"
        )
        return PlaybookError(
            f"{task.where} ({task.title}){on_host}: {what} is used in the arguments of "
            f"'{task.step}', {where}",
            path=str(self.book.path),
            line=task.line,
            fix="use secrets only in exec, copy, cron or dir tasks",
        )

    def _refuse_readable_secret_file(
        self, task: Task, args: Mapping[str, Any], on_host: str = ""
    ) -> None:
        """A file holding a secret is for its owner only: a mode that lets others read it
        is refused, not tightened, since whoever asked for it expects others to read it."""
        given = args.get("mode")
        if given is None or (isinstance(given, str) and "{{" in given):
            return  # the default for such a file is 0600; a template is judged once rendered
        mode = _mode_of(task, given, "0600")
        if int(mode, 8) & 0o077:
            raise PlaybookError(
                f"{task.where}.copy.mode ({task.title}){on_host}: the content holds a secret "
                f"variable, and mode {mode} lets others than the owner read it",
                path=str(self.book.path),
                line=task.line,
                fix="use mode 0600 (or 0400, 0700), or leave mode out: a file holding a "
                "secret defaults to 0600",
            )

    # -- controller steps -------------------------------------------------------------
    def _build(self, play: Play, task: Task, hosts: list[Host]) -> FleetResult:
        args = render(task.args, self.variables(play, None))
        self._refuse_recorded_secrets(task, args)
        if "build" in self.controller_vars and self.controller_vars["build"].get("args") == args:
            built = self.controller_vars["build"]
            return FleetResult.of(
                "build",
                (
                    HostResult(
                        h.name, Outcome.OK, f"{built['reference']} (built earlier in this play)"
                    )
                    for h in hosts
                ),
            )
        project = load_project(
            str(args.get("project", self.options.project)), tag_prefix=args.get("tag_prefix")
        )
        if self.options.check:
            from fleet.images import gitinfo

            git = gitinfo.read(project.root)
            tag = project.tag(git)
            reference = f"{project.repository}:{tag}"
            self.controller_vars["build"] = {
                "reference": reference,
                "tag": tag,
                "image_id": "",
                "args": args,
            }
            outcome, note = Outcome.CHANGED, f"would build {reference}"
        else:
            built = images.build(
                self.client,
                project,
                rebuild_base=bool(args.get("rebuild_base")),
                rebuild=bool(args.get("rebuild")),
            )
            self.controller_vars["build"] = {
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
                    details={"image": self.controller_vars["build"]["reference"]},
                )
                for h in hosts
            ),
        )

    def image(self, args: Mapping[str, Any], key: str) -> str:
        """The image a step ships: its argument, the play's build, or the newest built."""
        value = args.get(key)
        if value:
            text = str(value)
            if ":" not in text:
                text = f"{load_project(str(args.get('project', self.options.project))).repository}:{text}"
            return text
        if "build" in self.controller_vars:
            return str(self.controller_vars["build"]["reference"])
        repository = load_project(str(args.get("project", self.options.project))).repository
        for version in daemon.list_versions(self.client, repository):
            if version.tagged:
                return version.reference
        raise UsageError(
            f"no version of {repository} is built on this machine",
            fix="add a build task, or run 'fleet build'",
        )


# -- fleet-wide steps -------------------------------------------------------------------
Step = Callable[[Player, Play, Task, dict[str, Any], list[Host]], FleetResult]


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
    reference = player.image(args, "image")
    if player.options.check and not daemon.has_image(player.client, reference):
        return _not_built(reference, hosts, "push")
    image = daemon.shippable(player.client, reference)
    min_free = args.get("min_free") or 0
    options = PushOptions(
        compress=str(args.get("compress", "auto")),
        check=player.options.check,
        min_free_bytes=_size(min_free),
        **shipping_options(args),
    )
    return push(player.runner, hosts, image, options)


def shipping_options(args: Mapping[str, Any]) -> dict[str, Any]:
    """The push/deploy arguments that say how the image travels (``fleet push --via``...)."""
    rates = {
        key: float(_size(str(args[key]).removesuffix("/s"), key)) if args.get(key) else None
        for key in ("max_rate", "max_rate_per_host")
    }
    return {"via": str(args.get("via", "ssh")), "registry": args.get("registry"), **rates}


def _deploy_options(
    player: Player, args: Mapping[str, Any], repository: str
) -> deploy_mod.DeployOptions:
    return deploy_mod.DeployOptions(
        repository=repository,
        check=player.options.check,
        wait_lock=float(args.get("wait", 0)),
        compress=str(args.get("compress", "auto")),
        **shipping_options(args),
    )


def _deploy(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    reference = player.image(args, "version")
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
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(value), re.I)
    if not match:
        raise UsageError(f"{what}: {value!r} is not a size like 10G")
    return int(float(match.group(1)) * 1024 ** " KMGT".index(match.group(2).upper() or " "))


# -- small host steps -------------------------------------------------------------------
def _host_step(
    player: Player, hosts: list[Host], name: str, body: Callable[[HostContext], HostResult]
) -> FleetResult:
    return player.runner.run(name, hosts, body)


def registered_value(task: Task, row: HostResult) -> dict[str, Any]:
    """A host's result as ``register:`` keeps it: Ansible's keys (``changed``, ``failed``,
    ``skipped``, ``msg``; an exec's ``rc``, ``stdout``, ``stdout_lines``, ``stderr``,
    ``stderr_lines``; a deploy's ``version_before``/``version_after``) and fleet's details."""
    value: dict[str, Any] = dict(row.details)
    value.update(
        changed=row.outcome is Outcome.CHANGED,
        failed=row.outcome in (Outcome.FAILED, Outcome.UNREACHABLE),
        skipped=row.outcome is Outcome.SKIPPED,
        msg=row.reason or "",
    )
    if row.outcome is Outcome.SKIPPED:
        value["skip_reason"] = row.reason or ""
    elif task.step == "exec":
        stdout, stderr = row.stdout.removesuffix("\n"), row.stderr.removesuffix("\n")
        value.update(
            rc=row.details.get("exit_code"),
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
        if player.options.check:
            return ctx.result(Outcome.SKIPPED, "exec does not run in check mode")
        return ctx.run_command(argv)

    return _host_step(player, hosts, "exec", _hiding(player, args, [argv], body))


def _hiding(
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


_MODE = re.compile(r"0?[0-7]{3,4}")
_ACCOUNT = re.compile(r"[A-Za-z_][\w.-]*|\d+")


def _roots(ctx: HostContext) -> tuple[str, ...]:
    """The host's trees that containers can write: walked without following links."""
    try:
        return RunPolicy.for_host(ctx.host.vars).paths
    except RunSpecError as exc:
        raise HostError(ctx.name, exc.message, fix=exc.fix) from None


def _helper(ctx: HostContext, argv: list[str], stdin: bytes | None = None) -> str:
    """Run the host's file helper (``fleet.ops.hostfiles``); its stdout, or a HostError."""
    ran = ctx.transport.run(argv, stdin=stdin, check=False)
    if ran.ok:
        return ran.stdout
    said = ran.stderr.strip().removeprefix("fleet: ") or f"exit {ran.exit_code}"
    if ran.exit_code == 127:
        raise HostError(
            ctx.name,
            f"python3 is not on the host ({said})",
            fix="install python3 on the host: fleet changes files there through it",
        )
    raise HostError(ctx.name, said)


def _stat(ctx: HostContext, root: str, path: str, content: bool = False) -> hostfiles.PathInfo:
    """What ``path`` is, seen from ``root`` without following a link below it: in a
    directory that containers write, a name swapped for a symlink shows as the link, and
    no other file's content (root reads /etc/shadow as well as anything) reaches a diff."""
    out = _helper(ctx, hostfiles.stat_argv(root, path, content))
    try:
        return hostfiles.PathInfo.parse(out)
    except ValueError as exc:
        raise HostError(ctx.name, f"cannot read what {path} is: {exc}") from None


def _mode_of(task: Task, value: Any, default: str) -> str:
    text = str(value if value is not None else default)
    if isinstance(value, int) and not isinstance(value, bool):
        # A number is the mode itself, as Ansible takes it: YAML reads 0640 as octal (416),
        # so its octal digits are the mode; a bare 644 is decimal (octal 1204), as there.
        text = format(value, "o")
    if not _MODE.fullmatch(text):
        raise PlaybookError(
            f"{task.where}: mode {value!r} is not an octal mode like '0755'", line=task.line
        )
    return text.lstrip("0").rjust(3, "0")


def _host_path(task: Task, args: Mapping[str, Any], key: str) -> str:
    """A task's path on the hosts: absolute, and never climbing out with '..'."""
    path = str(args[key])
    if not path.startswith("/") or ".." in path.split("/"):
        raise PlaybookError(
            f"{task.where}.{task.step}.{key}: {path!r} must be absolute, without '..'",
            line=task.line,
        )
    return path


def _dir(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    path = _host_path(task, args, "path")
    mode = _mode_of(task, args.get("mode"), "0755")
    for key in ("owner", "group"):
        if key in args and not _ACCOUNT.fullmatch(str(args[key])):
            raise PlaybookError(
                f"{task.where}.dir.{key}: {args[key]!r} is not a user or group name", line=task.line
            )

    def body(ctx: HostContext) -> HostResult:
        root = hostfiles.root_of(path, _roots(ctx))
        found = _stat(ctx, root, path)
        kind, current, owner, group = found.kind, found.mode, found.user, found.group
        changes: list[str] = []
        if kind == "absent":
            changes.append("create")
        elif kind != "directory":
            raise HostError(ctx.name, f"{path} exists and is a {kind}, not a directory")
        if kind == "absent" or current != mode:
            changes.append(f"mode {mode}")
        wanted_owner = str(args.get("owner", owner or "root"))
        wanted_group = str(args.get("group", group or wanted_owner))
        owned = "owner" in args or "group" in args
        if owned and (kind == "absent" or owner != wanted_owner or group != wanted_group):
            changes.append(f"owner {wanted_owner}:{wanted_group}")
        if not changes:
            return ctx.result(Outcome.OK, f"{path} as wanted")
        if not player.options.check:
            account = f"{wanted_owner}:{wanted_group}" if owned else hostfiles.LEAVE
            _helper(ctx, hostfiles.dir_argv(root, path, int(mode, 8), account, create=True))
        verb = "would " if player.options.check else ""
        return ctx.result(Outcome.CHANGED, f"{verb}{', '.join(changes)}: {path}")

    commands = [hostfiles.stat_argv("/", path), hostfiles.dir_argv("/", path, int(mode, 8))]
    return _host_step(player, hosts, "dir", _hiding(player, args, commands, body))


def _write_file(
    player: Player, ctx: HostContext, path: str, content: bytes, mode: str, secret: bool
) -> HostResult:
    """Put ``content`` at ``path`` with ``mode``; a ``secret`` one shows no diff."""
    root = hostfiles.root_of(path, _roots(ctx))
    found = _stat(ctx, root, path, content=True)
    kind, current_mode, current = found.kind, found.mode, found.content
    if kind not in ("absent", "regular file", "regular empty file"):
        raise HostError(ctx.name, f"{path} exists and is a {kind}, not a file")
    changes = []
    if current != content:
        changes.append("content")
    if kind == "absent" or current_mode != mode:
        changes.append(f"mode {mode}")
    details: dict[str, Any] = {}
    if player.options.diff and current != content and secret:
        details["diff"] = DIFF_HIDDEN
    elif player.options.diff and current != content:
        before = (current or b"").decode("utf-8", "replace").splitlines(keepends=True)
        after = content.decode("utf-8", "replace").splitlines(keepends=True)
        details["diff"] = "".join(
            difflib.unified_diff(before, after, f"{path} (before)", f"{path} (after)")
        )
    if not changes:
        return ctx.result(Outcome.OK, f"{path} as wanted")
    if not player.options.check:
        # Written only while the file is what was just read: a concurrent edit is kept.
        expected = "absent" if current is None else hashlib.sha256(current).hexdigest()
        argv = hostfiles.write_argv(root, path, int(mode, 8), expected, owner=hostfiles.LEAVE)
        _helper(ctx, argv, stdin=content)
    verb = "would change" if player.options.check else "changed"
    return ctx.result(Outcome.CHANGED, f"{verb} {' and '.join(changes)} of {path}", details=details)


def _copy(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    path = _host_path(task, args, "dest")
    secret = player.secrets.found_in(args)
    # A file holding a secret is its owner's alone unless the task says otherwise (a mode
    # that lets others read it was refused before the task started).
    default = "0600" if player.secrets.found_in(args["content"]) else "0644"
    mode = _mode_of(task, args.get("mode"), default)
    content = str(args["content"]).encode()
    return _write_step(player, hosts, "copy", args, path, content, mode, secret)


def _write_step(
    player: Player,
    hosts: list[Host],
    step: str,
    args: Mapping[str, Any],
    path: str,
    content: bytes,
    mode: str,
    secret: bool,
) -> FleetResult:
    def body(ctx: HostContext) -> HostResult:
        return _write_file(player, ctx, path, content, mode, secret)

    commands = [
        hostfiles.stat_argv("/", path, content=True),
        hostfiles.write_argv("/", path, int(mode, 8), "any", owner=hostfiles.LEAVE),
    ]
    return _host_step(player, hosts, step, _hiding(player, args, commands, body))


_CRON_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CRON_SCHEDULE = re.compile(
    r"(@(reboot|yearly|annually|monthly|weekly|daily|hourly))|(\S+\s+){4}\S+"
)


def _cron(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    name, schedule, job = str(args["name"]), str(args["schedule"]).strip(), str(args["job"])
    if not _CRON_NAME.fullmatch(name):
        # cron ignores /etc/cron.d files whose names have dots or odd characters.
        raise PlaybookError(
            f"{task.where}.cron.name: {name!r}: use letters, digits, '-' and '_'", line=task.line
        )
    if not _CRON_SCHEDULE.fullmatch(schedule) or "\n" in job:
        raise PlaybookError(
            f"{task.where}.cron: schedule {schedule!r} needs five fields (or @daily...), job one line",
            line=task.line,
        )
    content = f"# Managed by fleet (playbook task '{task.title}'); edits are overwritten.\n{schedule} root {job}\n".encode()
    path = f"/etc/cron.d/fleet-{name}"
    # Only root's cron reads these files, and a job line often carries a credential, marked
    # secret or not: 0600 always, so a file's mode never depends on what a run marked.
    secret = player.secrets.found_in(args)
    return _write_step(player, hosts, "cron", args, path, content, "600", secret)


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


def _debug(
    player: Player, play: Play, task: Task, args: dict[str, Any], hosts: list[Host]
) -> FleetResult:
    """Ansible's debug: each host's rendered message, shown; nothing runs on the hosts."""
    message = args["msg"]
    text = message if isinstance(message, str) else json.dumps(message, default=str)
    return FleetResult.of(
        "debug", (HostResult(h.name, Outcome.OK, text, details={"msg": message}) for h in hosts)
    )


def _secret_references(value: Any, names: frozenset[str]) -> str | None:
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
        return next((n for v in value if (n := _secret_references(v, names))), None)
    return None


# Steps that act on a host and record nothing of their arguments: secrets may go there.
_HOST_STEPS = frozenset({"exec", "dir", "copy", "cron"})

_STEPS: dict[str, Step] = {
    "audit": _audit,
    "provision": _provision,
    "push": _push,
    "deploy": _deploy,
    "rollback": _rollback,
    "prune": _prune,
    "exec": _exec,
    "dir": _dir,
    "copy": _copy,
    "cron": _cron,
    "debug": _debug,
}


def run(
    book: Playbook, inventory: Inventory, runner: Runner, options: PlayOptions, events: PlayEvents
) -> PlaybookRun:
    """Run a validated playbook; the whole account of it."""
    player = Player(book, inventory, runner, options, events)
    try:
        return player.play_all()
    except Interrupted as exc:
        for row in exc.partial.results:
            player.run.tallies.setdefault(row.host, Tally()).add(row, False)
        player.run.stopped = "interrupted (Ctrl-C)"
        return player.run

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
import json
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
    Interrupted,
    PlaybookError,
    PlayStopped,
    UsageError,
)
from fleet.hosts.model import Host, Inventory
from fleet.hosts.patterns import group_hosts
from fleet.images import build as images
from fleet.images import daemon
from fleet.images.project import load_project
from fleet.ops import deploy as deploy_mod
from fleet.ops.deploy import Switch
from fleet.playbook import loop
from fleet.playbook.schema import Play, Playbook, Task, condition
from fleet.playbook.secret import Secrets
from fleet.playbook.steps import HOST_STEPS, STEPS, mode_of, registered_value, secret_references
from fleet.playbook.template import Taint, render, tracking
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import Runner
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
        switched = result.typed(Switch)
        if switched is None:
            return
        if switched.version_before is not None and self.version_before is None:
            self.version_before = switched.version_before
        self.version_after = switched.version_after


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
                used = secret_references(task.args, self.secrets.names)
                if task.step not in HOST_STEPS and used:
                    raise self._secret_refused(task, f"the secret variable {used}")
                if task.step == "copy" and secret_references(
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
            step = STEPS[task.step]
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
        if task.step in HOST_STEPS or not self.secrets.found_in(args):
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
        mode = mode_of(task, given, "0600")
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
            options = images.BuildOptions(
                rebuild_base=bool(args.get("rebuild_base")), rebuild=bool(args.get("rebuild"))
            )
            built = images.build(self.client, project, options)
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

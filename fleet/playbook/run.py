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
    FleetError,
    Interrupted,
    PlaybookError,
    PlayStopped,
)
from fleet.hosts.model import Host, Inventory
from fleet.hosts.patterns import group_hosts
from fleet.images import daemon
from fleet.ops import deploy as deploy_mod
from fleet.playbook import loop, modules
from fleet.playbook.dialect import NO_LOG
from fleet.playbook.modules import ENVIRONMENT
from fleet.playbook.recap import PlaybookRun, Tally, TaskRun
from fleet.playbook.schema import EXPRESSIONS, SECTIONS, Play, Playbook, Task, condition
from fleet.playbook.secret import Secrets
from fleet.playbook.steps import (
    HOST_STEPS,
    build_step,
    mode_of,
    registered_value,
    secret_references,
)
from fleet.playbook.steps import STEPS as FLEET_STEPS
from fleet.playbook.task import names_variables
from fleet.playbook.template import Taint, render, tracking
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import Runner
from fleet.ssh.endpoint import BECOME_PASSWORD_VARS

# Every step a task may name that runs through the runner; LOCAL_MODULES are decided on
# the controller, per host.
STEPS = {**FLEET_STEPS, **modules.HOST_MODULES}
LOCAL_MODULES = modules.LOCAL_MODULES


def _censored(row: HostResult) -> HostResult:
    """A ``no_log`` task's row as shown: its outcome, none of its output."""
    return dataclasses.replace(
        row, reason=NO_LOG, fix=None, stdout="", stderr="", details={"censored": NO_LOG}
    )


__all__ = ["Interrupted", "PlayOptions", "PlaybookRun", "Player", "Tally", "TaskRun", "run"]


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
        # Per host, what its tasks registered (register: NAME) and set (set_fact), for the
        # tasks after them; and the handlers its changes notified, not yet run.
        self._registered: dict[str, dict[str, Any]] = {}
        self._notified: dict[str, set[str]] = {}
        self._dropped: set[str] = set()
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
            for task in play.every_task():
                used = secret_references(task.args, self.secrets.names)
                if task.step not in HOST_STEPS and used:
                    raise self._secret_refused(task, f"the secret variable {used}")
                if task.step in ("copy", "template") and secret_references(
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
            for play, selected_hosts in selected:
                # A host that failed (or was unreachable) sits out the rest of the
                # playbook, as Ansible's does; its recap keeps its counts.
                hosts = [h for h in selected_hosts if h.name not in self._dropped]
                if not hosts and selected_hosts:
                    continue
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
        for batch in deploy_mod.batches(hosts, play.serial):
            active = list(batch)
            try:
                for section in SECTIONS:
                    active = self._tasks(play, play.section(section), active, batch)
                    # Ansible flushes the notified handlers at the end of each section.
                    active = self._flush(play, active, batch)
            finally:
                left = {h.name for h in active}
                self._dropped.update(h.name for h in batch if h.name not in left)

    def _tasks(
        self,
        play: Play,
        tasks: Sequence[Task],
        active: list[Host],
        batch: Sequence[Host],
        rescuing: bool = False,
    ) -> list[Host]:
        """Run ``tasks`` in order on the hosts still in play; those left at the end.

        ``rescuing``: the tasks are a block's that has a rescue, so a host that fails
        leaves them for the rescue, counted rescued rather than failed.
        """
        for task in tasks:
            if not active:
                break
            if task.step == "block":
                active = self._block(play, task, active, batch, rescuing)
                continue
            if not self._tag_selected(task):
                continue
            result = self._task(play, task, self._reached(play, task, active))
            self.run.tasks.append(TaskRun(play.name, task.title, task.step, result))
            failed = [r.host for r in result.results if not r.succeeded]
            for row in result.results:
                tally = self.run.tallies.setdefault(row.host, Tally())
                tally.add(row, task.ignore_errors, rescued=rescuing)
                if rescuing and row.outcome is Outcome.FAILED and not task.ignore_errors:
                    # What a rescue reads of the failure, as Ansible names it.
                    self._registered.setdefault(row.host, {}).update(
                        ansible_failed_task={"name": task.title, "action": task.step},
                        ansible_failed_result=registered_value(task, row),
                    )
                if row.outcome is Outcome.CHANGED or "changed" in (loop.item_outcomes(row) or ()):
                    self._notified.setdefault(row.host, set()).update(task.notify)
            if failed and not task.ignore_errors:
                active = [h for h in active if h.name not in failed]
                if rescuing:
                    continue
                self._stop_if_too_many(play, task, failed, batch, active)
        return active

    def _stop_if_too_many(
        self,
        play: Play,
        task: Task,
        failed: Sequence[str],
        batch: Sequence[Host],
        active: Sequence[Host],
    ) -> None:
        """``any_errors_fatal`` and ``max_fail_percentage``, after a task failed on hosts."""
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

    def _block(
        self, play: Play, block: Task, active: list[Host], batch: Sequence[Host], rescuing: bool
    ) -> list[Host]:
        """Ansible's block: its tasks; ``rescue`` for the hosts that failed in them (still
        reachable), then ``always`` for every host that entered it."""
        entered = list(active)
        survived = self._tasks(play, block.block, active, batch, rescuing or bool(block.rescue))
        left = {h.name for h in survived}
        unreachable = {
            r.host
            for t in self.run.tasks
            for r in t.result.results
            if r.outcome is Outcome.UNREACHABLE
        }
        failed = [h for h in entered if h.name not in left and h.name not in unreachable]
        if block.rescue and failed:
            rescued = self._tasks(play, block.rescue, failed, batch, rescuing)
            left |= {h.name for h in rescued}
            still_failed = [h.name for h in failed if h.name not in left]
            if still_failed and not rescuing:
                self._stop_if_too_many(
                    play, block, still_failed, batch, [h for h in entered if h.name in left]
                )
        if block.always:
            ran = [h for h in entered if h.name not in unreachable]
            after = {h.name for h in self._tasks(play, block.always, ran, batch, rescuing)}
            left &= after
        return [h for h in entered if h.name in left]

    def _flush(self, play: Play, active: list[Host], batch: Sequence[Host]) -> list[Host]:
        """Run each handler, in the order they are written, on the hosts that notified it."""
        for handler in play.handlers:
            names = {handler.name, *handler.listen}
            hosts = [h for h in active if self._notified.get(h.name, set()) & names]
            if not hosts:
                continue
            for host in hosts:
                self._notified[host.name] -= names
            stayed = {h.name for h in self._tasks(play, [handler], hosts, batch)}
            active = [h for h in active if h.name in stayed or h not in hosts]
        return active

    def _reached(self, play: Play, task: Task, hosts: list[Host]) -> list[Host]:
        """The hosts as a task reaches them: with the inventory's become variables set as
        its ``become`` (or its play's) says, so their commands run through sudo; on the
        controller itself for ``delegate_to: localhost`` (with the host's variables)."""
        become = task.become if task.become is not None else play.become
        user = task.become_user or play.become_user
        added: dict[str, Any] = {}
        if become:
            added["ansible_become"] = True
            if user:
                added["ansible_become_user"] = user
        if task.delegate_to:
            added["ansible_connection"] = "local"
            if not become:
                # The remote host's own become is its own, not the controller's.
                added["ansible_become"] = False
        return [
            host
            if all(host.vars.get(k) == v for k, v in added.items())
            else dataclasses.replace(host, vars={**host.vars, **added})
            for host in hosts
        ]

    def check(self, task: Task) -> bool:
        """Whether ``task`` runs in check mode: its own ``check_mode``, else the run's."""
        return self.options.check if task.check_mode is None else task.check_mode

    def _tag_selected(self, task: Task) -> bool:
        return tags_select(set(task.tags), self.options.tags, self.options.skip_tags)

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
        # run_once: the first host runs it; every host of the batch registers its result.
        once = task.run_once or task.step in modules.ONCE
        everyone, hosts = hosts, hosts[:1] if once else hosts
        self.events.task_started(play, task, [h.name for h in hosts])
        if task.step == "build":
            result = self.secrets.result(build_step(self, play, task, hosts))
            self.events.task_finished(play, task, result)
            return result
        variables_of = {h.name: self._task_variables(play, task, h) for h in hosts}
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
            for ran in self._attempts(play, task, chosen, round_vars):
                row, value = ran
                variables = round_vars[row.host]
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
            receivers = everyone if once else [host]
            for receiver in receivers:
                kept = self._registered.setdefault(receiver.name, {})
                # A module's facts (set_fact's) become the host's variables, as in Ansible.
                kept.update(value.get("ansible_facts") or {})
                if task.register:
                    kept[task.register] = value
            results[host.name] = _censored(row) if task.no_log else row
        result = FleetResult.of(
            task.step, (results[h.name] for h in hosts), time.monotonic() - started
        )
        result = self.secrets.result(result)
        self.events.task_finished(play, task, result)
        return result

    def _task_variables(self, play: Play, task: Task, host: Host) -> dict[str, Any]:
        """A host's variables for ``task``: the play's, then the task's own ``vars``
        (below extra vars, as in Ansible)."""
        variables = self.variables(play, host)
        if not task.vars:
            return variables
        own = self._guarded(task, host.name, partial(render, task.vars, variables))
        return {**variables, **own, **self.options.extra}

    def _attempts(
        self, play: Play, task: Task, hosts: list[Host], variables_of: Mapping[str, dict[str, Any]]
    ) -> list[tuple[HostResult, dict[str, Any]]]:
        """One round of the task, judged; with ``until``, the hosts whose condition does
        not hold yet run again after ``delay``, up to ``retries`` times (Ansible's)."""
        judged: dict[str, tuple[HostResult, dict[str, Any]]] = {}
        pending = list(hosts)
        attempt = 0
        while pending:
            attempt += 1
            for ran in self._round(play, task, pending, variables_of):
                judged[ran.host] = self._judge(task, variables_of[ran.host], ran)
            if task.until is None:
                break
            waiting = []
            for host in pending:
                row, value = judged[host.name]
                value["attempts"] = attempt
                if row.outcome in (Outcome.SKIPPED, Outcome.UNREACHABLE):
                    continue
                variables = {
                    **variables_of[host.name],
                    **({task.register: value} if task.register else {}),
                }
                if not self._guarded(task, host.name, partial(condition, task, variables, "until")):
                    waiting.append(host)
            if not waiting or attempt > task.retries:
                for host in waiting:
                    row, value = judged[host.name]
                    reason = f"retries ({task.retries}) exhausted, until: {task.until}"
                    # Ansible reports the retries as the attempts of a task that ran out.
                    judged[host.name] = (
                        dataclasses.replace(row, outcome=Outcome.FAILED, reason=reason),
                        {**value, "failed": True, "msg": reason, "attempts": task.retries},
                    )
                break
            pending = waiting
            if self.runner.stopping.wait(task.delay):
                break
        return [judged[h.name] for h in hosts]

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
        per group of hosts whose arguments came out the same; a module decided on the
        controller (set_fact, assert...) once per host."""
        results: dict[str, HostResult] = {}
        groups: dict[str, tuple[dict[str, Any], list[Host]]] = {}
        for host in hosts:
            variables = variables_of[host.name]
            if not self._guarded(task, host.name, partial(condition, task, variables)):
                results[host.name] = HostResult(host.name, Outcome.SKIPPED, f"when: {task.when}")
                continue
            args = self._arguments(task, host, variables)
            if task.step in LOCAL_MODULES:
                results[host.name] = self._guarded(
                    task,
                    host.name,
                    partial(LOCAL_MODULES[task.step], task, args, variables, host.name),
                )
                continue
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

    def _arguments(self, task: Task, host: Host, variables: Mapping[str, Any]) -> dict[str, Any]:
        """The task's arguments for one host: templates rendered (a condition left as it
        is), a copy's or template's ``src`` read, a command's environment added."""
        unrendered = EXPRESSIONS.get(task.step, frozenset())
        rendered = {k: v for k, v in task.args.items() if k not in unrendered}
        args = {
            **self._guarded(task, host.name, partial(render, rendered, variables)),
            **{k: v for k, v in task.args.items() if k in unrendered},
        }
        args = dict(
            self._guarded(
                task, host.name, partial(modules.file_arguments, self, task, args, variables)
            )
        )
        if task.environment is not None and task.step in ("command", "shell"):
            environment = self._guarded(
                task, host.name, partial(render, task.environment, variables)
            )
            if not names_variables(environment):
                raise PlaybookError(
                    f"{task.where}.environment: expected a mapping of variable names",
                    line=task.line,
                )
            args[ENVIRONMENT] = {str(k): str(v) for k, v in environment.items()}
        self.refuse_recorded_secrets(task, args, f" on {host.name}")
        if task.step in ("copy", "template") and self.secrets.found_in(args.get("content")):
            self._refuse_readable_secret_file(task, args, f" on {host.name}")
        return args

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

    def refuse_recorded_secrets(
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


def tags_select(tags: set[str], only: frozenset[str], skip: frozenset[str]) -> bool:
    """Whether a task with ``tags`` runs under ``--tags only`` and ``--skip-tags skip``, as
    Ansible decides it: no ``--tags`` means ``all``; ``always`` runs unless skipped by
    name; ``never`` runs only when named; ``tagged`` and ``untagged`` select by having
    tags at all."""
    tags = tags or {"untagged"}
    only = only or frozenset({"all"})
    untagged = tags == {"untagged"}
    selected = (
        "always" in tags
        or ("all" in only and "never" not in tags)
        or not tags.isdisjoint(only)
        or ("tagged" in only and not untagged and "never" not in tags)
    )
    if not selected or not skip:
        return selected
    if "all" in skip:
        return "always" in tags and "always" not in skip
    return tags.isdisjoint(skip) and not ("tagged" in skip and not untagged)

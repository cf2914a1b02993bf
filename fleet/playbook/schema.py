"""Playbooks: a whole rollout written down once, validated, then run the same way every time.

A playbook is a YAML list of plays::

    - name: Roll the framework out           # optional
      hosts: lab                             # a host pattern
      serial: 50%                            # optional: batches of N hosts or N%
      max_fail_percentage: 0                 # optional: stop when more of a batch failed
      any_errors_fatal: false                # optional: stop everything at the first failure
      vars: {project: .}                     # optional: play variables
      tasks:
        - name: Build                        # optional
          build: {project: "{{ project }}"}  # exactly one step, with its arguments
          when: build_enabled | default(true) # optional condition
          tags: [build]                      # optional
          ignore_errors: false               # optional

Steps: ``build`` (on the controller, once per play; its result is the variable ``build``
with ``reference``, ``tag``, ``image_id``), ``push``, ``provision``, ``deploy``,
``rollback``, ``prune``, ``audit``, ``exec`` (``command: [argv]`` or ``shell: "..."``),
``dir`` (``path``, ``mode``, ``owner``, ``group``), ``copy`` (``dest``, ``content``,
``mode``: 0644 by default, 0600 when the content holds a secret), ``cron`` (``name``,
``schedule``, ``job``; written to ``/etc/cron.d/fleet-NAME``, mode 0600), ``debug``
(``msg``: shown for each host, nothing run). The names are Ansible's where they mean the
same; Ansible's own modules and play and task keywords are read too (see
:mod:`fleet.playbook.modules` and :mod:`fleet.playbook.task`).

A task may ``loop`` over a list (a literal, or a template of one), with ``item`` (or
``loop_control.loop_var``) set for each item, and ``register`` its result, with Ansible's
keys, for the tasks after it; an exec's ``changed_when``/``failed_when`` decide its outcome
(see :mod:`fleet.playbook.loop`).

Variables, lowest to highest: inventory (group_vars, host_vars), play ``vars``, extra vars
(``-e key=value``, ``-e @file.yml``); and Ansible's ``inventory_hostname``, ``groups``,
``group_names``, ``hostvars``, ``ansible_check_mode``. Strings are Jinja2 templates and
``when`` a Jinja2 expression, sandboxed, with Ansible's filters and tests (see
:mod:`fleet.playbook.template`); a string that is exactly one expression keeps the value's
type. An undefined variable is an error naming the task.

Everything is validated before anything runs (unknown keys, wrong types, unknown steps,
bad patterns): errors name the file, the line and the dotted path
(``plays[0].tasks[2].deploy.version``), exit 4, and no host is touched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.errors import InventoryError, PatternError, PlaybookError, UsageError
from fleet.hosts.patterns import compile_term, split_pattern
from fleet.hosts.safe_yaml import read_yaml
from fleet.playbook.arguments import CONTROLLER_STEPS, EXPRESSIONS, STEPS
from fleet.playbook.task import (
    RESERVED_NAMES,
    TASK_KEYS,
    Lines,
    Task,
    TaskChecker,
    condition,
)

__all__ = [
    "CONTROLLER_STEPS",
    "EXPRESSIONS",
    "RESERVED_NAMES",
    "SECTIONS",
    "STEPS",
    "TASK_KEYS",
    "Play",
    "Playbook",
    "Task",
    "condition",
    "extra_vars",
    "load",
    "vars_file",
]

# -- the model --------------------------------------------------------------------------
PLAY_KEYS = frozenset(
    {
        "name",
        "hosts",
        "serial",
        "max_fail_percentage",
        "any_errors_fatal",
        "vars",
        "tasks",
        # Ansible's, with its meaning (see ``Play``).
        "become",
        "become_user",
        "become_method",
        "gather_facts",
        "vars_files",
        "pre_tasks",
        "post_tasks",
        "handlers",
    }
)
# A play's task lists, in the order they run; handlers are flushed after each.
SECTIONS = ("pre_tasks", "tasks", "post_tasks")


@dataclass(frozen=True)
class Play:
    """Hosts and the tasks to run on them."""

    name: str
    hosts: str
    tasks: tuple[Task, ...]
    where: str
    line: int | None
    serial: str | None = None
    max_fail_percentage: float | None = None
    any_errors_fatal: bool = False
    vars: Mapping[str, Any] = field(default_factory=dict)
    # Ansible's: tasks before and after ``tasks``, handlers run when notified (flushed
    # after each section), and become for every task.
    pre_tasks: tuple[Task, ...] = ()
    post_tasks: tuple[Task, ...] = ()
    handlers: tuple[Task, ...] = ()
    become: bool | None = None
    become_user: str | None = None

    def section(self, name: str) -> tuple[Task, ...]:
        """The tasks of one of :data:`SECTIONS`."""
        return {"pre_tasks": self.pre_tasks, "tasks": self.tasks, "post_tasks": self.post_tasks}[
            name
        ]

    def every_task(self) -> list[Task]:
        """Every task of the play, handlers and the tasks inside blocks included."""
        found: list[Task] = []
        pending = [*self.pre_tasks, *self.tasks, *self.post_tasks, *self.handlers]
        while pending:
            task = pending.pop(0)
            found.append(task)
            pending[:0] = [*task.block, *task.rescue, *task.always]
        return found


@dataclass(frozen=True)
class Playbook:
    path: Path
    plays: tuple[Play, ...]


# -- loading and validation -------------------------------------------------------------
def _load_yaml(path: Path) -> tuple[Any, Lines]:
    """A safe, bounded YAML load that remembers lines (the inventory's loader)."""
    try:
        document, key_lines = read_yaml(path)
    except InventoryError as exc:
        raise PlaybookError(exc.message, fix=exc.fix) from None
    return document, Lines(key_lines)


def load(path: str | Path) -> Playbook:
    """Read and validate a playbook; PlaybookError (exit 4) on anything wrong."""
    file = Path(path)
    if not file.is_file():
        raise PlaybookError(
            f"playbook {file} does not exist",
            fix="name a playbook file, e.g. playbooks/rollout.yml",
        )
    document, lines = _load_yaml(file)
    checker = _Checker(str(file), lines)
    if not isinstance(document, list) or not document:
        raise PlaybookError(
            "a playbook is a non-empty list of plays",
            path=str(file),
            line=1,
            fix="start with '- hosts: all'",
        )
    plays = tuple(checker.play(raw, f"plays[{i}]", document, i) for i, raw in enumerate(document))
    return Playbook(file, plays)


class _Checker(TaskChecker):
    def play(self, raw: Any, where: str, parent: Any, index: int) -> Play:
        line = None
        if not isinstance(raw, Mapping):
            raise self.fail(
                where,
                f"a play is a mapping, not {type(raw).__name__}",
                line,
                "write '- hosts: PATTERN' with 'tasks:'",
            )
        for key in raw:
            if key not in PLAY_KEYS:
                raise self.fail(
                    f"{where}.{key}",
                    "unknown play key",
                    self.lines.of(raw, key),
                    "use " + ", ".join(sorted(PLAY_KEYS)),
                )
        line = self.lines.of(raw, "hosts") or self.lines.of(raw, "tasks")
        hosts = raw.get("hosts")
        if not isinstance(hosts, str) or not hosts.strip():
            raise self.fail(f"{where}.hosts", "required: a host pattern", line, "e.g. hosts: all")
        _check_pattern_syntax(
            hosts, lambda m: self.fail(f"{where}.hosts", m, self.lines.of(raw, "hosts"))
        )
        serial, max_fail, fatal = self._batching(raw, where)
        variables = raw.get("vars") or {}
        if not isinstance(variables, Mapping):
            raise self.fail(f"{where}.vars", "expected a mapping", self.lines.of(raw, "vars"))
        variables = {**self._vars_files(raw, where), **variables}
        become, become_user = self._become(raw, where)
        gather = raw.get("gather_facts", False)
        if not isinstance(gather, bool):
            raise self.fail(
                f"{where}.gather_facts",
                "expected true or false",
                self.lines.of(raw, "gather_facts"),
            )
        sections = {
            key: self._tasks(raw, key, where) for key in (*SECTIONS, "handlers") if key in raw
        }
        if not any(sections.get(key) for key in SECTIONS):
            raise self.fail(
                f"{where}.tasks", "required: a list of tasks", self.lines.of(raw, "tasks") or line
            )
        name = raw.get("name") or hosts
        play = Play(
            name=str(name),
            hosts=hosts,
            tasks=sections.get("tasks", ()),
            where=where,
            line=line,
            serial=None if serial is None else str(serial).strip(),
            max_fail_percentage=None if max_fail is None else float(max_fail),
            any_errors_fatal=fatal,
            vars=dict(variables),
            pre_tasks=sections.get("pre_tasks", ()),
            post_tasks=sections.get("post_tasks", ()),
            handlers=sections.get("handlers", ()),
            become=become,
            become_user=become_user,
        )
        self._check_notified(play)
        return play

    def _batching(self, raw: Mapping[str, Any], where: str) -> tuple[Any, Any, bool]:
        """``serial``, ``max_fail_percentage`` and ``any_errors_fatal``, checked."""
        serial = raw.get("serial")
        if serial is not None:
            text = str(serial)
            if not re.fullmatch(r"[1-9]\d*%?", text.strip()):
                raise self.fail(
                    f"{where}.serial",
                    f"expected a number of hosts or a share like 25%, got {serial!r}",
                    self.lines.of(raw, "serial"),
                )
        max_fail = raw.get("max_fail_percentage")
        if max_fail is not None and (
            isinstance(max_fail, bool)
            or not isinstance(max_fail, int | float)
            or not 0 <= max_fail <= 100
        ):
            raise self.fail(
                f"{where}.max_fail_percentage",
                f"expected a number from 0 to 100, got {max_fail!r}",
                self.lines.of(raw, "max_fail_percentage"),
            )
        fatal = raw.get("any_errors_fatal", False)
        if not isinstance(fatal, bool):
            raise self.fail(
                f"{where}.any_errors_fatal",
                "expected true or false",
                self.lines.of(raw, "any_errors_fatal"),
            )
        return serial, max_fail, fatal

    def _vars_files(self, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
        """``vars_files``: YAML files of variables, beside the playbook or absolute."""
        names = raw.get("vars_files") or []
        line = self.lines.of(raw, "vars_files")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise self.fail(f"{where}.vars_files", "expected a list of file names", line)
        merged: dict[str, Any] = {}
        for name in names:
            if "{{" in name:
                raise self.fail(
                    f"{where}.vars_files", f"{name!r}: a template is not read here", line
                )
            path = Path(name) if Path(name).is_absolute() else Path(self.path).parent / name
            if not path.is_file():
                raise self.fail(f"{where}.vars_files", f"{path} does not exist", line)
            try:
                merged.update(vars_file(f"@{path}"))
            except PlaybookError as exc:
                raise self.fail(f"{where}.vars_files", exc.message, line, exc.fix) from None
        return merged

    def _check_notified(self, play: Play) -> None:
        """Every name a task notifies is a handler's name or one it listens to."""
        known = {h.name for h in play.handlers} | {n for h in play.handlers for n in h.listen}
        for task in play.every_task():
            for name in task.notify:
                if name not in known:
                    raise self.fail(
                        f"{task.where}.notify",
                        f"no handler is named or listens to {name!r}",
                        task.line,
                        "handlers: " + (", ".join(sorted(known)) or "none in this play"),
                    )


def _check_pattern_syntax(pattern: str, fail: Callable[[str], PlaybookError]) -> None:
    """Every regular expression of the pattern compiles, the way selecting will compile it."""
    if any(ch in pattern for ch in "\n\r\0"):
        raise fail("a host pattern is one line")
    # The whole pattern too: an unclosed '[' keeps split_pattern from seeing the term whole.
    for term in [pattern, *split_pattern(pattern)]:
        expr = term.lstrip("!&")
        if expr.startswith("~"):
            try:
                compile_term(expr, pattern)
            except PatternError as exc:
                raise fail(f"invalid regular expression: {exc.message}") from None


def extra_vars(items: Sequence[str]) -> dict[str, Any]:
    """``-e key=value`` and ``-e @file.yml``, later ones winning."""
    merged: dict[str, Any] = {}
    for item in items:
        if item.startswith("@"):
            merged.update(vars_file(item))
            continue
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise UsageError(
                f"-e {item!r}: expected key=value or @file.yml",
                fix="-e version=0.2.7 or -e @vars.yml",
            )
        merged[key] = value
    return merged


def vars_file(item: str, *, secret: bool = False) -> dict[str, Any]:
    """The variables of ``@file.yml``, read the safe, bounded way inventories are.

    A ``secret`` file's errors say where, never what: a YAML error quotes the text it
    stumbled on (an alias, a token), and in a secrets file that text is a secret.
    """
    path = Path(item[1:])
    try:
        loaded, _ = read_yaml(path)
    except InventoryError as exc:
        if secret:
            raise PlaybookError(
                f"{item}: the secrets file cannot be read as YAML or JSON (its text is not "
                "shown: it holds secrets)",
                path=str(path),
                line=exc.line,
                column=exc.column,
                fix="check the file where its secrets may be seen, e.g. with "
                "python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' FILE",
            ) from None
        raise PlaybookError(f"{item}: {exc.message}", fix=exc.fix) from None
    if not isinstance(loaded, Mapping):
        raise PlaybookError(f"{item}: expected a mapping of variables", path=str(path))
    return dict(loaded)

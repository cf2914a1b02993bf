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
same.

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

from fleet.errors import InventoryError, PatternError, PlaybookError, UndefinedError, UsageError
from fleet.hosts.patterns import compile_term, split_pattern
from fleet.hosts.safe_yaml import read_yaml
from fleet.playbook import template

# -- the model --------------------------------------------------------------------------
PLAY_KEYS = frozenset(
    {"name", "hosts", "serial", "max_fail_percentage", "any_errors_fatal", "vars", "tasks"}
)
TASK_KEYS = frozenset(
    {
        "name",
        "when",
        "tags",
        "ignore_errors",
        "register",
        "changed_when",
        "failed_when",
        "loop",
        "loop_control",
    }
)
LOOP_CONTROL_KEYS = frozenset({"loop_var", "index_var", "label"})
# What a task may not register under: the variables Ansible (and fleet) provide.
RESERVED_NAMES = frozenset(
    {"inventory_hostname", "groups", "group_names", "hostvars", "ansible_check_mode", "build"}
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_STR = (str,)
_NUM = (int, float)
# How push and deploy ship the image (fleet push --via/--registry/--max-rate*).
_SHIPPING: Mapping[str, tuple[type, ...]] = {
    "via": _STR,
    "registry": _STR,
    "max_rate": (str, int),
    "max_rate_per_host": (str, int),
}
# Each step's arguments: name -> accepted types. Values may also be templated strings.
STEPS: Mapping[str, Mapping[str, tuple[type, ...]]] = {
    "build": {"project": _STR, "rebuild_base": (bool,), "rebuild": (bool,), "tag_prefix": _STR},
    "push": {
        "image": _STR,
        "project": _STR,
        "compress": _STR,
        "min_free": (str, int),
        **_SHIPPING,
    },
    "provision": {"skip_base": (bool,)},
    "deploy": {"version": _STR, "project": _STR, "compress": _STR, "wait": _NUM, **_SHIPPING},
    "rollback": {"to": _STR, "project": _STR, "wait": _NUM},
    "prune": {"keep": (int,), "project": _STR},
    "audit": {"expect": _STR, "project": _STR, "history": (int,)},
    "exec": {"command": (list,), "shell": _STR},
    "dir": {"path": _STR, "mode": (str, int), "owner": _STR, "group": _STR},
    "copy": {"dest": _STR, "content": _STR, "mode": (str, int)},
    "cron": {"name": _STR, "schedule": _STR, "job": _STR},
    "debug": {"msg": (str, int, float, bool, list, dict)},
}
REQUIRED: Mapping[str, tuple[str, ...]] = {
    "dir": ("path",),
    "copy": ("dest", "content"),
    "cron": ("name", "schedule", "job"),
    "debug": ("msg",),
}
CONTROLLER_STEPS = frozenset({"build"})


@dataclass(frozen=True)
class Task:
    """One step of a play, with where it was written."""

    step: str
    args: Mapping[str, Any]
    name: str
    where: str
    line: int | None
    when: str | None = None
    tags: tuple[str, ...] = ()
    ignore_errors: bool = False
    # Ansible's: the host's result as a variable of later tasks; an exec task's outcome
    # decided by expressions instead of its exit code.
    register: str | None = None
    changed_when: str | None = None
    failed_when: str | None = None
    # Ansible's loop: a list, or a template that renders to one; each item runs the step
    # with ``loop_var`` (``item``) and ``index_var`` set, and ``label`` names it.
    loop: Any = None
    loop_var: str = "item"
    index_var: str | None = None
    label: str | None = None

    @property
    def title(self) -> str:
        return self.name or self.step

    @property
    def looped(self) -> bool:
        return self.loop is not None


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


@dataclass(frozen=True)
class Playbook:
    path: Path
    plays: tuple[Play, ...]


# -- loading and validation -------------------------------------------------------------
class _Lines:
    """The line of each mapping key of a loaded document."""

    def __init__(self, key_lines: Mapping[int, Mapping[Any, int]]) -> None:
        self._key_lines = key_lines

    def of(self, mapping: object, key: object) -> int | None:
        return self._key_lines.get(id(mapping), {}).get(key)


def _load_yaml(path: Path) -> tuple[Any, _Lines]:
    """A safe, bounded YAML load that remembers lines (the inventory's loader)."""
    try:
        document, key_lines = read_yaml(path)
    except InventoryError as exc:
        raise PlaybookError(exc.message, fix=exc.fix) from None
    return document, _Lines(key_lines)


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


class _Checker:
    def __init__(self, path: str, lines: _Lines) -> None:
        self.path = path
        self.lines = lines

    def fail(
        self, where: str, message: str, line: int | None, fix: str | None = None
    ) -> PlaybookError:
        return PlaybookError(f"{where}: {message}", path=self.path, line=line, fix=fix)

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
        variables = raw.get("vars") or {}
        if not isinstance(variables, Mapping):
            raise self.fail(f"{where}.vars", "expected a mapping", self.lines.of(raw, "vars"))
        tasks = raw.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise self.fail(
                f"{where}.tasks", "required: a list of tasks", self.lines.of(raw, "tasks") or line
            )
        name = raw.get("name") or hosts
        return Play(
            name=str(name),
            hosts=hosts,
            tasks=tuple(
                self.task(t, f"{where}.tasks[{i}]", self.lines.of(raw, "tasks"))
                for i, t in enumerate(tasks)
            ),
            where=where,
            line=line,
            serial=None if serial is None else str(serial).strip(),
            max_fail_percentage=None if max_fail is None else float(max_fail),
            any_errors_fatal=fatal,
            vars=dict(variables),
        )

    def task(self, raw: Any, where: str, near: int | None) -> Task:
        if not isinstance(raw, Mapping):
            raise self.fail(
                where,
                f"a task is a mapping, not {type(raw).__name__}",
                near,
                "e.g. '- deploy: {version: 0.2.7}'",
            )
        step, line = self._step(raw, where)
        args = self._arguments(raw, step, where, line)
        when = self._condition(raw, "when", where)
        changed_when = self._condition(raw, "changed_when", where)
        failed_when = self._condition(raw, "failed_when", where)
        if (changed_when or failed_when) and step != "exec":
            key = "changed_when" if changed_when else "failed_when"
            raise self.fail(
                f"{where}.{key}",
                f"applies to exec tasks; '{step}' decides its own outcome",
                self.lines.of(raw, key),
            )
        register = self._register(raw, where)
        tags = raw.get("tags") or ()
        if isinstance(tags, str):
            tags = (tags,)
        if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
            raise self.fail(f"{where}.tags", "expected a list of names", self.lines.of(raw, "tags"))
        ignore = raw.get("ignore_errors", False)
        if not isinstance(ignore, bool):
            raise self.fail(
                f"{where}.ignore_errors",
                "expected true or false",
                self.lines.of(raw, "ignore_errors"),
            )
        loop, control = self._loop(raw, step, where)
        return Task(
            step,
            dict(args),
            str(raw.get("name") or ""),
            where,
            line,
            when,
            tuple(tags),
            ignore,
            register,
            changed_when,
            failed_when,
            loop,
            **control,
        )

    def _loop(self, raw: Mapping[str, Any], step: str, where: str) -> tuple[Any, dict[str, Any]]:
        """``loop`` (a list, or a template that renders to one) and ``loop_control``."""
        control = raw.get("loop_control")
        if "loop" not in raw:
            if control is not None:
                raise self.fail(
                    f"{where}.loop_control",
                    "applies to a task with loop",
                    self.lines.of(raw, "loop_control"),
                )
            return None, {}
        loop, line = raw["loop"], self.lines.of(raw, "loop")
        if step in CONTROLLER_STEPS:
            raise self.fail(f"{where}.loop", f"'{step}' runs once on the controller", line)
        if (isinstance(loop, str) and "{{" not in loop) or not isinstance(loop, str | list):
            raise self.fail(
                f"{where}.loop",
                f"expected a list or a template of one, got {type(loop).__name__} {loop!r}",
                line,
                'e.g. loop: [a, b] or loop: "{{ models }}"',
            )
        self._templates(loop, f"{where}.loop", line)
        return loop, self._loop_control(control, where, self.lines.of(raw, "loop_control") or line)

    def _loop_control(self, control: Any, where: str, line: int | None) -> dict[str, Any]:
        if control is None:
            return {}
        if not isinstance(control, Mapping) or set(control) - LOOP_CONTROL_KEYS:
            raise self.fail(
                f"{where}.loop_control",
                f"expected a mapping of {', '.join(sorted(LOOP_CONTROL_KEYS))}",
                line,
            )
        found: dict[str, Any] = {}
        for key in ("loop_var", "index_var"):
            name = control.get(key)
            if name is None:
                continue
            if not isinstance(name, str) or not _NAME.fullmatch(name) or name in RESERVED_NAMES:
                raise self.fail(
                    f"{where}.loop_control.{key}", f"expected a variable name, not {name!r}", line
                )
            found[key] = name
        label = control.get("label")
        if label is not None:
            if not isinstance(label, str):
                raise self.fail(f"{where}.loop_control.label", "expected a string", line)
            self._templates(label, f"{where}.loop_control.label", line)
            found["label"] = label
        return found

    def _register(self, raw: Mapping[str, Any], where: str) -> str | None:
        name = raw.get("register")
        if name is None:
            return None
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in RESERVED_NAMES:
            raise self.fail(
                f"{where}.register",
                f"expected a variable name, not {name!r}"
                + (" (fleet provides that variable)" if name in RESERVED_NAMES else ""),
                self.lines.of(raw, "register"),
                "e.g. 'register: out', then 'when: out.rc == 0' in a later task",
            )
        return name

    def _step(self, raw: Mapping[str, Any], where: str) -> tuple[str, int | None]:
        """The one step a task names, and its line."""
        steps = [k for k in raw if k in STEPS]
        unknown = [k for k in raw if k not in STEPS and k not in TASK_KEYS]
        if unknown and str(unknown[0]).startswith("with_"):
            raise self.fail(
                f"{where}.{unknown[0]}",
                "the with_* loops are not supported",
                self.lines.of(raw, unknown[0]),
                "write 'loop:' with the list (Ansible's own advice since 2.5)",
            )
        if unknown:
            key = unknown[0]
            raise self.fail(
                f"{where}.{key}",
                "unknown step or task key",
                self.lines.of(raw, key),
                "steps: "
                + ", ".join(sorted(STEPS))
                + "; task keys: "
                + ", ".join(sorted(TASK_KEYS)),
            )
        line = self.lines.of(raw, steps[0]) if steps else self.lines.of(raw, next(iter(raw), None))
        if len(steps) != 1:
            found = ", ".join(steps) or "none"
            raise self.fail(
                where,
                f"a task names exactly one step (found {found})",
                line,
                "split it into one task per step",
            )
        return steps[0], line

    def _arguments(
        self, raw: Mapping[str, Any], step: str, where: str, line: int | None
    ) -> Mapping[str, Any]:
        """The step's arguments, checked against its schema; templates compiled."""
        args = raw[step]
        if args is None:
            args = {}
        if step == "exec" and isinstance(args, str):
            args = {"shell": args}
        if not isinstance(args, Mapping):
            raise self.fail(
                f"{where}.{step}",
                f"expected a mapping of arguments, got {type(args).__name__}",
                line,
            )
        schema = STEPS[step]
        for key, value in args.items():
            if key not in schema:
                raise self.fail(
                    f"{where}.{step}.{key}",
                    "unknown argument",
                    self.lines.of(args, key) or line,
                    "arguments: " + ", ".join(sorted(schema)),
                )
            if not isinstance(value, schema[key]) and not (
                isinstance(value, str) and "{{" in value
            ):
                expected = " or ".join(t.__name__ for t in schema[key])
                raise self.fail(
                    f"{where}.{step}.{key}",
                    f"expected {expected}, got {type(value).__name__} {value!r}",
                    self.lines.of(args, key) or line,
                )
        for key in REQUIRED.get(step, ()):
            if key not in args:
                raise self.fail(f"{where}.{step}.{key}", "required", line)
        if step == "exec" and ("command" in args) == ("shell" in args):
            raise self.fail(
                f"{where}.exec", "give either command (a list) or shell (a string)", line
            )
        self._templates(args, f"{where}.{step}", line)
        return args

    def _templates(self, value: Any, where: str, line: int | None) -> None:
        """Every template in ``value`` compiles (syntax, filters, tests), else the error
        at ``where``."""
        for text in _strings(value):
            try:
                template.check(text)
            except PlaybookError as exc:
                raise self.fail(where, exc.message, line) from None

    def _condition(self, raw: Mapping[str, Any], key: str, where: str) -> str | None:
        """A ``when``-like key compiled: an expression, or a list of them that must all
        hold (joined with ``and``, as Ansible does); None when the task has none."""
        value = raw.get(key)
        if value is None:
            return None
        parts = value if isinstance(value, list) else [value]
        texts = []
        for given in parts:
            part = ("true" if given else "false") if isinstance(given, bool) else given
            if not isinstance(part, str) or not part.strip():
                raise self.fail(
                    f"{where}.{key}",
                    "expected a condition (a string) or a list of them",
                    self.lines.of(raw, key),
                )
            try:
                template.check_condition(part)
            except PlaybookError as exc:
                raise self.fail(f"{where}.{key}", exc.message, self.lines.of(raw, key)) from None
            texts.append(part)
        return texts[0] if len(texts) == 1 else " and ".join(f"({text})" for text in texts)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


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


def condition(task: Task, variables: Mapping[str, Any], key: str = "when") -> bool:
    """Whether ``task``'s ``when`` (or ``changed_when``/``failed_when``) holds for a host
    with these variables; a task without one: ``when`` holds, the others do not apply."""
    text = getattr(task, key)
    if text is None:
        return key == "when"
    try:
        return bool(template.expression(text, variables))
    except UndefinedError as exc:
        raise PlaybookError(
            f"{task.where}.{key}: {exc.message}",
            line=task.line,
            fix="define it (vars, -e) or test it with 'is defined'",
        ) from None


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

"""A task as a playbook writes it: the model (:class:`Task`), each step's arguments, and
the checks that turn a task's YAML into a Task (:class:`TaskChecker`), with the file, the
line and the dotted path of anything wrong.

A task names one step (fleet's, or an Ansible module by its short or ``ansible.builtin.``
name) with its arguments, and Ansible's task keywords; a ``block`` holds tasks (and
``rescue``/``always``) that inherit its keywords.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.errors import PlaybookError, UndefinedError
from fleet.ops import hostfiles
from fleet.playbook import dialect, template
from fleet.playbook.arguments import (
    ALIASES,
    CONTROLLER_STEPS,
    EXPRESSIONS,
    FLEET_WIDE_STEPS,
    ONE_OF,
    REQUIRED,
    STEPS,
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
        # Ansible's, with its meaning (see ``Task``).
        "args",
        "vars",
        "notify",
        "listen",
        "no_log",
        "become",
        "become_user",
        "become_method",
        "check_mode",
        "environment",
        "run_once",
        "until",
        "retries",
        "delay",
        "rescue",
        "always",
        "delegate_to",
    }
)
# A block's keys: its tasks, and the task keys its tasks inherit.
BLOCK_INHERITED = frozenset(
    {
        *("when", "tags", "ignore_errors", "become", "become_user", "environment", "no_log"),
        *("vars", "delegate_to"),
    }
)
# The one host a task may be delegated to: the controller (Ansible's implicit localhost).
LOCALHOST = frozenset({"localhost", "127.0.0.1"})
LOOP_CONTROL_KEYS = frozenset({"loop_var", "index_var", "label"})
# What a task may not register under: the variables Ansible (and fleet) provide.
RESERVED_NAMES = frozenset(
    {"inventory_hostname", "groups", "group_names", "hostvars", "ansible_check_mode", "build"}
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    # Ansible's task keywords: task variables; the handlers a change notifies (a
    # handler's other names: listen); output hidden; become; the task's own check mode;
    # the environment of a command; once for the batch; retried until a condition holds.
    vars: Mapping[str, Any] = field(default_factory=dict)
    notify: tuple[str, ...] = ()
    listen: tuple[str, ...] = ()
    no_log: bool = False
    become: bool | None = None
    become_user: str | None = None
    check_mode: bool | None = None
    environment: Any = None
    run_once: bool = False
    delegate_to: bool = False  # delegate_to: localhost, run on the controller
    until: str | None = None
    retries: int = 3
    delay: float = 5.0
    # A block (step "block"): its tasks, those run for a host that failed in them, and
    # those run for every host that entered it.
    block: tuple[Task, ...] = ()
    rescue: tuple[Task, ...] = ()
    always: tuple[Task, ...] = ()

    @property
    def title(self) -> str:
        return self.name or self.step

    @property
    def looped(self) -> bool:
        return self.loop is not None


class Lines:
    """The line of each mapping key of a loaded document."""

    def __init__(self, key_lines: Mapping[int, Mapping[Any, int]]) -> None:
        self._key_lines = key_lines

    def of(self, mapping: object, key: object) -> int | None:
        return self._key_lines.get(id(mapping), {}).get(key)


class TaskChecker:
    """Checks tasks of one playbook file; errors name the file, the line and the path."""

    def __init__(self, path: str, lines: Lines) -> None:
        self.path = path
        self.lines = lines

    def fail(
        self, where: str, message: str, line: int | None, fix: str | None = None
    ) -> PlaybookError:
        return PlaybookError(f"{where}: {message}", path=self.path, line=line, fix=fix)

    def _tasks(self, raw: Mapping[str, Any], key: str, where: str) -> tuple[Task, ...]:
        tasks = raw.get(key)
        line = self.lines.of(raw, key)
        if tasks is None:
            return ()
        if not isinstance(tasks, list):
            raise self.fail(f"{where}.{key}", "expected a list of tasks", line)
        return tuple(self.task(t, f"{where}.{key}[{i}]", line) for i, t in enumerate(tasks))

    def _become(self, raw: Mapping[str, Any], where: str) -> tuple[bool | None, str | None]:
        """``become``, ``become_user`` and ``become_method`` (sudo: fleet's only one)."""
        become = raw.get("become")
        if become is not None and not isinstance(become, bool):
            raise self.fail(
                f"{where}.become", "expected true or false", self.lines.of(raw, "become")
            )
        user = raw.get("become_user")
        if user is not None and (
            not isinstance(user, str) or not hostfiles.ACCOUNT.fullmatch(user)
        ):
            raise self.fail(
                f"{where}.become_user",
                f"{user!r} is not a user name",
                self.lines.of(raw, "become_user"),
            )
        method = raw.get("become_method", "sudo")
        if method != "sudo":
            raise self.fail(
                f"{where}.become_method",
                f"{method!r}: fleet becomes another user with sudo only",
                self.lines.of(raw, "become_method"),
            )
        return become, user

    def task(self, raw: Any, where: str, near: int | None) -> Task:
        if not isinstance(raw, Mapping):
            raise self.fail(
                where,
                f"a task is a mapping, not {type(raw).__name__}",
                near,
                "e.g. '- deploy: {version: 0.2.7}'",
            )
        if "block" in raw:
            return self._block(raw, where)
        step, key, line = self._step(raw, where)
        args = self._arguments(raw, step, key, where, line)
        when = self._condition(raw, "when", where)
        changed_when = self._condition(raw, "changed_when", where)
        failed_when = self._condition(raw, "failed_when", where)
        if (changed_when or failed_when) and step in FLEET_WIDE_STEPS:
            judged = "changed_when" if changed_when else "failed_when"
            raise self.fail(
                f"{where}.{judged}",
                f"applies to host tasks; '{step}' decides its own outcome",
                self.lines.of(raw, judged),
            )
        if raw.get("delegate_to") is not None and step in FLEET_WIDE_STEPS:
            raise self.fail(
                f"{where}.delegate_to",
                f"'{step}' acts on the play's hosts themselves; it is not delegated",
                self.lines.of(raw, "delegate_to"),
            )
        register = self._register(raw, where)
        loop, control = self._loop(raw, step, where)
        until = self._condition(raw, "until", where)
        if until and loop is not None:
            raise self.fail(
                f"{where}.until", "until with loop is not supported", self.lines.of(raw, "until")
            )
        return Task(
            step,
            dict(args),
            str(raw.get("name") or ""),
            where,
            line,
            when,
            self._tags(raw, where),
            self._flag(raw, "ignore_errors", where),
            register,
            changed_when,
            failed_when,
            loop,
            **control,
            **self._keywords(raw, where),
            until=until,
            retries=self._number(raw, "retries", where, 3, integer=True),
            delay=self._number(raw, "delay", where, 5),
        )

    def _block(self, raw: Mapping[str, Any], where: str) -> Task:
        """A block: its tasks, ``rescue`` and ``always``, each inheriting the block's keys."""
        line = self.lines.of(raw, "block")
        for key in raw:
            if key not in ("block", "rescue", "always", "name", *BLOCK_INHERITED):
                raise self.fail(
                    f"{where}.{key}",
                    "not a key of a block",
                    self.lines.of(raw, key),
                    "a block has block, rescue, always, name, "
                    + ", ".join(sorted(BLOCK_INHERITED)),
                )
        parent = Task(
            "block",
            {},
            str(raw.get("name") or ""),
            where,
            line,
            self._condition(raw, "when", where),
            self._tags(raw, where),
            self._flag(raw, "ignore_errors", where),
            **self._keywords(raw, where),
        )
        block, rescue, always = (
            tuple(_inherit(t, parent) for t in self._tasks(raw, key, where))
            for key in ("block", "rescue", "always")
        )
        if not block:
            raise self.fail(f"{where}.block", "expected a list of tasks", line)
        return dataclasses.replace(parent, block=block, rescue=rescue, always=always)

    def _keywords(self, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
        """The Ansible task keywords a block passes on too."""
        variables = raw.get("vars") or {}
        if not isinstance(variables, Mapping):
            raise self.fail(f"{where}.vars", "expected a mapping", self.lines.of(raw, "vars"))
        environment = raw.get("environment")
        if environment is not None:
            self._environment(environment, where, self.lines.of(raw, "environment"))
        become, become_user = self._become(raw, where)
        check_mode = raw.get("check_mode")
        if check_mode is not None and not isinstance(check_mode, bool):
            raise self.fail(
                f"{where}.check_mode", "expected true or false", self.lines.of(raw, "check_mode")
            )
        return {
            "vars": dict(variables),
            "notify": self._names(raw, "notify", where),
            "listen": self._names(raw, "listen", where),
            "no_log": self._flag(raw, "no_log", where),
            "become": become,
            "become_user": become_user,
            "check_mode": check_mode,
            "environment": environment,
            "run_once": self._flag(raw, "run_once", where),
            "delegate_to": self._delegate(raw, where),
        }

    def _delegate(self, raw: Mapping[str, Any], where: str) -> bool:
        """``delegate_to``: only the controller (``localhost``)."""
        value = raw.get("delegate_to")
        if value is None:
            return False
        if value not in LOCALHOST:
            raise self.fail(
                f"{where}.delegate_to",
                f"{value!r}: a task may be delegated to localhost only (the controller)",
                self.lines.of(raw, "delegate_to"),
                "delegate_to: localhost, or run the task on that host with its own play",
            )
        return True

    def _environment(self, value: Any, where: str, line: int | None) -> None:
        if isinstance(value, str) and "{{" in value:
            return
        if not names_variables(value):
            raise self.fail(
                f"{where}.environment",
                "expected a mapping of variable names to values",
                line,
                "e.g. environment: {LANG: C.UTF-8}",
            )
        self._templates(value, f"{where}.environment", line)

    def _names(self, raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = raw.get(key) or ()
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.fail(
                f"{where}.{key}", "expected a name or a list of names", self.lines.of(raw, key)
            )
        return tuple(value)

    def _tags(self, raw: Mapping[str, Any], where: str) -> tuple[str, ...]:
        tags = raw.get("tags") or ()
        if isinstance(tags, str):
            tags = (tags,)
        if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
            raise self.fail(f"{where}.tags", "expected a list of names", self.lines.of(raw, "tags"))
        return tuple(tags)

    def _flag(self, raw: Mapping[str, Any], key: str, where: str) -> bool:
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", "expected true or false", self.lines.of(raw, key))
        return value

    def _number(
        self, raw: Mapping[str, Any], key: str, where: str, default: float, integer: bool = False
    ) -> Any:
        value: Any = raw.get(key, default)
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else -1
        if number < 0 or (integer and not isinstance(number, int)):
            raise self.fail(
                f"{where}.{key}",
                f"expected a number of at least 0, got {value!r}",
                self.lines.of(raw, key),
            )
        return value

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

    def _step(self, raw: Mapping[str, Any], where: str) -> tuple[str, str, int | None]:
        """The one step (or Ansible module) a task names, the key naming it, and its line."""
        steps = [k for k in raw if isinstance(k, str) and dialect.canonical(k) in STEPS]
        unknown = [k for k in raw if k not in steps and k not in TASK_KEYS]
        if unknown and str(unknown[0]).startswith("with_"):
            raise self.fail(
                f"{where}.{unknown[0]}",
                "the with_* loops are not supported",
                self.lines.of(raw, unknown[0]),
                "write 'loop:' with the list (Ansible's own advice since 2.5)",
            )
        if unknown:
            key = str(unknown[0])
            if dialect.looks_like_module(key):
                raise self.fail(
                    f"{where}.{key}",
                    dialect.refusal(key),
                    self.lines.of(raw, key),
                    "fleet's steps and modules: " + ", ".join(sorted(STEPS)),
                )
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
        return dialect.canonical(steps[0]), steps[0], line

    def _arguments(
        self, raw: Mapping[str, Any], step: str, key: str, where: str, line: int | None
    ) -> Mapping[str, Any]:
        """The step's arguments (Ansible's free form and ``args:`` merged), checked against
        its schema; templates compiled."""
        args = raw[key]
        if args is None:
            args = {}
        if step == "exec" and isinstance(args, str):
            args = {"shell": args}
        elif isinstance(args, str):
            try:
                args = dialect.free_form(step, args)
            except PlaybookError as exc:
                raise self.fail(f"{where}.{key}", exc.message, line, exc.fix) from None
        if not isinstance(args, Mapping):
            raise self.fail(
                f"{where}.{key}",
                f"expected a mapping of arguments, got {type(args).__name__}",
                line,
            )
        extra = raw.get("args") or {}
        if not isinstance(extra, Mapping):
            raise self.fail(f"{where}.args", "expected a mapping", self.lines.of(raw, "args"))
        aliases = ALIASES.get(step, {})
        written = {aliases.get(k, k): (k, source) for source in (extra, args) for k in source}
        args = {aliases.get(k, k): v for k, v in {**extra, **args}.items()}

        def line_of(name: str) -> int | None:
            original, source = written[name]
            return self.lines.of(source, original) or line

        schema = STEPS[step]
        for name, value in args.items():
            if step == "set_fact":
                if not isinstance(name, str) or not _NAME.fullmatch(name) or name in RESERVED_NAMES:
                    raise self.fail(f"{where}.{key}.{name}", "expected a variable name", line)
                continue
            if name not in schema:
                raise self.fail(
                    f"{where}.{key}.{name}",
                    "unknown argument",
                    line_of(name),
                    "arguments: " + ", ".join(sorted(schema)),
                )
            if not isinstance(value, schema[name]) and not (
                isinstance(value, str) and "{{" in value
            ):
                expected = " or ".join(t.__name__ for t in schema[name])
                raise self.fail(
                    f"{where}.{key}.{name}",
                    f"expected {expected}, got {type(value).__name__} {value!r}",
                    line_of(name),
                )
        for name in REQUIRED.get(step, ()):
            if name not in args:
                raise self.fail(f"{where}.{key}.{name}", "required", line)
        if step in ONE_OF:
            names, message = ONE_OF[step]
            given = sum(name in args for name in names)
            if given > 1 or (given == 0 and step != "debug"):
                raise self.fail(f"{where}.{key}", message, line)
        if step == "pause" and "prompt" in args:
            raise self.fail(f"{where}.pause.prompt", "fleet runs unattended: no prompt", line)
        self._templates(
            {k: v for k, v in args.items() if k not in EXPRESSIONS.get(step, ())},
            f"{where}.{key}",
            line,
        )
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


def names_variables(value: Any) -> bool:
    """Whether ``value`` is a mapping whose keys are variable names (a command's
    ``environment``, written or rendered)."""
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and _NAME.fullmatch(k) for k in value
    )


def _inherit(task: Task, block: Task) -> Task:
    """A block's task with the block's keys: its condition added to the task's, its tags
    joined, the rest the task's own unless it has none."""
    when = task.when
    if block.when:
        when = block.when if not when else f"({block.when}) and ({when})"
    return dataclasses.replace(
        task,
        when=when,
        tags=tuple(dict.fromkeys(block.tags + task.tags)),
        ignore_errors=task.ignore_errors or block.ignore_errors,
        no_log=task.no_log or block.no_log,
        become=task.become if task.become is not None else block.become,
        become_user=task.become_user or block.become_user,
        environment=task.environment if task.environment is not None else block.environment,
        delegate_to=task.delegate_to or block.delegate_to,
        vars={**block.vars, **task.vars},
    )


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


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

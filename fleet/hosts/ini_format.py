"""INI inventories (Ansible's ini plugin): [group], [group:children], [group:vars], host k=v."""

from __future__ import annotations

import ast
import re
import shlex
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.hosts.builder import Builder, Origin, expand_entry

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")


@dataclass
class _Pending:
    """A group named before its own section: [g:vars] or a [parent:children] entry."""

    line: int
    state: str
    parents: list[str] = field(default_factory=list)


def parse_ini(builder: Builder, path: Path, lines: list[str]) -> None:
    pending: dict[str, _Pending] = {}
    group, state = "ungrouped", "hosts"
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        origin = Origin(path, number)
        section = _SECTION.match(line)
        if section:
            group, state = section.group(1), section.group(2) or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise origin.error(
                    f"section [{group}:{state}] has unknown type {state!r}",
                    fix=f"use [{group}], [{group}:children] or [{group}:vars]",
                )
            if group not in builder.groups:
                # [g:vars] alone does not define g: it must be defined somewhere in the file.
                if state == "vars" and group not in pending:
                    pending[group] = _Pending(number, "vars")
                builder.add_group(group, origin)
            if group in pending and state != "vars":
                if pending[group].state == "children":
                    _add_pending_children(builder, group, pending, origin)
                else:
                    del pending[group]
            continue
        if line.startswith("[") and line.endswith("]"):
            raise origin.error(
                f"invalid section header {line!r}",
                fix="write [group], [group:children] or [group:vars], without spaces",
            )
        if state == "hosts":
            _ini_host_line(builder, group, line, origin)
        elif state == "vars":
            if "=" not in line:
                raise origin.error(
                    f"expected key=value in [{group}:vars], got {line!r}",
                    fix="write one 'name=value' per line in a :vars section",
                )
            key, value = (part.strip() for part in line.split("=", 1))
            builder.set_group_var(group, key, _ini_value(value, origin), origin)
        else:
            found = _GROUP_NAME.match(line)
            if not found:
                raise origin.error(
                    f"expected a group name in [{group}:children], got {line!r}",
                    fix="list one child group name per line (no ':' or spaces)",
                )
            child = found.group(1)
            if child in builder.groups:
                builder.add_child(group, child, origin)
            elif child in pending:
                pending[child].parents.append(group)
            else:
                pending[child] = _Pending(number, "children", [group])
    for name, declaration in pending.items():
        origin = Origin(path, declaration.line)
        if declaration.state == "vars":
            raise origin.error(
                f"section [{name}:vars] is for group {name!r}, which is not defined",
                fix=f"add a [{name}] section (it may be empty) or remove [{name}:vars]",
            )
        raise origin.error(
            f"section [{declaration.parents[-1]}:children] lists {name!r}, "
            "which is not a defined group",
            fix=f"add a [{name}] section (it may be empty) or remove the line",
        )


def _add_pending_children(
    builder: Builder, group: str, pending: dict[str, _Pending], origin: Origin
) -> None:
    """Link a group, now defined, under the [parent:children] sections that named it."""
    todo = [group]
    while todo:
        name = todo.pop()
        declaration = pending.pop(name, None)
        if declaration is None:
            continue
        for parent in declaration.parents:
            builder.add_child(parent, name, Origin(origin.path, declaration.line))
            if parent in pending and pending[parent].state == "children":
                todo.append(parent)


def _ini_host_line(builder: Builder, group: str, line: str, origin: Origin) -> None:
    """``name[:port] [key=value ...]``; values are Python literals where they parse as one."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise origin.error(
            f"cannot split host line {line!r}: {exc}",
            fix="close the quote, or escape it with a backslash",
        ) from None
    if not tokens:
        raise origin.error(f"no host name on line {line!r}")
    entry = tokens[0]
    if entry.startswith("[") and "]" not in line:
        raise origin.error(
            f"section header {line!r} is not closed",
            fix="write [group], [group:children] or [group:vars]",
        )
    names, port = expand_entry(entry, origin)
    if entry.strip().endswith(":") and port is None:
        raise origin.error(
            f"host {entry!r} ends with ':'",
            fix="a ':' after a host name must be followed by a port number",
        )
    if any(name.strip() == "---" for name in names):
        raise origin.error(
            "'---' is not a host name: this looks like a YAML file",
            fix="give the file a .yml extension",
        )
    assignments: list[tuple[str, Any]] = []
    for token in tokens[1:]:
        if "=" not in token:
            raise origin.error(
                f"expected key=value after host {entry!r}, got {token!r}",
                fix="quote values with spaces: key='a value'",
            )
        key, value = token.split("=", 1)
        assignments.append((key, _ini_value(value, origin)))
    for name in names:
        builder.add_host(name, group, port, origin)
        for key, value in assignments:
            builder.set_host_var(name, key, value, origin)


def _ini_value(text: str, origin: Origin) -> Any:
    """Ansible reads INI values with ast.literal_eval, keeping the text when that fails.

    So ``port=22`` is an int, ``flag=True`` a bool, ``x=[1,2]`` a list and ``flag=yes`` the
    string 'yes' -- in host lines and in :vars sections alike (ansible-core 2.19).
    """
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")  # e.g. invalid escape sequences
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError):
        return text
    except (TypeError, RecursionError) as exc:  # e.g. {[1]: 2}: Ansible fails here too
        raise origin.error(
            f"cannot read value {text!r}: {exc}",
            fix="quote the value to keep it as a string",
        ) from None
    return _ini_normalise(value)


def _ini_normalise(value: Any) -> Any:
    """Tuples and sets become lists; bytes, complex numbers and '...' become strings."""
    if isinstance(value, list | tuple | set | frozenset):
        return [_ini_normalise(item) for item in value]
    if isinstance(value, dict):
        return {key: _ini_normalise(item) for key, item in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if value is Ellipsis:
        return "..."
    if isinstance(value, complex):
        return str(value)
    return value

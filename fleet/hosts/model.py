"""An inventory as frozen values: hosts, groups, their variables; host selection."""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from fleet.errors import PatternError
from fleet.hosts import patterns

MAX_GRAPH_LINES = 100_000
DEFAULT_PORT = 22
# Variables ansible-inventory never prints (magic and play variables).
INTERNAL_VARS = frozenset(
    [
        "ansible_async_path",
        "ansible_collection_name",
        "ansible_config_file",
        "ansible_dependent_role_names",
        "ansible_diff_mode",
        "ansible_facts",
        "ansible_forks",
        "ansible_inventory_sources",
        "ansible_limit",
        "ansible_play_batch",
        "ansible_play_hosts",
        "ansible_play_hosts_all",
        "ansible_play_role_names",
        "ansible_playbook_python",
        "ansible_role_name",
        "ansible_role_names",
        "ansible_run_tags",
        "ansible_skip_tags",
        "ansible_verbosity",
        "ansible_version",
        "group_names",
        "groups",
        "hostvars",
        "inventory_dir",
        "inventory_file",
        "inventory_hostname",
        "inventory_hostname_short",
        "play_hosts",
        "playbook_dir",
        "role_name",
        "role_names",
        "role_path",
        "role_uuid",
    ]
)


# Ansible's names for the connection settings; where two names exist the later one wins.
HOST_VARS = ("ansible_host", "ansible_ssh_host")
PORT_VARS = ("ansible_port", "ansible_ssh_port")
USER_VARS = ("ansible_user", "ansible_ssh_user")
KEY_VARS = ("ansible_private_key_file", "ansible_ssh_private_key_file")
BOOL_TRUE = frozenset({"y", "yes", "on", "1", "true", "t"})
BOOL_FALSE = frozenset({"n", "no", "off", "0", "false", "f"})
_K = TypeVar("_K")
_V = TypeVar("_V")


class FrozenDict(dict[_K, _V]):
    """A dict that refuses changes: JSON-serialisable and picklable, unlike MappingProxyType.

    Only the top level is frozen; values (lists, dicts) are shared with the loaded data.
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("inventory data is read-only; copy it with dict(...) to change it")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


class Unsafe(str):
    """A string Ansible must not template (YAML ``!unsafe``); printed as Ansible does."""

    __slots__ = ()


@dataclass(frozen=True)
class Host:
    """One inventory host with its merged variables."""

    name: str
    # Fully merged with Ansible's precedence; only the user's variables (no magic ones).
    vars: Mapping[str, Any] = field(default_factory=FrozenDict, hash=False)
    # Every group of the host incl. ancestors, sorted like Ansible's group_names, then 'all'.
    groups: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        """Where to connect: ansible_host (or ansible_ssh_host), else the name."""
        value = effective(self.vars, HOST_VARS)
        return self.name if value is None else str(value)

    @property
    def port(self) -> int:
        """The SSH port: ansible_port (or ansible_ssh_port), else 22."""
        value = effective(self.vars, PORT_VARS)
        return DEFAULT_PORT if value is None else int(value)

    @property
    def user(self) -> str | None:
        value = effective(self.vars, USER_VARS)
        return None if value is None else str(value)

    @property
    def key_file(self) -> str | None:
        """ansible_ssh_private_key_file (or ansible_private_key_file), ``~`` expanded.

        A relative path is relative to the current directory, as it is for ssh -i.
        """
        value = effective(self.vars, KEY_VARS)
        return None if value is None else os.path.expanduser(str(value))

    @property
    def become(self) -> bool:
        value = self.vars.get("ansible_become")
        return False if value is None else bool(as_bool(value))

    @property
    def become_user(self) -> str | None:
        value = self.vars.get("ansible_become_user")
        return None if value is None else str(value)

    @property
    def ssh_common_args(self) -> str | None:
        value = self.vars.get("ansible_ssh_common_args")
        return None if value is None else str(value)


@dataclass(frozen=True)
class Group:
    """One inventory group as defined (direct members only)."""

    name: str
    hosts: tuple[str, ...] = ()  # direct hosts, in definition order
    children: tuple[str, ...] = ()
    # The group's own vars: inline + group_vars files (as ansible-inventory --export shows).
    vars: Mapping[str, Any] = field(default_factory=FrozenDict, hash=False)


@dataclass(frozen=True)
class Inventory:
    """Hosts and groups of one or more inventory sources."""

    # In definition order (Ansible's inventory order); select() gives a pattern's order.
    hosts: Mapping[str, Host] = field(default_factory=FrozenDict, hash=False)
    groups: Mapping[str, Group] = field(default_factory=FrozenDict, hash=False)
    sources: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    # Each host's own vars (inline + host_vars), for to_ansible_list(export=True).
    own_host_vars: Mapping[str, Mapping[str, Any]] = field(
        default_factory=FrozenDict, hash=False, repr=False
    )

    def host(self, name: str) -> Host:
        """The host called ``name``; PatternError (naming close matches) if there is none."""
        try:
            return self.hosts[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.hosts), n=3)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise PatternError(
                f"no host named {name!r} in the inventory ({len(self.hosts)} hosts)",
                fix=f"{hint}run 'fleet inventory --graph' to see the hosts",
            ) from None

    def select(self, pattern: str = "all", limit: str | None = None) -> list[Host]:
        """The hosts an Ansible host pattern selects, in Ansible's order (see fleet.hosts.patterns)."""
        return [self.hosts[name] for name in patterns.select(self, pattern, limit)]

    def with_vars(self, overrides: Mapping[str, Any]) -> Inventory:
        """Every host with ``overrides`` over its variables: Ansible's extra vars, which win
        over everything, connection variables (``ansible_user``, ``ansible_become_password``)
        included."""
        if not overrides:
            return self
        hosts = FrozenDict(
            {
                name: dataclasses.replace(host, vars=FrozenDict({**host.vars, **overrides}))
                for name, host in self.hosts.items()
            }
        )
        return dataclasses.replace(self, hosts=hosts)

    def to_ansible_list(self, *, export: bool = False) -> dict[str, Any]:
        """What ``ansible-inventory --list`` prints (``--export`` with ``export=True``).

        Group entries list direct hosts and children; ``_meta.hostvars`` holds each host's
        merged vars (with ``export``: its own vars, and groups carry theirs). Values are
        JSON-ready: dates as ISO strings, ``!unsafe`` strings as ``{"__ansible_unsafe": ..}``.
        """
        result: dict[str, Any] = {}
        for name, group in self.groups.items():
            entry: dict[str, Any] = {}
            if name != "all" and group.hosts:
                entry["hosts"] = list(group.hosts)
            if group.children:
                entry["children"] = list(group.children)
            if export:
                group_vars = public_vars(group.vars)
                if group_vars:
                    entry["vars"] = group_vars
            if entry:
                result[name] = entry
        hostvars: dict[str, Any] = {}
        for name, host in self.hosts.items():
            source = self.own_host_vars.get(name, {}) if export else host.vars
            public = public_vars(source)
            if public:
                hostvars[name] = public
        result["_meta"] = {"hostvars": hostvars}
        return result

    def graph(self, group: str = "all") -> str:
        """The tree ``ansible-inventory --graph GROUP`` prints (without a final newline)."""
        if group not in self.groups:
            raise PatternError(
                f"no group named {group!r} to graph",
                fix=f"known groups: {', '.join(list(self.groups)[:20])}",
            )
        lines: list[str] = []
        # Depth-first without recursion: a group, its children's subtrees, then its hosts.
        stack: list[tuple[bool, str, int]] = [(True, group, 0)]
        while stack:
            is_group, name, depth = stack.pop()
            label = f"@{name}:" if is_group else name
            lines.append("  |" * depth + "--" + label if depth else label)
            if len(lines) >= MAX_GRAPH_LINES:
                lines.append(f"... (cut at {MAX_GRAPH_LINES} lines)")
                break
            if is_group:
                node = self.groups[name]
                if name != "all":
                    stack.extend((False, h, depth + 1) for h in reversed(node.hosts))
                stack.extend((True, c, depth + 1) for c in reversed(node.children))
        return "\n".join(lines)


def empty() -> Inventory:
    """An inventory with no host: only the groups 'all' and 'ungrouped'."""
    return Inventory(
        hosts=FrozenDict(),
        groups=FrozenDict(all=Group("all", children=("ungrouped",)), ungrouped=Group("ungrouped")),
    )


def as_bool(value: object) -> bool | None:
    """Ansible's boolean(): true/yes/on/1/t/y and their opposites; None if neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return True if value == 1 else False if value == 0 else None
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in BOOL_TRUE else False if text in BOOL_FALSE else None
    return None


def effective(values: Mapping[str, Any], names: Sequence[str]) -> Any:
    """The value of the last of ``names`` that is set (Ansible's rule for aliases)."""
    found = None
    for name in names:
        if values.get(name) is not None:
            found = values[name]
    return found


def public_vars(values: Mapping[str, Any]) -> dict[str, Any]:
    """Vars as ansible-inventory prints them: without magic vars, as JSON values."""
    return {
        json_key(key): json_value(value)
        for key, value in values.items()
        if key not in INTERNAL_VARS
    }


def json_key(key: object) -> str:
    return key if isinstance(key, str) else json.dumps(key)


def json_value(value: Any) -> Any:
    """A value as Ansible's JSON encoder writes it, made of plain JSON types."""
    if isinstance(value, Unsafe):
        return {"__ansible_unsafe": str(value)}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {json_key(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_value(item) for item in value]
    if isinstance(value, datetime.date):  # datetime too
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)

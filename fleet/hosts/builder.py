"""Building an inventory: a mutable mirror of Ansible's InventoryData, frozen at the end."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.errors import InventoryError, PatternError
from fleet.escape import steering, visible
from fleet.hosts import hostnames

JINJA_KEYWORDS = frozenset({"False", "None", "True", "false", "none", "not", "true"})
_INVALID_GROUP_CHARS = re.compile(r"^[\d\W]|[^\w]")


@dataclass(frozen=True)
class Origin:
    """Where something was defined: a file and, when known, a line."""

    path: Path
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)

    def error(self, message: str, *, fix: str | None = None) -> InventoryError:
        return InventoryError(message, path=str(self.path), line=self.line, fix=fix)


# A variable's value and where it was set, so that errors can point at the line.
Var = tuple[Any, Origin]


@dataclass
class _GroupDraft:
    name: str
    origin: Origin
    hosts: dict[str, None] = field(default_factory=dict)  # an ordered set
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: dict[str, Var] = field(default_factory=dict)
    priority: int = 1

    def copy(self) -> _GroupDraft:
        return dataclasses.replace(
            self,
            hosts=dict(self.hosts),
            children=list(self.children),
            parents=list(self.parents),
            vars=dict(self.vars),
        )


@dataclass
class _HostDraft:
    name: str
    origin: Origin
    groups: list[str] = field(default_factory=list)  # direct groups
    vars: dict[str, Var] = field(default_factory=dict)

    def copy(self) -> _HostDraft:
        return dataclasses.replace(self, groups=list(self.groups), vars=dict(self.vars))


class Builder:
    """Accumulates groups, hosts and variables in Ansible's order, across sources."""

    def __init__(self) -> None:
        builtin = Origin(Path("<builtin>"))
        self.groups: dict[str, _GroupDraft] = {
            "all": _GroupDraft("all", builtin),
            "ungrouped": _GroupDraft("ungrouped", builtin),
        }
        self.hosts: dict[str, _HostDraft] = {}
        self.warnings: list[str] = []
        self.edges: dict[tuple[str, str], Origin] = {}
        self.add_child("all", "ungrouped", builtin)

    def snapshot(self) -> Builder:
        """A copy to roll back to when a file turns out not to be in the format tried."""
        other = Builder.__new__(Builder)
        other.groups = {name: g.copy() for name, g in self.groups.items()}
        other.hosts = {name: h.copy() for name, h in self.hosts.items()}
        other.warnings = list(self.warnings)
        other.edges = dict(self.edges)
        return other

    def restore(self, snapshot: Builder) -> None:
        self.groups, self.hosts = snapshot.groups, snapshot.hosts
        self.warnings, self.edges = snapshot.warnings, snapshot.edges

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def add_group(self, name: object, origin: Origin) -> str:
        if not isinstance(name, str):
            raise origin.error(
                f"group name {name!r} is not a string",
                fix="quote the group name or rename it (letters, digits, underscores)",
            )
        if not name:
            raise origin.error("empty group name")
        _refuse_steering("group", name, origin)
        if name not in self.groups:
            self.groups[name] = _GroupDraft(name, origin)
            if _INVALID_GROUP_CHARS.search(name):
                self.warn(
                    f"{origin}: group name {name!r} has characters Ansible calls invalid "
                    "(use letters, digits and underscores, not starting with a digit)"
                )
        return name

    def add_host(self, name: object, group: str, port: int | None, origin: Origin) -> None:
        if not isinstance(name, str):
            raise origin.error(
                f"host name {name!r} is not a string",
                fix="quote host names that look like numbers",
            )
        if not name:
            raise origin.error("empty host name")
        _refuse_steering("host", name, origin)
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = _HostDraft(name, origin)
            if port:  # Ansible applies 'name:port' only where the host is first defined
                host.vars["ansible_port"] = (port, origin)
        if name not in self.groups[group].hosts:
            self.groups[group].hosts[name] = None
            host.groups.append(group)

    def add_child(self, parent: str, child: str, origin: Origin) -> None:
        if parent == child:
            raise origin.error(
                f"group {parent!r} lists itself as a child",
                fix=f"remove {child!r} from the children of {parent!r}",
            )
        parent_group, child_group = self.groups[parent], self.groups[child]
        if child not in parent_group.children:
            parent_group.children.append(child)
            self.edges[(parent, child)] = origin
        if parent not in child_group.parents:
            child_group.parents.append(parent)

    def set_group_var(self, group: str, key: object, value: Any, origin: Origin) -> None:
        name = self._var_name(key, origin)
        if name == "ansible_group_priority":
            # Ansible keeps this one out of the vars: it only orders sibling groups.
            try:
                self.groups[group].priority = int(value)
            except (TypeError, ValueError, OverflowError):
                raise origin.error(
                    f"ansible_group_priority of group {group!r} is {value!r}, not a number",
                    fix="set ansible_group_priority to a whole number (default 1)",
                ) from None
            return
        self.groups[group].vars[name] = (value, origin)

    def set_host_var(self, host: str, key: object, value: Any, origin: Origin) -> None:
        self.hosts[host].vars[self._var_name(key, origin)] = (value, origin)

    def _var_name(self, key: object, origin: Origin) -> str:
        if not isinstance(key, str):
            raise origin.error(
                f"variable name {key!r} is not a string",
                fix="quote the variable name, or use letters, digits and underscores",
            )
        if not (key.isidentifier() and key.isascii()) or key in JINJA_KEYWORDS:
            self.warn(
                f"{origin}: variable name {key!r} is not valid in Ansible "
                "(letters, digits and underscores, not starting with a digit)"
            )
        return key

    def check_cycles(self) -> None:
        """Refuse a group that contains itself through children, naming the cycle."""
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for root in self.groups:
            if root in state:
                continue
            path: list[str] = [root]
            iterators: list[Iterator[str]] = [iter(self.groups[root].children)]
            state[root] = 1
            while iterators:
                child = next(iterators[-1], None)
                if child is None:
                    state[path.pop()] = 2
                    iterators.pop()
                elif state.get(child) == 1:
                    cycle = [*path[path.index(child) :], child]
                    origin = self.edges.get((path[-1], child), self.groups[path[-1]].origin)
                    raise origin.error(
                        f"group cycle: {' -> '.join(cycle)}",
                        fix=f"remove {child!r} from the children of {path[-1]!r}",
                    )
                elif child not in state:
                    state[child] = 1
                    path.append(child)
                    iterators.append(iter(self.groups[child].children))

    def reconcile(self) -> None:
        """Ansible's reconcile_inventory: every group under 'all', hostless hosts ungrouped."""
        for group in list(self.groups.values()):
            if group.name != "all" and not group.parents:
                self.add_child("all", group.name, group.origin)
        self.check_cycles()  # after: a group that lists 'all' as a child closes a loop here
        ungrouped = self.groups["ungrouped"]
        for host in self.hosts.values():
            mine = self.ancestors(host.groups)
            if "ungrouped" in mine:
                if mine - {"all", "ungrouped"} and host.name in ungrouped.hosts:
                    del ungrouped.hosts[host.name]
                    host.groups.remove("ungrouped")
            elif not mine - {"all"}:
                ungrouped.hosts[host.name] = None
                host.groups.append("ungrouped")
            if not self.ancestors(host.groups):
                self.warn(
                    f"host {host.name!r} is in no group, not even 'all' ('ungrouped' is a child "
                    "of another group); no pattern but its name selects it"
                )
        for name in self.groups:
            if name in self.hosts:
                self.warn(f"{name!r} is both a group and a host; pattern {name!r} means the host")

    def ancestors(self, groups: Sequence[str]) -> set[str]:
        """The groups and all their ancestors."""
        found = set(groups)
        todo = list(groups)
        while todo:
            for parent in self.groups[todo.pop()].parents:
                if parent not in found:
                    found.add(parent)
                    todo.append(parent)
        return found

    def depths(self) -> dict[str, int]:
        """Each group's depth: the longest path from 'all' (Ansible sorts vars by it)."""
        indegree = {name: len(g.parents) for name, g in self.groups.items()}
        depth = dict.fromkeys(self.groups, 0)
        ready = [name for name, count in indegree.items() if count == 0]
        while ready:
            name = ready.pop()
            for child in self.groups[name].children:
                depth[child] = max(depth[child], depth[name] + 1)
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        return depth


def expand_entry(entry: str, origin: Origin) -> tuple[list[str], int | None]:
    """A host entry's names (ranges expanded) and its ``:port``."""
    name, port = hostnames.split_host_port(entry)
    try:
        return hostnames.expand_hostnames(name), port
    except PatternError as exc:
        raise origin.error(exc.message, fix=exc.fix) from None


def _refuse_steering(kind: str, name: str, origin: Origin) -> None:
    """A name with a control, bidirectional or line-separating character is refused: it
    would show as another name (or fake lines) wherever fleet prints it, and a newline
    would add lines to a retry file."""
    found = steering(name)
    if found is not None:
        raise origin.error(
            f"{kind} name {visible(name)!r} contains {found}, a character that steers a "
            "terminal (control, bidirectional override, line separator) or a tab",
            fix=f"rename the {kind}: letters, digits, '.', '-' and '_'",
        )

"""Ansible-compatible inventories: hosts, groups and their variables, as frozen values.

``load(paths)`` reads what ``ansible-inventory -i PATH`` reads and builds the same model:

- sources: files or directories; a directory loads its entries in name order (recursively),
  skipping hidden names, ``group_vars``/``host_vars``/``vars_plugins`` and Ansible's
  ignored extensions (``.retry``, ``.orig``, ``~``, ...).
- formats: YAML/JSON (``all``, ``hosts``, ``children`` to any depth, ``vars``) and INI
  (``[group]``, ``[group:children]``, ``[group:vars]``, ``host k=v``, ranges such as
  ``gpu[01:12]``). A file is tried as YAML then as INI, as Ansible's plugins do; ``.yml``,
  ``.yaml``, ``.json`` and extension-less files may be YAML, everything else is INI.
- variables: ``group_vars/`` and ``host_vars/`` beside each source (``NAME``, ``NAME.yml``,
  ``NAME.yaml``, ``NAME.json`` or a directory ``NAME/``; the first that exists wins).

A host's variables are merged like Ansible's VariableManager merges them (later wins):

    1. inline vars of group 'all'
    2. inline vars of the host's other groups, sorted by (depth, ansible_group_priority, name)
    3. group_vars/all files                          (per source, in source order)
    4. group_vars/GROUP files, groups sorted as in 2 (per source, then per group)
    5. the host's inline vars
    6. host_vars/HOST files

YAML is read with a safe loader only (no Python tags), with a size cap per file and caps on
nesting and alias expansion, so a hostile document fails fast with an InventoryError.
Where Ansible only warns (unknown keys in a YAML group, duplicate keys, ...), the warning
is kept in ``Inventory.warnings``; where fleet would act on bad data (a port that is not
a number, a missing key file, host_vars for a host that does not exist, a group cycle) it
refuses with the file, line and host.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import difflib
import json
import os
import re
import shlex
import stat
import warnings as _warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fleet.errors import InventoryError, PatternError, YamlLimitError
from fleet.hosts import patterns

try:  # libyaml's parser is much faster; the composing below is fleet's own either way.
    from yaml import CSafeLoader as _SafeLoaderBase
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoaderBase  # type: ignore[assignment]

__all__ = ["FrozenDict", "Group", "Host", "Inventory", "Unsafe", "empty", "load"]

# Limits against hostile or mistaken input (an inventory is a few KiB in practice).
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_YAML_DEPTH = 100
MAX_YAML_NODES = 1_000_000  # nodes after expanding aliases: stops "billion laughs"
MAX_GRAPH_LINES = 100_000

DEFAULT_PORT = 22
DEFAULT_SOURCE = Path("inventory")
ENV_VAR = "FLEET_INVENTORY"

_YAML_EXTS = (".yml", ".yaml", ".json")
# What Ansible skips in inventory directories (INVENTORY_IGNORE_EXTS and fixed names).
_REJECT_EXTS = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst")
_IGNORED_EXTS = (*_REJECT_EXTS, ".orig", ".cfg", ".retry")
_IGNORED_ENTRY = re.compile(
    r"^\.|^host_vars$|^group_vars$|^vars_plugins$|(?:"
    + "|".join(re.escape(ext) for ext in _IGNORED_EXTS)
    + r")$"
)
# Variables ansible-inventory never prints (magic and play variables).
_INTERNAL_VARS = frozenset(
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
_HOST_VARS = ("ansible_host", "ansible_ssh_host")
_PORT_VARS = ("ansible_port", "ansible_ssh_port")
_USER_VARS = ("ansible_user", "ansible_ssh_user")
_KEY_VARS = ("ansible_private_key_file", "ansible_ssh_private_key_file")
_BOOL_TRUE = frozenset({"y", "yes", "on", "1", "true", "t"})
_BOOL_FALSE = frozenset({"n", "no", "off", "0", "false", "f"})
_JINJA_KEYWORDS = frozenset({"False", "None", "True", "false", "none", "not", "true"})
_INVALID_GROUP_CHARS = re.compile(r"^[\d\W]|[^\w]")

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
        value = _effective(self.vars, _HOST_VARS)
        return self.name if value is None else str(value)

    @property
    def port(self) -> int:
        """The SSH port: ansible_port (or ansible_ssh_port), else 22."""
        value = _effective(self.vars, _PORT_VARS)
        return DEFAULT_PORT if value is None else int(value)

    @property
    def user(self) -> str | None:
        value = _effective(self.vars, _USER_VARS)
        return None if value is None else str(value)

    @property
    def key_file(self) -> str | None:
        """ansible_ssh_private_key_file (or ansible_private_key_file), ``~`` expanded.

        A relative path is relative to the current directory, as it is for ssh -i.
        """
        value = _effective(self.vars, _KEY_VARS)
        return None if value is None else os.path.expanduser(str(value))

    @property
    def become(self) -> bool:
        value = self.vars.get("ansible_become")
        return False if value is None else bool(_as_bool(value))

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
                group_vars = _public_vars(group.vars)
                if group_vars:
                    entry["vars"] = group_vars
            if entry:
                result[name] = entry
        hostvars: dict[str, Any] = {}
        for name, host in self.hosts.items():
            source = self.own_host_vars.get(name, {}) if export else host.vars
            public = _public_vars(source)
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


def load(paths: Sequence[str | Path] = ()) -> Inventory:
    """Load inventory sources (files or directories) like ``ansible-inventory -i``.

    Without paths: ``$FLEET_INVENTORY`` (``os.pathsep``-separated) or else ``./inventory/``.
    Raises InventoryError (exit 4) naming the file, line and host of the first problem.
    """
    given = [str(p) for p in paths]
    if not given:
        from_env = os.environ.get(ENV_VAR, "")
        given = [p for p in from_env.split(os.pathsep) if p] or [str(DEFAULT_SOURCE)]
        if not from_env and not DEFAULT_SOURCE.exists():
            raise InventoryError(
                f"no inventory given and ./{DEFAULT_SOURCE}/ does not exist",
                fix=f"pass -i PATH, set {ENV_VAR}, or create ./{DEFAULT_SOURCE}/hosts.yml",
            )
        from_where = f" (from ${ENV_VAR})" if from_env else ""
    else:
        from_where = ""
    sources: list[Path] = []
    for text in given:
        source = Path(os.path.abspath(os.path.expanduser(text)))
        if not source.exists():
            raise InventoryError(
                f"inventory source does not exist{from_where}",
                path=text,
                fix="pass an existing inventory file or directory",
            )
        sources.append(source)
    builder = _Builder()
    for source in sources:
        if not _parse_source(builder, source, set()):
            builder.warn(f"{source}: no inventory file found in this directory")
    builder.reconcile()
    return _finish(builder, sources)


# ---------------------------------------------------------------------------------------
# Building: a mutable mirror of Ansible's InventoryData, turned into frozen values at the end.


@dataclass(frozen=True)
class _Origin:
    """Where something was defined: a file and, when known, a line."""

    path: Path
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)

    def error(self, message: str, *, fix: str | None = None) -> InventoryError:
        return InventoryError(message, path=str(self.path), line=self.line, fix=fix)


# A variable's value and where it was set, so that errors can point at the line.
_Var = tuple[Any, _Origin]


@dataclass
class _GroupDraft:
    name: str
    origin: _Origin
    hosts: dict[str, None] = field(default_factory=dict)  # an ordered set
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: dict[str, _Var] = field(default_factory=dict)
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
    origin: _Origin
    groups: list[str] = field(default_factory=list)  # direct groups
    vars: dict[str, _Var] = field(default_factory=dict)

    def copy(self) -> _HostDraft:
        return dataclasses.replace(self, groups=list(self.groups), vars=dict(self.vars))


class _Builder:
    """Accumulates groups, hosts and variables in Ansible's order, across sources."""

    def __init__(self) -> None:
        builtin = _Origin(Path("<builtin>"))
        self.groups: dict[str, _GroupDraft] = {
            "all": _GroupDraft("all", builtin),
            "ungrouped": _GroupDraft("ungrouped", builtin),
        }
        self.hosts: dict[str, _HostDraft] = {}
        self.warnings: list[str] = []
        self.edges: dict[tuple[str, str], _Origin] = {}
        self.add_child("all", "ungrouped", builtin)

    def snapshot(self) -> _Builder:
        """A copy to roll back to when a file turns out not to be in the format tried."""
        other = _Builder.__new__(_Builder)
        other.groups = {name: g.copy() for name, g in self.groups.items()}
        other.hosts = {name: h.copy() for name, h in self.hosts.items()}
        other.warnings = list(self.warnings)
        other.edges = dict(self.edges)
        return other

    def restore(self, snapshot: _Builder) -> None:
        self.groups, self.hosts = snapshot.groups, snapshot.hosts
        self.warnings, self.edges = snapshot.warnings, snapshot.edges

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def add_group(self, name: object, origin: _Origin) -> str:
        if not isinstance(name, str):
            raise origin.error(
                f"group name {name!r} is not a string",
                fix="quote the group name or rename it (letters, digits, underscores)",
            )
        if not name:
            raise origin.error("empty group name")
        if name not in self.groups:
            self.groups[name] = _GroupDraft(name, origin)
            if _INVALID_GROUP_CHARS.search(name):
                self.warn(
                    f"{origin}: group name {name!r} has characters Ansible calls invalid "
                    "(use letters, digits and underscores, not starting with a digit)"
                )
        return name

    def add_host(self, name: object, group: str, port: int | None, origin: _Origin) -> None:
        if not isinstance(name, str):
            raise origin.error(
                f"host name {name!r} is not a string",
                fix="quote host names that look like numbers",
            )
        if not name:
            raise origin.error("empty host name")
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = _HostDraft(name, origin)
            if port:  # Ansible applies 'name:port' only where the host is first defined
                host.vars["ansible_port"] = (port, origin)
        if name not in self.groups[group].hosts:
            self.groups[group].hosts[name] = None
            host.groups.append(group)

    def add_child(self, parent: str, child: str, origin: _Origin) -> None:
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

    def set_group_var(self, group: str, key: object, value: Any, origin: _Origin) -> None:
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

    def set_host_var(self, host: str, key: object, value: Any, origin: _Origin) -> None:
        self.hosts[host].vars[self._var_name(key, origin)] = (value, origin)

    def _var_name(self, key: object, origin: _Origin) -> str:
        if not isinstance(key, str):
            raise origin.error(
                f"variable name {key!r} is not a string",
                fix="quote the variable name, or use letters, digits and underscores",
            )
        if not (key.isidentifier() and key.isascii()) or key in _JINJA_KEYWORDS:
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


# ---------------------------------------------------------------------------------------
# Sources and files.


def _parse_source(builder: _Builder, path: Path, visited: set[str]) -> bool:
    """Parse a file, or a directory's entries in name order; False if nothing was parsed."""
    real = os.path.realpath(path)
    if real in visited:  # a symlink loop
        return False
    if path.is_dir():
        visited.add(real)
        parsed = False
        try:
            entries = sorted(os.listdir(path))
        except OSError as exc:
            raise InventoryError(f"cannot list directory: {exc}", path=str(path)) from exc
        for entry in entries:
            if not _IGNORED_ENTRY.search(entry):
                parsed = _parse_source(builder, path / entry, visited) or parsed
        return parsed
    _parse_file(builder, path)
    return True


def _parse_file(builder: _Builder, path: Path) -> None:
    """Parse one inventory file as YAML and/or INI, as Ansible's yaml and ini plugins would."""
    ext = os.path.splitext(path.name)[1]
    if ext == ".toml":
        raise InventoryError(
            "TOML inventories are not supported by fleet",
            path=str(path),
            fix="convert it to YAML (ansible-inventory -i FILE --list -y) or INI",
        )
    data = _read_bytes(path)
    if ext and ext not in _YAML_EXTS:
        _parse_ini(builder, path, _decode_ini(data, path))
        builder.check_cycles()
        return
    before = builder.snapshot()
    try:
        loaded = _load_structured(data, path)
    except InventoryError as exc:
        yaml_error = exc
    else:
        document = loaded.document
        if isinstance(document, dict) and document.get("plugin"):
            raise InventoryError(
                f"inventory plugin configuration ({document['plugin']!r}), not an inventory",
                path=str(path),
                fix="fleet reads static YAML/INI inventories; export the dynamic one with "
                "'ansible-inventory -i FILE --list -y > hosts.yml'",
            )
        try:
            _YamlInventory(builder, path, loaded).parse()
            builder.check_cycles()
            return
        except InventoryError as exc:
            yaml_error = exc
    builder.restore(before)
    # Ansible's ini plugin gets its turn when the yaml plugin failed.
    try:
        text = _decode_ini(data, path)
        _parse_ini(builder, path, text)
        builder.check_cycles()
    except InventoryError as ini_error:
        builder.restore(before)
        raise (ini_error if not ext and _looks_like_ini(data) else yaml_error) from None
    if ext:
        builder.warn(f"{path}: not a YAML inventory ({yaml_error.message}); read it as INI")


def _read_bytes(path: Path) -> bytes:
    """A regular file's bytes, refusing anything larger than MAX_FILE_BYTES."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InventoryError("not a regular file", path=str(path))
        if info.st_size > MAX_FILE_BYTES:
            raise InventoryError(
                f"file is {info.st_size} bytes; fleet reads inventory files of at most "
                f"{MAX_FILE_BYTES} bytes",
                path=str(path),
                fix="check this is the file you meant, or split it into several files",
            )
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InventoryError(f"cannot read: {exc.strerror or exc}", path=str(path)) from exc
    if len(data) > MAX_FILE_BYTES:  # grew while we looked
        raise InventoryError(f"file is larger than {MAX_FILE_BYTES} bytes", path=str(path))
    return data


def read_yaml(path: Path) -> tuple[Any, dict[int, dict[Any, int]]]:
    """A YAML file read the safe, bounded way inventories are: (document, key lines).

    Key lines map ``id(mapping) -> key -> line``. Playbooks use it too; errors are
    InventoryError with the file, line and column.
    """
    loaded = _load_structured(_read_bytes(path), path)
    return loaded.document, loaded.key_lines


def _decode_ini(data: bytes, path: Path) -> list[str]:
    """The lines of an INI file; like Ansible, bytes that are not UTF-8 may only be comments."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff").splitlines()
    except UnicodeDecodeError:
        pass
    lines: list[str] = []
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            if raw.lstrip()[:1] in (b"#", b";"):
                lines.append("")  # keeps line numbers right
                continue
            raise InventoryError(
                f"not UTF-8 text (byte {raw[exc.start]:#x} at column {exc.start + 1})",
                path=str(path),
                line=number,
                fix="save the file as UTF-8",
            ) from None
    return lines


def _looks_like_ini(data: bytes) -> bool:
    """Whether an extension-less file reads as INI (to pick which parse error to show)."""
    for raw in data.splitlines():
        line = raw.strip()
        if line and line[:1] not in (b"#", b";"):
            return line.startswith(b"[") or (b"=" in line and b": " not in line)
    return False


# ---------------------------------------------------------------------------------------
# YAML: a safe loader with fleet's own (iterative, bounded) composer.


class _Loader(_SafeLoaderBase):
    """A safe YAML loader that records key lines and refuses bombs and deep nesting.

    PyYAML's composer recurses (libyaml's crashes the process on ~100k nested brackets) and
    shares aliased nodes, so expansion only bites later. This one composes iteratively,
    counts the nodes each value expands to, and stops at MAX_YAML_NODES or MAX_YAML_DEPTH.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.key_lines: dict[int, dict[Any, int]] = {}  # id(mapping) -> key -> line
        self.duplicates: list[tuple[str, int, int]] = []  # key, line, column

    def get_single_data(self) -> Any:
        node = self._compose_document()
        return None if node is None else self.construct_document(node)

    def _event(self) -> Any:
        # The stubs type events and marks loosely (two Mark classes); fleet treats them as Any.
        return self.get_event()

    def _resolve(self, kind: type[Node], value: str | None, implicit: Any) -> str:
        resolve: Callable[..., str] = self.resolve
        return resolve(kind, value, implicit)

    def _compose_document(self) -> Node | None:
        self._event()  # stream start
        if self.check_event(StreamEndEvent):
            self._event()
            return None
        document_start = self._event()
        root = self._compose_root()
        self._event()  # document end
        if not self.check_event(StreamEndEvent):
            extra = self._event()
            raise ComposerError(
                "expected a single document in the stream",
                document_start.start_mark,
                "but found another document",
                extra.start_mark,
            )
        self._event()
        return root

    def _compose_root(self) -> Node:
        anchors: dict[str, Node] = {}
        sizes: dict[int, int] = {}  # id(node) -> nodes it expands to
        open_nodes: list[tuple[Node, list[Node], list[int]]] = []  # node, items, [size]
        while True:
            event = self._event()
            start: Any = event.start_mark
            end: Any = event.end_mark
            anchor: Any = getattr(event, "anchor", None)
            if isinstance(event, AliasEvent):
                node = anchors.get(anchor)
                if node is None:
                    raise ComposerError(None, None, f"found undefined alias {anchor!r}", start)
                if id(node) not in sizes:
                    raise YamlLimitError(
                        f"alias *{anchor} refers to a collection that contains it",
                        start,
                    )
                size = sizes[id(node)]
            elif isinstance(event, ScalarEvent):
                tag = event.tag
                if tag is None or tag == "!":
                    tag = self._resolve(ScalarNode, event.value, event.implicit)
                node = ScalarNode(tag, event.value, start, end, event.style)
                self._anchor(anchors, anchor, node, start)
                size = sizes[id(node)] = 1
            elif isinstance(event, SequenceStartEvent | MappingStartEvent):
                kind = SequenceNode if isinstance(event, SequenceStartEvent) else MappingNode
                tag = event.tag
                if tag is None or tag == "!":
                    tag = self._resolve(kind, None, event.implicit)
                node = kind(tag, [], start, None, flow_style=event.flow_style)
                self._anchor(anchors, anchor, node, start)
                if len(open_nodes) >= MAX_YAML_DEPTH:
                    raise YamlLimitError(f"nested more than {MAX_YAML_DEPTH} levels deep", start)
                open_nodes.append((node, [], [1]))
                continue
            elif isinstance(event, SequenceEndEvent | MappingEndEvent):
                node, items, total = open_nodes.pop()
                node.end_mark = end
                if isinstance(node, MappingNode):
                    node.value = list(zip(items[::2], items[1::2], strict=True))
                    self._note_duplicates(node)
                else:
                    node.value = items
                size = sizes[id(node)] = total[0]
            else:  # pragma: no cover - libyaml emits nothing else inside a document
                raise YamlLimitError(f"unexpected YAML event {event}", start)
            if not open_nodes:
                return node
            parent_items, parent_total = open_nodes[-1][1], open_nodes[-1][2]
            parent_items.append(node)
            parent_total[0] += size
            if parent_total[0] > MAX_YAML_NODES:
                raise YamlLimitError(
                    f"the document expands to more than {MAX_YAML_NODES} values through "
                    "aliases (a 'billion laughs' document?)",
                    start,
                )

    @staticmethod
    def _anchor(anchors: dict[str, Node], anchor: Any, node: Node, mark: Any) -> None:
        if anchor is None:
            return
        if anchor in anchors:
            raise ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                anchors[anchor].start_mark,
                "second occurrence",
                mark,
            )
        anchors[anchor] = node

    def _note_duplicates(self, node: MappingNode) -> None:
        seen: set[tuple[str, str]] = set()
        for key, _value in node.value:
            if isinstance(key, ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in seen:
                    mark = key.start_mark
                    self.duplicates.append((key.value, mark.line + 1, mark.column + 1))
                seen.add((key.tag, key.value))


def _construct_map(loader: _Loader, node: MappingNode) -> Iterator[dict[Any, Any]]:
    """Build a mapping like SafeConstructor does, recording the line of every key."""
    data: dict[Any, Any] = {}
    yield data
    loader.flatten_mapping(node)  # '<<' merge keys
    lines: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=False)
        try:
            hash(key)
        except TypeError:
            raise ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found a key that is a list or mapping",
                key_node.start_mark,
            ) from None
        data[key] = loader.construct_object(value_node, deep=False)
        lines[key] = key_node.start_mark.line + 1
    loader.key_lines[id(data)] = lines


def _construct_unsafe(loader: _Loader, node: Node) -> Unsafe:
    if not isinstance(node, ScalarNode):
        raise ConstructorError(
            None, None, "fleet supports !unsafe on strings only", node.start_mark
        )
    return Unsafe(loader.construct_scalar(node))


def _construct_vault(loader: _Loader, node: Node) -> NoReturn:
    raise ConstructorError(
        None, None, "vault-encrypted values (!vault) cannot be read by fleet", node.start_mark
    )


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("!unsafe", _construct_unsafe)
_Loader.add_constructor("!vault", _construct_vault)
_Loader.add_constructor("!vault-encrypted", _construct_vault)


def _json_object(pairs: dict[str, Any]) -> Any:
    """JSON objects, reading Ansible's ``{"__ansible_unsafe": "..."}`` back as Unsafe."""
    if len(pairs) == 1 and isinstance(pairs.get("__ansible_unsafe"), str):
        return Unsafe(pairs["__ansible_unsafe"])
    return pairs


@dataclass
class _Loaded:
    """A parsed YAML/JSON document with the line of each mapping key (YAML only)."""

    document: Any
    key_lines: dict[int, dict[Any, int]] = field(default_factory=dict)  # id(mapping) -> ...
    duplicates: list[tuple[str, int, int]] = field(default_factory=list)  # key, line, column

    def line(self, mapping: object, key: object) -> int | None:
        return self.key_lines.get(id(mapping), {}).get(key)


def _load_structured(data: bytes, path: Path) -> _Loaded:
    """Parse JSON or YAML (JSON first, like Ansible) into a _Loaded."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InventoryError(
            "not UTF-8 text", path=str(path), line=line, fix="save the file as UTF-8"
        ) from None
    try:
        return _Loaded(json.loads(text, object_hook=_json_object))
    except (ValueError, RecursionError):
        pass
    loader = _Loader(text)
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, path) from None
    except YamlLimitError as exc:
        raise InventoryError(
            f"YAML refused: {exc}",
            path=str(path),
            line=exc.mark.line + 1,
            column=exc.mark.column + 1,
            fix="inventories need neither deep nesting nor aliases that multiply",
        ) from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"invalid YAML: {exc}", path=str(path)) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InventoryError(f"invalid YAML value: {exc}", path=str(path)) from None
    finally:
        loader.dispose()
    return _Loaded(document, loader.key_lines, loader.duplicates)


def _yaml_error(exc: yaml.MarkedYAMLError, path: Path) -> InventoryError:
    """A YAML syntax error as 'file:line:column: what was expected'."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    fix = "check the indentation and quoting around this line"
    if "could not determine a constructor for the tag" in problem:
        tag = problem.split("tag", 1)[1].strip(" '").replace("tag:yaml.org,2002:", "!!")
        problem = f"the YAML tag {tag!r} is not allowed"
        fix = "fleet's safe YAML loader builds no Python objects; remove the tag"
    elif exc.context and exc.context_mark is not None and exc.context_mark is not mark:
        problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
    elif exc.context:
        problem = f"{exc.context}: {problem}"
    return InventoryError(
        f"invalid YAML: {problem}",
        path=str(path),
        line=None if mark is None else mark.line + 1,
        column=None if mark is None else mark.column + 1,
        fix=fix,
    )


def _type_name(value: object) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
    }.get(type(value), type(value).__name__)


class _YamlInventory:
    """Ansible's yaml inventory plugin, with line numbers for errors and warnings."""

    def __init__(self, builder: _Builder, path: Path, loaded: _Loaded) -> None:
        self.builder = builder
        self.path = path
        self.loaded = loaded

    def at(self, mapping: object, key: object, fallback: _Origin | None = None) -> _Origin:
        line = self.loaded.line(mapping, key)
        if line is None and fallback is not None:
            return fallback
        return _Origin(self.path, line)

    def parse(self) -> None:
        document = self.loaded.document
        origin = _Origin(self.path, 1)
        if not document:
            raise origin.error(
                "the YAML inventory is empty",
                fix="add groups under 'all:' (see 'How to build your inventory' in Ansible's docs)",
            )
        if not isinstance(document, dict):
            raise origin.error(
                f"a YAML inventory must be a mapping of group names, not {_type_name(document)}",
                fix="start with 'all:' and put hosts under 'hosts:' and groups under 'children:'",
            )
        _warn_duplicates(self.builder.warn, self.path, self.loaded)
        for name, data in document.items():
            self.group(name, data, self.at(document, name))

    def group(self, name: Any, data: Any, origin: _Origin) -> Any:
        if not (data is None or isinstance(data, dict)):
            self.builder.warn(
                f"{origin}: skipping {name!r}: not a group definition "
                f"(a group is a mapping with hosts/children/vars, not {_type_name(data)})"
            )
            return name
        group = self.builder.add_group(name, origin)
        if not data:
            return group
        sections: dict[Any, Any] = dict(data)
        for section in ("vars", "children", "hosts"):
            value = sections.get(section)
            if isinstance(value, str):  # 'hosts: web1' means one host
                sections[section] = {value: None}
            elif not (value is None or isinstance(value, dict)):
                raise self.at(data, section).error(
                    f"'{section}' of group {group!r} must be a mapping, not {_type_name(value)}",
                    fix=f"write each entry under '{section}:' as 'name:' on its own line",
                )
        for key, value in sections.items():
            where = self.at(data, key)
            if not (value is None or isinstance(value, dict)):
                self.builder.warn(
                    f"{where}: skipping key {key!r} in group {group!r}: "
                    f"it is {_type_name(value)}, not a mapping"
                )
            elif value is None:
                continue
            elif key == "vars":
                for var, var_value in value.items():
                    origin = self.at(value, var, where)
                    self.builder.set_group_var(group, var, var_value, origin)
            elif key == "children":
                for child, child_data in value.items():
                    child_origin = self.at(value, child, where)
                    self.link(group, self.group(child, child_data, child_origin), child_origin)
            elif key == "hosts":
                for entry, host_vars in value.items():
                    self.hosts(group, entry, host_vars, self.at(value, entry, where))
            else:
                self.builder.warn(
                    f"{where}: skipping unexpected key {key!r} in group {group!r} "
                    "(only 'vars', 'children' and 'hosts' are valid)"
                )
        return group

    def link(self, parent: str, child: Any, origin: _Origin) -> None:
        """Ansible's add_child: a child that is not a group may still name a known host."""
        if isinstance(child, str) and child in self.builder.groups:
            self.builder.add_child(parent, child, origin)
        elif isinstance(child, str) and child in self.builder.hosts:
            self.builder.add_host(child, parent, None, origin)
        else:
            raise origin.error(
                f"child {child!r} of group {parent!r} is not a group",
                fix=f"write '{child}:' with hosts:, children: or vars: under it, or nothing",
            )

    def hosts(self, group: str, entry: Any, host_vars: Any, origin: _Origin) -> None:
        if not isinstance(entry, str):
            raise origin.error(
                f"host {entry!r} in group {group!r} must be a string",
                fix="quote host names that look like numbers or booleans",
            )
        names, port = _expand_entry(entry, origin)
        host_vars = host_vars or {}
        if not isinstance(host_vars, dict):
            raise origin.error(
                f"variables of host {entry!r} must be a mapping, not {_type_name(host_vars)}",
                fix="write 'name:' alone, or with 'var: value' lines indented under it",
            )
        for name in names:
            self.builder.add_host(name, group, port, origin)
            for var, value in host_vars.items():
                self.builder.set_host_var(name, var, value, self.at(host_vars, var, origin))


def _warn_duplicates(warn: Callable[[str], None], path: Path, loaded: _Loaded) -> None:
    # Ansible warns about duplicate keys and uses the last value; so does fleet.
    for key, line, column in loaded.duplicates:
        warn(f"{path}:{line}:{column}: duplicate key {key!r}; the last value is used")


def _expand_entry(entry: str, origin: _Origin) -> tuple[list[str], int | None]:
    """A host entry's names (ranges expanded) and its ``:port``."""
    name, port = patterns.split_host_port(entry)
    try:
        return patterns.expand_hostnames(name), port
    except PatternError as exc:
        raise origin.error(exc.message, fix=exc.fix) from None


# ---------------------------------------------------------------------------------------
# INI: Ansible's ini inventory plugin.

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")


@dataclass
class _Pending:
    """A group named before its own section: [g:vars] or a [parent:children] entry."""

    line: int
    state: str
    parents: list[str] = field(default_factory=list)


def _parse_ini(builder: _Builder, path: Path, lines: list[str]) -> None:
    pending: dict[str, _Pending] = {}
    group, state = "ungrouped", "hosts"
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        origin = _Origin(path, number)
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
        origin = _Origin(path, declaration.line)
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
    builder: _Builder, group: str, pending: dict[str, _Pending], origin: _Origin
) -> None:
    """Link a group, now defined, under the [parent:children] sections that named it."""
    todo = [group]
    while todo:
        name = todo.pop()
        declaration = pending.pop(name, None)
        if declaration is None:
            continue
        for parent in declaration.parents:
            builder.add_child(parent, name, _Origin(origin.path, declaration.line))
            if parent in pending and pending[parent].state == "children":
                todo.append(parent)


def _ini_host_line(builder: _Builder, group: str, line: str, origin: _Origin) -> None:
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
    names, port = _expand_entry(entry, origin)
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


def _ini_value(text: str, origin: _Origin) -> Any:
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


# ---------------------------------------------------------------------------------------
# group_vars/ and host_vars/ (Ansible's host_group_vars vars plugin).


class _VarsFiles:
    """Finds and loads the vars files of groups and hosts beside each inventory source."""

    def __init__(self, sources: Sequence[Path], warn: Callable[[str], None]) -> None:
        # A file source's vars live beside it; a directory source's inside it.
        self.basedirs = [Path(os.path.realpath(s if s.is_dir() else s.parent)) for s in sources]
        self.warn = warn
        self._loaded: dict[Path, dict[str, _Var]] = {}

    def for_entity(self, kind: str, name: str) -> list[dict[str, _Var]]:
        """One dict of vars per source (in source order) for group or host ``name``."""
        layers = []
        for basedir in self.basedirs:
            merged: dict[str, _Var] = {}
            for path in self.files(basedir / kind, name):
                merged.update(self.load(path))
            layers.append(merged)
        return layers

    @staticmethod
    def candidate(root: Path, name: str) -> Path | None:
        """The first of NAME, NAME.yml, NAME.yaml, NAME.json that exists (file or directory)."""
        if name.startswith(os.sep) or not root.is_dir():
            return None
        for ext in ("", *_YAML_EXTS):
            path = Path(os.path.join(root, name + ext))
            try:
                if path.exists():
                    return path
            except (OSError, ValueError):  # e.g. a NUL in the name
                return None
        return None

    def files(self, root: Path, name: str) -> list[Path]:
        """The vars files of ``name``: the candidate, or the files of a candidate directory."""
        path = self.candidate(root, name)
        if path is None:
            return []
        return _dir_vars_files(path) if path.is_dir() else [path]

    def load(self, path: Path) -> dict[str, _Var]:
        if path not in self._loaded:
            loaded = _load_structured(_read_bytes(path), path)
            _warn_duplicates(self.warn, path, loaded)
            document = loaded.document
            if document is None:
                self._loaded[path] = {}
                return {}
            if not isinstance(document, dict):
                raise InventoryError(
                    f"a vars file must be a mapping of variable names, not {_type_name(document)}",
                    path=str(path),
                    line=1,
                    fix="write 'name: value' lines",
                )
            variables: dict[str, _Var] = {}
            for key, value in document.items():
                origin = _Origin(path, loaded.line(document, key))
                if not isinstance(key, str):
                    raise origin.error(f"variable name {key!r} is not a string")
                variables[key] = (value, origin)
            self._loaded[path] = variables
        return self._loaded[path]

    def check_names(self, builder: _Builder) -> None:
        """host_vars for an unknown host is an error; group_vars for an unknown group a warning."""
        for basedir in dict.fromkeys(self.basedirs):
            for kind, known in (("host_vars", builder.hosts), ("group_vars", builder.groups)):
                if (basedir / kind).exists() and not (basedir / kind).is_dir():
                    builder.warn(f"{basedir / kind}: not a directory, so not read")
                for entry, stem in self._unclaimed(basedir / kind, known):
                    where = basedir / kind / entry
                    if stem in known:
                        used = self.candidate(basedir / kind, stem) or where
                        builder.warn(f"{where}: ignored, {used} is read for {stem!r} instead")
                    elif kind == "host_vars":
                        raise InventoryError(
                            f"no host named {stem!r} in the inventory",
                            path=str(where),
                            fix=f"add {stem!r} to the inventory, or rename or remove this file",
                        )
                    else:
                        builder.warn(f"{where}: no group named {stem!r}; the file is not read")

    @staticmethod
    def _unclaimed(root: Path, known: Mapping[str, object]) -> list[tuple[str, str]]:
        """Entries of group_vars/ or host_vars/ that no group or host reads."""
        try:
            entries = sorted(os.listdir(root)) if root.is_dir() else []
        except OSError:
            return []
        present = set(entries)
        claimed: set[str] = set()
        for name in known:
            first = name.replace(os.altsep or os.sep, os.sep).split(os.sep)[0]
            if first != name:  # 'a/b' reads a file inside a/
                claimed.add(first)
                continue
            for ext in ("", *_YAML_EXTS):
                if name + ext in present:
                    claimed.add(name + ext)
                    break
        unclaimed = []
        for entry in entries:
            if entry in claimed or entry.startswith(".") or entry.endswith("~"):
                continue
            stem, ext = os.path.splitext(entry)
            stem = stem if ext in _YAML_EXTS else entry
            if stem not in known and _IGNORED_ENTRY.search(entry):
                continue  # README.md and the like
            unclaimed.append((entry, stem))
        return unclaimed


def _dir_vars_files(directory: Path, visited: set[str] | None = None) -> list[Path]:
    """Files of a group_vars/NAME/ directory, recursively in name order, as Ansible reads them."""
    visited = set() if visited is None else visited
    found: list[Path] = []
    real = os.path.realpath(directory)
    if real in visited:  # a symlink loop
        return found
    visited.add(real)
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return found
    for entry in entries:
        if entry.startswith(".") or entry.endswith("~"):
            continue
        path = directory / entry
        ext = os.path.splitext(entry)[1]
        if path.is_dir() and not ext:
            found.extend(_dir_vars_files(path, visited))
        elif path.is_file() and (not ext or ext in _YAML_EXTS):
            found.append(path)
    return found


# ---------------------------------------------------------------------------------------
# Merging, validation and the frozen result.


def _finish(builder: _Builder, sources: Sequence[Path]) -> Inventory:
    files = _VarsFiles(sources, builder.warn)
    files.check_names(builder)
    depth = builder.depths()
    group_files = {name: files.for_entity("group_vars", name) for name in builder.groups}

    groups: dict[str, Group] = {}
    for name, group in builder.groups.items():
        group_vars = {key: value for key, (value, _) in group.vars.items()}
        for layer in group_files[name]:
            group_vars.update((key, value) for key, (value, _) in layer.items())
        if group.priority != 1:
            group_vars["ansible_group_priority"] = group.priority
        groups[name] = Group(
            name, tuple(group.hosts), tuple(group.children), FrozenDict(group_vars)
        )

    hosts: dict[str, Host] = {}
    own_vars: dict[str, Mapping[str, Any]] = {}
    problems: list[_Problem] = []
    for name, draft in builder.hosts.items():
        member_of = builder.ancestors(draft.groups)
        ordered = sorted(
            member_of - {"all"},
            key=lambda g: (depth[g], builder.groups[g].priority, g),
        )
        host_files = files.for_entity("host_vars", name)
        # Ansible's precedence (see the module docstring); group_vars: sources outermost.
        layers: list[dict[str, _Var]] = [
            builder.groups["all"].vars,
            *(builder.groups[g].vars for g in ordered),
            *group_files["all"],
            *(group_files[g][i] for i in range(len(files.basedirs)) for g in ordered),
            draft.vars,
            *host_files,
        ]
        merged: dict[str, _Var] = {}
        for layer in layers:
            merged.update(layer)
        problems.extend(_check_connection(name, merged))
        own = dict(draft.vars)
        for layer in host_files:
            own.update(layer)
        hosts[name] = Host(
            name,
            FrozenDict({key: value for key, (value, _) in merged.items()}),
            # Ansible's group_names, then 'all' (which a host is outside of only when it
            # was ungrouped and 'ungrouped' was made some other group's child).
            (*sorted(member_of - {"all"}), "all") if "all" in member_of else (),
        )
        own_vars[name] = FrozenDict({key: value for key, (value, _) in own.items()})
    if problems:
        raise _problems_error(problems)
    return Inventory(
        hosts=FrozenDict(hosts),
        groups=FrozenDict(groups),
        sources=tuple(sources),
        warnings=tuple(builder.warnings),
        own_host_vars=FrozenDict(own_vars),
    )


@dataclass(frozen=True)
class _Problem:
    """One invalid connection setting: where it was set, what is wrong, the fix."""

    origin: _Origin
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


def _check_connection(host: str, merged: Mapping[str, _Var]) -> list[_Problem]:
    """The problems fleet would hit when connecting: bad ports, missing keys, bad booleans."""
    problems: list[_Problem] = []
    for key in _PORT_VARS:
        value, origin = merged.get(key, (None, None))
        if value is not None and origin is not None and _port_number(value) is None:
            problems.append(
                _Problem(
                    origin,
                    f"host {host!r}: {key} is {value!r}, not a port number (1-65535)"
                    + _template_note(value),
                    f"set {key} to a number from 1 to 65535 (or leave it out for 22)",
                )
            )
    for key in _KEY_VARS:
        value, origin = merged.get(key, (None, None))
        if value is None or origin is None:
            continue
        if not isinstance(value, str):
            problems.append(_Problem(origin, f"host {host!r}: {key} is {value!r}, not a path"))
            continue
        path = os.path.expanduser(value)
        if not os.path.isfile(path):
            state = "is not a file" if os.path.exists(path) else "does not exist"
            problems.append(
                _Problem(
                    origin,
                    f"host {host!r}: {key} {os.path.abspath(path)} {state}" + _template_note(value),
                    f"create the key (ssh-keygen -f {value}) or fix the path",
                )
            )
    for key in ("ansible_become",):
        value, origin = merged.get(key, (None, None))
        if value is not None and origin is not None and _as_bool(value) is None:
            problems.append(
                _Problem(
                    origin,
                    f"host {host!r}: {key} is {value!r}, not a boolean",
                    f"set {key} to true or false",
                )
            )
    return problems


def _problems_error(problems: Sequence[_Problem], shown: int = 5) -> InventoryError:
    """The first problem as the error, the next few listed in its message."""
    first = problems[0]
    message = first.message
    if len(problems) > 1:
        message += "\n  other problems:" + "".join(f"\n    {p}" for p in problems[1 : shown + 1])
        if len(problems) > shown + 1:
            message += f"\n    ... and {len(problems) - shown - 1} more"
    return first.origin.error(message, fix=first.fix)


def _template_note(value: object) -> str:
    if isinstance(value, str) and "{{" in value:
        return " (fleet does not evaluate Jinja templates in inventory variables)"
    return ""


def _port_number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 1 <= value <= 65535:
        return value
    return None


def _as_bool(value: object) -> bool | None:
    """Ansible's boolean(): true/yes/on/1/t/y and their opposites; None if neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return True if value == 1 else False if value == 0 else None
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in _BOOL_TRUE else False if text in _BOOL_FALSE else None
    return None


def _effective(values: Mapping[str, Any], names: Sequence[str]) -> Any:
    """The value of the last of ``names`` that is set (Ansible's rule for aliases)."""
    found = None
    for name in names:
        if values.get(name) is not None:
            found = values[name]
    return found


def _public_vars(values: Mapping[str, Any]) -> dict[str, Any]:
    """Vars as ansible-inventory prints them: without magic vars, as JSON values."""
    return {
        _json_key(key): _json_value(value)
        for key, value in values.items()
        if key not in _INTERNAL_VARS
    }


def _json_key(key: object) -> str:
    return key if isinstance(key, str) else json.dumps(key)


def _json_value(value: Any) -> Any:
    """A value as Ansible's JSON encoder writes it, made of plain JSON types."""
    if isinstance(value, Unsafe):
        return {"__ansible_unsafe": str(value)}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {_json_key(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_value(item) for item in value]
    if isinstance(value, datetime.date):  # datetime too
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)

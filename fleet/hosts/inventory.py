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

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import InventoryError
from fleet.hosts.builder import Builder, Origin, Var
from fleet.hosts.ini_format import parse_ini
from fleet.hosts.model import (
    KEY_VARS,
    PORT_VARS,
    FrozenDict,
    Group,
    Host,
    Inventory,
    as_bool,
)
from fleet.hosts.safe_yaml import load_structured, read_bytes
from fleet.hosts.vars_files import IGNORED_ENTRY, YAML_EXTS, VarsFiles
from fleet.hosts.yaml_format import YamlInventory

DEFAULT_SOURCE = Path("inventory")
ENV_VAR = "FLEET_INVENTORY"


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
    builder = Builder()
    for source in sources:
        if not _parse_source(builder, source, set()):
            builder.warn(f"{source}: no inventory file found in this directory")
    builder.reconcile()
    return _finish(builder, sources)


def _parse_source(builder: Builder, path: Path, visited: set[str]) -> bool:
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
            if not IGNORED_ENTRY.search(entry):
                parsed = _parse_source(builder, path / entry, visited) or parsed
        return parsed
    _parse_file(builder, path)
    return True


def _parse_file(builder: Builder, path: Path) -> None:
    """Parse one inventory file as YAML and/or INI, as Ansible's yaml and ini plugins would."""
    ext = os.path.splitext(path.name)[1]
    if ext == ".toml":
        raise InventoryError(
            "TOML inventories are not supported by fleet",
            path=str(path),
            fix="convert it to YAML (ansible-inventory -i FILE --list -y) or INI",
        )
    data = read_bytes(path)
    if ext and ext not in YAML_EXTS:
        parse_ini(builder, path, _decode_ini(data, path))
        builder.check_cycles()
        return
    before = builder.snapshot()
    try:
        loaded = load_structured(data, path)
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
            YamlInventory(builder, path, loaded).parse()
            builder.check_cycles()
            return
        except InventoryError as exc:
            yaml_error = exc
    builder.restore(before)
    # Ansible's ini plugin gets its turn when the yaml plugin failed.
    try:
        text = _decode_ini(data, path)
        parse_ini(builder, path, text)
        builder.check_cycles()
    except InventoryError as ini_error:
        builder.restore(before)
        raise (ini_error if not ext and _looks_like_ini(data) else yaml_error) from None
    if ext:
        builder.warn(f"{path}: not a YAML inventory ({yaml_error.message}); read it as INI")


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


def _finish(builder: Builder, sources: Sequence[Path]) -> Inventory:
    files = VarsFiles(sources, builder.warn)
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
        layers: list[dict[str, Var]] = [
            builder.groups["all"].vars,
            *(builder.groups[g].vars for g in ordered),
            *group_files["all"],
            *(group_files[g][i] for i in range(len(files.basedirs)) for g in ordered),
            draft.vars,
            *host_files,
        ]
        merged: dict[str, Var] = {}
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

    origin: Origin
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


def _check_connection(host: str, merged: Mapping[str, Var]) -> list[_Problem]:
    """The problems fleet would hit when connecting: bad ports, missing keys, bad booleans."""
    problems: list[_Problem] = []
    for key in PORT_VARS:
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
    for key in KEY_VARS:
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
        if value is not None and origin is not None and as_bool(value) is None:
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

"""YAML/JSON inventories (Ansible's yaml plugin): all, hosts, children to any depth, vars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet.hosts.builder import Builder, Origin, expand_entry
from fleet.hosts.safe_yaml import Loaded, type_name, warn_duplicates


class YamlInventory:
    """Ansible's yaml inventory plugin, with line numbers for errors and warnings."""

    def __init__(self, builder: Builder, path: Path, loaded: Loaded) -> None:
        self.builder = builder
        self.path = path
        self.loaded = loaded

    def at(self, mapping: object, key: object, fallback: Origin | None = None) -> Origin:
        line = self.loaded.line(mapping, key)
        if line is None and fallback is not None:
            return fallback
        return Origin(self.path, line)

    def parse(self) -> None:
        document = self.loaded.document
        origin = Origin(self.path, 1)
        if not document:
            raise origin.error(
                "the YAML inventory is empty",
                fix="add groups under 'all:' (see 'How to build your inventory' in Ansible's docs)",
            )
        if not isinstance(document, dict):
            raise origin.error(
                f"a YAML inventory must be a mapping of group names, not {type_name(document)}",
                fix="start with 'all:' and put hosts under 'hosts:' and groups under 'children:'",
            )
        warn_duplicates(self.builder.warn, self.path, self.loaded)
        for name, data in document.items():
            self.group(name, data, self.at(document, name))

    def group(self, name: Any, data: Any, origin: Origin) -> Any:
        if not (data is None or isinstance(data, dict)):
            self.builder.warn(
                f"{origin}: skipping {name!r}: not a group definition "
                f"(a group is a mapping with hosts/children/vars, not {type_name(data)})"
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
                    f"'{section}' of group {group!r} must be a mapping, not {type_name(value)}",
                    fix=f"write each entry under '{section}:' as 'name:' on its own line",
                )
        for key, value in sections.items():
            where = self.at(data, key)
            if not (value is None or isinstance(value, dict)):
                self.builder.warn(
                    f"{where}: skipping key {key!r} in group {group!r}: "
                    f"it is {type_name(value)}, not a mapping"
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

    def link(self, parent: str, child: Any, origin: Origin) -> None:
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

    def hosts(self, group: str, entry: Any, host_vars: Any, origin: Origin) -> None:
        if not isinstance(entry, str):
            raise origin.error(
                f"host {entry!r} in group {group!r} must be a string",
                fix="quote host names that look like numbers or booleans",
            )
        names, port = expand_entry(entry, origin)
        host_vars = host_vars or {}
        if not isinstance(host_vars, dict):
            raise origin.error(
                f"variables of host {entry!r} must be a mapping, not {type_name(host_vars)}",
                fix="write 'name:' alone, or with 'var: value' lines indented under it",
            )
        for name in names:
            self.builder.add_host(name, group, port, origin)
            for var, value in host_vars.items():
                self.builder.set_host_var(name, var, value, self.at(host_vars, var, origin))

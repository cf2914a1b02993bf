"""group_vars/ and host_vars/ beside each source (Ansible's host_group_vars vars plugin)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fleet.errors import InventoryError
from fleet.hosts.builder import Builder, Origin, Var
from fleet.hosts.safe_yaml import load_structured, read_bytes, type_name, warn_duplicates

YAML_EXTS = (".yml", ".yaml", ".json")
# What Ansible skips in inventory directories (INVENTORY_IGNORE_EXTS and fixed names).
_REJECT_EXTS = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst")
_IGNORED_EXTS = (*_REJECT_EXTS, ".orig", ".cfg", ".retry")
IGNORED_ENTRY = re.compile(
    r"^\.|^host_vars$|^group_vars$|^vars_plugins$|(?:"
    + "|".join(re.escape(ext) for ext in _IGNORED_EXTS)
    + r")$"
)


class VarsFiles:
    """Finds and loads the vars files of groups and hosts beside each inventory source."""

    def __init__(self, sources: Sequence[Path], warn: Callable[[str], None]) -> None:
        # A file source's vars live beside it; a directory source's inside it.
        self.basedirs = [Path(os.path.realpath(s if s.is_dir() else s.parent)) for s in sources]
        self.warn = warn
        self._loaded: dict[Path, dict[str, Var]] = {}

    def for_entity(self, kind: str, name: str) -> list[dict[str, Var]]:
        """One dict of vars per source (in source order) for group or host ``name``."""
        layers = []
        for basedir in self.basedirs:
            merged: dict[str, Var] = {}
            for path in self.files(basedir / kind, name):
                merged.update(self.load(path))
            layers.append(merged)
        return layers

    @staticmethod
    def candidate(root: Path, name: str) -> Path | None:
        """The first of NAME, NAME.yml, NAME.yaml, NAME.json that exists (file or directory)."""
        if name.startswith(os.sep) or not root.is_dir():
            return None
        for ext in ("", *YAML_EXTS):
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
        return dir_vars_files(path) if path.is_dir() else [path]

    def load(self, path: Path) -> dict[str, Var]:
        if path not in self._loaded:
            loaded = load_structured(read_bytes(path), path)
            warn_duplicates(self.warn, path, loaded)
            document = loaded.document
            if document is None:
                self._loaded[path] = {}
                return {}
            if not isinstance(document, dict):
                raise InventoryError(
                    f"a vars file must be a mapping of variable names, not {type_name(document)}",
                    path=str(path),
                    line=1,
                    fix="write 'name: value' lines",
                )
            variables: dict[str, Var] = {}
            for key, value in document.items():
                origin = Origin(path, loaded.line(document, key))
                if not isinstance(key, str):
                    raise origin.error(f"variable name {key!r} is not a string")
                variables[key] = (value, origin)
            self._loaded[path] = variables
        return self._loaded[path]

    def check_names(self, builder: Builder) -> None:
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
            for ext in ("", *YAML_EXTS):
                if name + ext in present:
                    claimed.add(name + ext)
                    break
        unclaimed = []
        for entry in entries:
            if entry in claimed or entry.startswith(".") or entry.endswith("~"):
                continue
            stem, ext = os.path.splitext(entry)
            stem = stem if ext in YAML_EXTS else entry
            if stem not in known and IGNORED_ENTRY.search(entry):
                continue  # README.md and the like
            unclaimed.append((entry, stem))
        return unclaimed


def dir_vars_files(directory: Path, visited: set[str] | None = None) -> list[Path]:
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
            found.extend(dir_vars_files(path, visited))
        elif path.is_file() and (not ext or ext in YAML_EXTS):
            found.append(path)
    return found

"""The layout shows the architecture, and stays that way.

- no import cycle between fleet's modules (imports under ``TYPE_CHECKING`` aside);
- packages form layers (:data:`PACKAGE_RANKS`): a package imports only packages below it, so
  there is no cycle between packages either;
- only :mod:`fleet.ssh` imports paramiko, only :mod:`fleet.report` imports rich, only
  :mod:`fleet.cli` imports argparse, only :mod:`fleet.images.daemon` (and the lab)
  imports docker-py, and the core never imports the edges (cli, report, lab);
- at most 14 modules at the top of ``fleet/``: everything else lives in a subpackage;
- no function over 80 lines, except argparse declarations (``register``) and tables;
- no module over 700 lines, except the two in :data:`LONG_MODULES`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fleet"
MAX_FUNCTION_LINES = 80
MAX_TOP_LEVEL_MODULES = 14
MAX_MODULE_LINES = 700
# Long and cohesive: the run command's grammar and policy; the lab's nodes (not shipped code
# a user runs against hosts, and one noun: a lab node's life).
LONG_MODULES = frozenset({"fleet.images.runspec", "fleet.lab.nodes"})
# Edges: the core never imports them.
EDGES = ("fleet.cli", "fleet.report", "fleet.lab")
# Who may import a library that belongs to one edge of the system.
OWNERS = {
    "paramiko": ("fleet.ssh",),
    "fabric": ("fleet.ssh",),
    "rich": ("fleet.report",),
    "argparse": ("fleet.cli",),
    # One typed adapter over docker-py; the lab builds and runs its nodes with it too.
    "docker": ("fleet.images.daemon", "fleet.lab"),
}


# The layers of fleet, bottom first: a package may import only packages of a lower rank. The
# core (up to playbook) never imports an edge (lab, report, cli).
PACKAGE_RANKS = {
    "fleet.errors": 0,
    "fleet.escape": 0,
    "fleet.units": 0,
    "fleet.programs": 0,
    "fleet.hostoutput": 1,
    "fleet.results": 1,
    "fleet.ssh": 2,
    "fleet.hosts": 2,
    "fleet.runner": 3,
    "fleet.images": 4,  # types, labels, run specs, the controller's engine, builds
    "fleet.ship": 5,  # moving images to hosts
    "fleet.ops": 6,  # workflows on hosts: deploy, provision, audit, build hosts
    "fleet.playbook": 7,
    "fleet.lab": 8,
    "fleet.report": 8,
    "fleet.cli": 9,
    "fleet.__main__": 10,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "data" in path.relative_to(PACKAGE).parts:
            continue  # programs run on hosts, not modules of fleet
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str) -> Iterator[tuple[str, int]]:
    """(imported module, line) of a module's imports that run at import or call time."""
    tree = ast.parse(MODULES[name].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    yield f"{node.module}.{alias.name}", node.lineno


def _fleet_imports(name: str) -> set[str]:
    return {m for m, _ in _imports(name) if m in MODULES and m != name and m != "fleet"}


def test_no_import_cycle() -> None:
    graph = {name: _fleet_imports(name) for name in MODULES}
    # A package imports its submodules' names only through them: drop package -> child edges.
    graph = {n: {m for m in deps if not m.startswith(n + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_package_has_a_rank() -> None:
    packages = {_package(name) for name in MODULES} - {"fleet"}
    assert sorted(packages - PACKAGE_RANKS.keys()) == []


def test_packages_import_only_the_layers_below() -> None:
    upward = [
        f"{name}:{line} imports {module} ({_package(name)} is rank "
        f"{PACKAGE_RANKS[_package(name)]}, {_package(module)} is rank "
        f"{PACKAGE_RANKS[_package(module)]})"
        for name in MODULES
        if name != "fleet"
        for module, line in _imports(name)
        if module in MODULES
        and module != "fleet"
        and _package(module) != _package(name)
        and PACKAGE_RANKS[_package(module)] >= PACKAGE_RANKS[_package(name)]
    ]
    assert upward == []


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_only_its_owner_imports_a_library(library: str) -> None:
    owners = OWNERS[library]
    offenders = [
        f"{name}:{line}"
        for name in MODULES
        for module, line in _imports(name)
        if (module == library or module.startswith(library + "."))
        and not any(name == owner or name.startswith(owner + ".") for owner in owners)
    ]
    assert offenders == [], f"{library} imported outside {owners}: {offenders}"


def test_the_core_never_imports_the_edges() -> None:
    core = [n for n in MODULES if not any(n == e or n.startswith(e + ".") for e in EDGES)]
    core = [n for n in core if n not in ("fleet", "fleet.__main__")]
    offenders = [
        f"{name} imports {module} (line {line})"
        for name in core
        for module, line in _imports(name)
        if any(module == e or module.startswith(e + ".") for e in EDGES)
    ]
    assert offenders == []


def test_the_top_level_holds_few_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def _long_functions() -> Iterator[str]:
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            # argparse declarations are one call per option: long, and flat.
            if length > MAX_FUNCTION_LINES and node.name != "register":
                yield f"{name}.{node.name}: {length} lines"


def test_modules_stay_short() -> None:
    long = {
        name: len(path.read_text().splitlines())
        for name, path in MODULES.items()
        if len(path.read_text().splitlines()) > MAX_MODULE_LINES
    }
    assert sorted(long.keys() - LONG_MODULES) == [], long


def test_no_function_is_over_80_lines() -> None:
    assert list(_long_functions()) == []


# A distribution's name on PyPI -> the module it is imported as.
_IMPORT_NAMES = {"pyyaml": "yaml"}


def test_every_declared_dependency_is_imported() -> None:
    """No dependency goes unused: each one in pyproject.toml is imported by some module."""
    import re
    import tomllib

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    imported = {name.partition(".")[0] for module in MODULES for name, _ in _imports(module)}
    unused = []
    for requirement in project["dependencies"]:
        distribution = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()
        if _IMPORT_NAMES.get(distribution, distribution) not in imported:
            unused.append(distribution)
    assert unused == []

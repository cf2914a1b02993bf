"""fleet against Ansible itself, on every fixture in tests/fixtures/inventories.

- ``Inventory.to_ansible_list()`` == ``ansible-inventory -i SRC --list`` (and ``--export``)
- ``Inventory.graph()`` == ``ansible-inventory -i SRC --graph``
- ``patterns.select()`` == the hosts of ``ansible -i SRC PATTERN --list-hosts [--limit L]``

Each Ansible command costs about half a second, so all of them run once per module, in a
thread pool, before the comparisons. ansible-core is a test dependency: its commands are
found beside the running interpreter (``.venv/bin``) before ``PATH``. Outside CI a machine
without it skips this module with the fix; under ``CI=true`` a missing oracle fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleet.errors import PatternError
from fleet.hosts import inventory, patterns
from fleet.hosts.model import Inventory

FIXTURES = Path(__file__).parent / "fixtures" / "inventories"


def _oracle(name: str) -> str | None:
    """An ansible-core command: beside this interpreter (its venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if os.access(beside, os.X_OK) else shutil.which(name)


ANSIBLE = _oracle("ansible")
ANSIBLE_INVENTORY = _oracle("ansible-inventory")
_MISSING = "ansible-core is not installed (pip install 'fleet[test]' to compare with Ansible)"
pytestmark = [
    pytest.mark.ansible_oracle,
    # Under CI the oracle is required: the fixture below fails instead of skipping.
    pytest.mark.skipif(
        (ANSIBLE is None or ANSIBLE_INVENTORY is None) and not os.environ.get("CI"),
        reason=_MISSING,
    ),
]

# name -> the inventory sources, in -i order.
SOURCES: dict[str, tuple[str, ...]] = {
    "docs_basic.ini": ("docs_basic.ini",),
    "docs_basic.yml": ("docs_basic.yml",),
    "docs_children.ini": ("docs_children.ini",),
    "docs_prod_test.yml": ("docs_prod_test.yml",),
    "priority.ini": ("priority.ini",),
    "ini_values.ini": ("ini_values.ini",),
    "yaml_features": ("yaml_features/hosts.yaml",),
    "lab": ("lab",),
    "multi": ("multi/one/hosts.yml", "multi/two/hosts.ini"),
    "multi-reversed": ("multi/two", "multi/one"),
    "nested_order.yml": ("nested_order.yml",),
}


@dataclass(frozen=True)
class Case:
    """One pattern (and --limit) on one fixture, and how fleet's answer relates to Ansible's.

    expect: "same"    -- the same hosts (in the same order unless ``ordered`` is False)
            "refused" -- Ansible selects no host; fleet raises PatternError
            "strict"  -- Ansible warns that a term matches nothing and ignores it; fleet
                         raises PatternError instead
    """

    source: str
    pattern: str
    limit: str | None = None
    expect: str = "same"
    ordered: bool = True

    def __str__(self) -> str:
        limit = f" --limit {self.limit}" if self.limit is not None else ""
        return f"{self.source}: {self.pattern}{limit}"


RETRY = str(FIXTURES / "lab" / "site.retry")

CASES = [
    *(
        Case("docs_basic.ini", p)
        for p in [
            "all",
            "*",
            "webservers",
            "webservers:dbservers",
            "dbservers,webservers",
            "www*",
            "~www0[1-3]",
            "webservers:!www*",
            "webservers[0]",
            "webservers[-1]",
            "webservers[1:3]",
            "webservers[10:]",
            "dbservers[2:0]",
            "*.example.com:&dbservers",
            "!dbservers",
            "&webservers",
            "ungrouped",
            "mail.example.com",
            "db-?.example.com",
        ]
    ),
    Case("docs_basic.ini", "webservers[99]", expect="refused"),
    Case("docs_basic.ini", "nomatch", expect="refused"),
    Case("docs_basic.ini", "all:!all", expect="refused"),
    Case("docs_basic.ini", "webservers:nomatch", expect="strict"),
    Case("docs_basic.ini", "webservers:!nomatch", expect="strict"),
    Case("docs_basic.yml", "all"),
    Case("docs_basic.yml", "dbservers[1:]"),
    *(
        Case("docs_prod_test.yml", p)
        for p in [
            "all",
            "prod",
            "test:prod",
            "prod:&webservers",
            "webservers:!east",
            "e*",
            r"~.*\.example",
            "east,west,!dbservers",
            "ungrouped:prod",
            "prod[1]",
            "*[0]",
        ]
    ),
    Case("docs_prod_test.yml", "all", limit="east"),
    Case("docs_prod_test.yml", "webservers", limit="prod[0]"),
    *(
        Case("docs_children.ini", p)
        for p in [
            "southeast",
            "usa:&raleigh",
            "northwest",
            "southeast[1:2]",
            "all:!usa",
            "sw*",
            "host*:&atlanta",
        ]
    ),
    # southeast and northwest, one generation under usa, both have children: Ansible orders
    # the next generation by iterating a set, so its order differs between runs.
    Case("docs_children.ini", "all", ordered=False),
    Case("docs_children.ini", "usa", ordered=False),
    Case("docs_children.ini", "usa:!atlanta", ordered=False),
    Case("docs_children.ini", "northeast", expect="refused"),  # an empty group
    Case("priority.ini", "all"),
    Case("priority.ini", "*_group"),
    Case("priority.ini", "a_group:&b_group"),
    Case("ini_values.ini", "all"),
    Case("ini_values.ini", "ungrouped"),
    Case("ini_values.ini", "parent"),
    Case("ini_values.ini", "values:!typed"),
    Case("ini_values.ini", "~t"),
    *(
        Case("yaml_features", p)
        for p in [
            "all",
            "nested",
            "level*",
            "10.0.0.*",
            "2001:db8::10",
            "api:web",
            "all:!ungrouped",
            "empty_group:standalone",
        ]
    ),
    *(
        Case("lab", p)
        for p in [
            "all",
            "lab",
            "gpu:&rack2",
            "lab:!canary",
            "frontends",
            "gpu[0:2]:cpu",
            "rack*",
            "~gpu0[1-3]",
            "gpu0*:!gpu05",
        ]
    ),
    Case("lab", "gpu", limit="rack1"),
    Case("lab", "all", limit="canary:login"),
    Case("lab", "lab", limit="!gpu"),
    Case("lab", "lab", limit=f"@{RETRY}"),
    Case("lab", "gpu", limit="cpu", expect="refused"),
    Case("multi", "all"),
    Case("multi", "gamma:!one1"),
    Case("multi-reversed", "all"),
    Case("multi-reversed", "alpha"),
    Case("nested_order.yml", "all", ordered=False),
    Case("nested_order.yml", "a"),
    Case("nested_order.yml", "c"),
    Case("nested_order.yml", "b:a"),
]


def _sources_args(source: str) -> list[str]:
    return [arg for path in SOURCES[source] for arg in ("-i", str(FIXTURES / path))]


def _inventory_commands(source: str) -> dict[str, list[str]]:
    base = [str(ANSIBLE_INVENTORY), *_sources_args(source)]
    return {
        "list": [*base, "--list"],
        "export": [*base, "--list", "--export"],
        "graph": [*base, "--graph"],
    }


def _list_hosts_command(case: Case) -> list[str]:
    command = [str(ANSIBLE), *_sources_args(case.source), case.pattern, "--list-hosts"]
    if case.limit is not None:
        command += ["--limit", case.limit]
    return command


@pytest.fixture(scope="module")
def ansible(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], Any]:
    """Every Ansible command this module needs, run once, concurrently: argv -> result."""
    if ANSIBLE is None or ANSIBLE_INVENTORY is None:
        pytest.fail(f"{_MISSING}; CI requires it (scripts/setup.sh installs it into .venv)")
    workdir = tmp_path_factory.mktemp("ansible")
    # A clean environment: no user ansible.cfg or ANSIBLE_* settings, state kept in workdir.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_HOME=str(workdir / "home"), ANSIBLE_LOCAL_TEMP=str(workdir / "tmp"))
    commands = [c for s in SOURCES for c in _inventory_commands(s).values()]
    commands += [_list_hosts_command(case) for case in CASES]

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        # check=False: a refusal (exit 1) is part of what is compared.
        return subprocess.run(
            command, check=False, cwd=workdir, env=env, capture_output=True, text=True, timeout=120
        )

    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        results = list(pool.map(run, commands))
    return {tuple(c): r for c, r in zip(commands, results, strict=True)}


def _fleet(source: str) -> Inventory:
    return inventory.load([FIXTURES / path for path in SOURCES[source]])


def _ansible_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    # ansible-core 2.19 names its JSON profile; it is not inventory data.
    document["_meta"].pop("profile", None)
    return document


@pytest.mark.parametrize("source", SOURCES)
def test_list_equals_ansible_inventory(ansible: dict[tuple[str, ...], Any], source: str) -> None:
    theirs = _ansible_json(ansible[tuple(_inventory_commands(source)["list"])])
    ours = json.loads(json.dumps(_fleet(source).to_ansible_list()))
    assert ours == theirs


@pytest.mark.parametrize("source", SOURCES)
def test_export_equals_ansible_inventory(ansible: dict[tuple[str, ...], Any], source: str) -> None:
    theirs = _ansible_json(ansible[tuple(_inventory_commands(source)["export"])])
    ours = json.loads(json.dumps(_fleet(source).to_ansible_list(export=True)))
    assert ours == theirs


@pytest.mark.parametrize("source", SOURCES)
def test_graph_equals_ansible_inventory(ansible: dict[tuple[str, ...], Any], source: str) -> None:
    result = ansible[tuple(_inventory_commands(source)["graph"])]
    assert result.returncode == 0, result.stderr
    assert _fleet(source).graph() == result.stdout.rstrip("\n")


_HOSTS_HEADER = re.compile(r"^\s*hosts \((\d+)\):$")


def _listed_hosts(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The hosts ``ansible --list-hosts`` printed; [] when it refused to list any."""
    if result.returncode != 0:
        assert "no hosts" in result.stderr.lower(), result.stderr
        return []
    lines = result.stdout.splitlines()
    for index, line in enumerate(lines):
        header = _HOSTS_HEADER.match(line)
        if header:
            hosts = [h.strip() for h in lines[index + 1 :] if h.strip()]
            assert len(hosts) == int(header.group(1)), result.stdout
            return hosts
    raise AssertionError(f"no 'hosts (N):' line in:\n{result.stdout}\n{result.stderr}")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_select_equals_ansible_list_hosts(ansible: dict[tuple[str, ...], Any], case: Case) -> None:
    result = ansible[tuple(_list_hosts_command(case))]
    theirs = _listed_hosts(result)
    inv = _fleet(case.source)
    if case.expect == "same":
        ours = patterns.select(inv, case.pattern, case.limit)
        if case.ordered:
            assert ours == theirs
        else:
            assert sorted(ours) == sorted(theirs)
        assert [h.name for h in inv.select(case.pattern, case.limit)] == ours
        return
    with pytest.raises(PatternError):
        patterns.select(inv, case.pattern, case.limit)
    if case.expect == "refused":
        assert theirs == []
    else:
        assert case.expect == "strict"
        assert "Could not match supplied host pattern, ignoring: nomatch" in result.stderr

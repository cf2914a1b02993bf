"""Loading inventories (fleet.hosts.inventory): model, variable precedence, refusals, limits.

The fixtures are compared with Ansible itself in test_inventory_ansible.py; here the
expected values are spelled out, so these tests run (and fail) without Ansible installed.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.errors import EXIT_BAD_FILE, FleetError, InventoryError, PatternError
from fleet.hosts import inventory, patterns
from fleet.hosts.model import FrozenDict, Host, Inventory, Unsafe, empty
from fleet.hosts.safe_yaml import MAX_FILE_BYTES

FIXTURES = Path(__file__).parent / "fixtures" / "inventories"
BAD = FIXTURES / "bad"

Write = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Write a file under tmp_path (creating directories) and return its path."""

    def _write(name: str, text: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    return _write


def load_one(path: Path | str) -> Inventory:
    return inventory.load([path])


# --- the model -------------------------------------------------------------------------


def test_basic_layout_with_ranges() -> None:
    inv = load_one(FIXTURES / "docs_basic.ini")
    assert list(inv.hosts)[:3] == ["mail.example.com", "foo.example.com", "bar.example.com"]
    assert len(inv.hosts) == 1 + 2 + 12 + 3 + 6
    assert inv.groups["webservers"].hosts[2:4] == ("www01.example.com", "www02.example.com")
    assert inv.groups["dbservers"].hosts[-1] == "db-f.example.com"
    assert inv.groups["ungrouped"].hosts == ("mail.example.com",)
    assert inv.groups["all"].children == ("ungrouped", "webservers", "dbservers")
    assert inv.hosts["mail.example.com"].groups == ("ungrouped", "all")
    assert inv.hosts["www07.example.com"].groups == ("webservers", "all")
    assert inv.sources == (FIXTURES / "docs_basic.ini",)
    assert inv.warnings == ()


def test_ini_and_yaml_forms_of_one_inventory_agree() -> None:
    from_ini = load_one(FIXTURES / "docs_basic.ini")
    from_yaml = load_one(FIXTURES / "docs_basic.yml")
    assert from_ini.to_ansible_list() == from_yaml.to_ansible_list()
    assert list(from_ini.hosts) == list(from_yaml.hosts)
    assert from_ini.graph() == from_yaml.graph()


def test_children_inherit_and_deeper_groups_win() -> None:
    inv = load_one(FIXTURES / "docs_children.ini")
    host1, host2, host3 = (inv.hosts[h] for h in ("host1", "host2", "host3"))
    # atlanta (depth 3) beats southeast (depth 2): escape_pods is 4 in atlanta, 2 above.
    assert host1.vars["escape_pods"] == 4
    assert host3.vars["escape_pods"] == 2
    assert host2.vars["ntp_server"] == "ntp.atlanta.example.com"
    assert host2.vars["http_port"] == 303
    assert host3.vars["self_destruct_countdown"] == 60
    assert host2.groups == ("atlanta", "raleigh", "southeast", "usa", "all")
    assert inv.groups["usa"].children == ("southeast", "northeast", "southwest", "northwest")
    assert inv.groups["southeast"].vars["halon_system_timeout"] == 30
    # Aliases and ports: ansible_host/ansible_port, and the host:port form.
    jumper = inv.hosts["jumper"]
    assert (jumper.address, jumper.port) == ("192.0.2.50", 5555)
    badwolf = inv.hosts["badwolf.example.com"]
    assert (badwolf.address, badwolf.port) == ("badwolf.example.com", 5309)
    assert badwolf.vars == {"ansible_port": 5309}
    assert inv.hosts["host3"].port == 22


def test_group_priority_orders_siblings() -> None:
    inv = load_one(FIXTURES / "priority.ini")
    both = inv.hosts["both"]
    # a_group has priority 10: merged after b_group and c_group despite its name.
    assert both.vars["testvar"] == "a"
    assert both.vars["shared"] == "from_a"
    assert "ansible_group_priority" not in both.vars
    assert inv.hosts["bhost"].vars["shared"] == "from_b"
    assert inv.groups["a_group"].vars == {
        "testvar": "a",
        "shared": "from_a",
        "ansible_group_priority": 10,
    }
    assert "ansible_group_priority" not in inv.groups["b_group"].vars


def test_equal_priority_siblings_merge_by_name(write: Write) -> None:
    path = write(
        "hosts.ini",
        "[zeta]\nh\n[alpha]\nh\n[zeta:vars]\nv=zeta\n[alpha:vars]\nv=alpha\n",
    )
    assert load_one(path).hosts["h"].vars["v"] == "zeta"  # alpha < zeta: zeta last


def test_ini_values_are_typed_like_ansible() -> None:
    inv = load_one(FIXTURES / "ini_values.ini")
    typed = inv.hosts["typed"].vars
    assert typed["port"] == 2222
    assert typed["ratio"] == 0.5
    assert typed["hexa"] == 16
    assert typed["on"] is True
    assert typed["off"] is False
    assert typed["none"] is None
    assert typed["items"] == [1, "two", 3.0]
    assert typed["pair"] == [1, 2]  # tuples become lists
    texty = inv.hosts["texty"].vars
    assert texty["word"] == "hello"
    assert texty["yes_word"] == "yes"  # not a Python literal: stays text
    assert texty["lower_true"] == "true"
    assert texty["quoted"] == "0123"
    assert texty["spaced"] == "a b c"
    assert texty["secret"] == "03#pa33w0rd"
    mapped = inv.hosts["mapped"].vars
    assert mapped["settings"] == {"a": 1, "b": [True, None]}
    assert mapped["big"] == 123456789012345678901234567890
    assert mapped["neg"] == -7
    # :vars sections are read the same way in ansible-core 2.19.
    group = inv.groups["values"].vars
    assert group["group_int"] == 42
    assert group["group_bool"] is False
    assert group["group_text"] == "some text with spaces"
    assert group["group_comment"] == 8080
    assert group["group_word"] == "word # this one stays, comment included"
    assert group["group_list"] == [1, 2]
    assert group["group_empty"] == ""
    # values (depth 2 under parent) beats all:vars.
    assert inv.hosts["typed"].vars["group_int"] == 42
    assert inv.hosts["lonely"].vars == {"everywhere": 1, "group_int": 0}


def test_ungrouped_follows_ansible() -> None:
    inv = load_one(FIXTURES / "ini_values.ini")
    assert inv.groups["ungrouped"].hosts == ("lonely", "explicit_ungrouped", "in_all_section")
    # 'rehomed' appeared before any section, then in [values]: no longer ungrouped.
    assert inv.hosts["rehomed"].groups == ("parent", "values", "all")
    assert inv.hosts["rehomed"].vars["flag"] == "yes"
    assert inv.hosts["in_all_section"].groups == ("ungrouped", "all")
    assert inv.groups["all"].hosts == ("in_all_section",)
    # [parent:children] listed 'later' before [later] existed.
    assert inv.groups["parent"].children == ("values", "later")


def test_yaml_forms() -> None:
    inv = load_one(FIXTURES / "yaml_features" / "hosts.yaml")
    v6 = inv.hosts["2001:db8::10"]
    assert (v6.address, v6.port) == ("2001:db8::10", 2222)
    assert [h for h in inv.hosts if h.startswith("10.0.0.")] == [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
    ]
    assert inv.groups["web"].hosts == ("single.example.com",)
    assert inv.groups["api"].hosts == (
        "single.example.com",
        "api1.example.com",
        "api2.example.com",
    )
    assert inv.hosts["api1.example.com"].port == 9000
    assert "empty_group" in inv.groups
    assert "not_a_group" not in inv.groups
    standalone = inv.hosts["standalone"]
    # In 'all' directly and in level3: not ungrouped, since it has a real group.
    assert standalone.groups == ("level2", "level3", "nested", "all")
    all_vars = inv.groups["all"].vars
    assert all_vars["started"] == datetime.date(2024, 5, 1)
    assert isinstance(all_vars["template"], Unsafe)
    assert all_vars["yes_is_bool"] is True
    assert all_vars["octal_looking"] == "0o17"
    assert all_vars["old_octal"] == 15
    assert inv.groups["web"].vars["settings"] == {"retries": 3, "timeout": 60}
    assert inv.groups["dupes"].vars["key"] == "second"
    listed = inv.to_ansible_list()
    assert listed["_meta"]["hostvars"]["standalone"]["started"] == "2024-05-01"
    assert listed["_meta"]["hostvars"]["standalone"]["template"] == {
        "__ansible_unsafe": "{{ not_templated }}"
    }


def test_yaml_warnings_where_ansible_warns() -> None:
    warnings = "\n".join(load_one(FIXTURES / "yaml_features" / "hosts.yaml").warnings)
    assert "hosts.yaml:55:9: duplicate key 'key'" in warnings
    assert "hosts.yaml:34: skipping unexpected key 'unexpected' in group 'api'" in warnings
    assert "skipping key 'also_wrong' in group 'api': it is a number" in warnings
    assert "hosts.yaml:58: skipping 'not_a_group'" in warnings


def test_variable_precedence_with_vars_files() -> None:
    inv = load_one(FIXTURES / "yaml_features" / "hosts.yaml")
    # Host vars beat everything; group_vars/all beats inline vars of any group.
    assert inv.hosts["single.example.com"].vars["role"] == "api-override"
    assert inv.hosts["api1.example.com"].vars["role"] == "from_group_vars_all"
    # group_vars/level2 (a file) beats the inline vars of the deeper level3.
    deep1 = inv.hosts["deep1"].vars
    assert deep1["depth_var"] == "level2_file"
    assert deep1["json_var"] == {"nested": [1, 2, {"x": None}]}  # host_vars/deep1.json
    assert deep1["role"] == "deep1-json"
    assert inv.hosts["standalone"].vars["depth_var"] == "level2_file"


def test_directory_source_with_vars_dirs() -> None:
    inv = load_one(FIXTURES / "lab")
    assert set(inv.groups) >= {"lab", "rack1", "rack2", "gpu", "cpu", "login", "frontends"}
    gpu01, gpu02, gpu03 = (inv.hosts[h] for h in ("gpu01", "gpu02", "gpu03"))
    # host_vars file > group_vars/gpu/20-cuda.yaml > [gpu:vars] in 20-extra.ini.
    assert gpu01.vars["cuda"] == "12.6"
    assert gpu03.vars["cuda"] == "12.5"
    assert gpu01.vars["runtime"] == "nvidia-container-runtime"  # group_vars/gpu/10-driver
    assert gpu01.vars["registry"] == "registry.central:5000"  # group_vars/all > lab's vars
    assert gpu01.address == "10.1.1.1"
    assert (gpu02.address, gpu02.vars["gpu_count"]) == ("10.1.1.2", 8)  # host_vars/gpu02/
    assert inv.hosts["cpu01"].address == "10.1.2.1"  # host_vars/cpu01 (no extension)
    assert inv.hosts["gpu05"].vars["power_domain"] == "B"  # group_vars/rack2
    assert gpu03.groups == ("gpu", "lab", "rack1", "all")
    assert gpu01.groups == ("canary", "frontends", "gpu", "lab", "rack1", "all")
    login = inv.hosts["login01"]
    assert (login.become, login.become_user, login.user) == (True, "root", "deploy")
    assert inv.hosts["cpu02"].port == 2202
    assert gpu03.become is False
    assert gpu03.key_file is None
    assert gpu03.ssh_common_args is None
    # notes.md, 20-extra.ini~, site.retry and .hidden.yml would not parse: ignored.
    assert inv.warnings == ()


@pytest.mark.parametrize(
    ("order", "where"),
    [(("one/hosts.yml", "two/hosts.ini"), "two/alpha"), (("two", "one"), "one/alpha")],
)
def test_several_sources(order: tuple[str, str], where: str) -> None:
    inv = inventory.load([FIXTURES / "multi" / name for name in order])
    shared = inv.hosts["shared"]
    # group_vars are merged source by source: a later source's file wins.
    assert shared.vars["where"] == where
    assert shared.vars["extra"] == "two"
    assert shared.groups == ("alpha", "beta", "gamma", "all")
    assert inv.groups["gamma"].children == ("alpha",)


def test_frozen_values() -> None:
    inv = load_one(FIXTURES / "lab")
    host = inv.hosts["gpu01"]
    with pytest.raises(FrozenInstanceError):
        host.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        host.vars["cuda"] = "13"  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        inv.hosts.pop("gpu01")  # type: ignore[attr-defined]
    assert hash(host) == hash(Host("gpu01", {}, host.groups))
    assert pickle.loads(pickle.dumps(inv)) == inv
    assert copy.deepcopy(host) == host
    assert json.loads(json.dumps(host.vars)) == dict(host.vars)
    assert json.loads(json.dumps(inv.to_ansible_list())) == inv.to_ansible_list()


def test_host_properties_and_aliases() -> None:
    host = Host("n1", FrozenDict())
    assert (host.address, host.port, host.user, host.key_file) == ("n1", 22, None, None)
    assert (host.become, host.become_user, host.ssh_common_args) == (False, None, None)
    host = Host(
        "n1",
        FrozenDict(
            ansible_host="10.0.0.1",
            ansible_ssh_host="10.0.0.2",  # the later alias wins, as in Ansible
            ansible_port="2222",
            ansible_user="deploy",
            ansible_ssh_private_key_file="~/.ssh/id_lab",
            ansible_become="yes",
            ansible_become_user="admin",
            ansible_ssh_common_args="-o ProxyJump=jump",
        ),
    )
    assert (host.address, host.port, host.user) == ("10.0.0.2", 2222, "deploy")
    assert host.key_file == os.path.expanduser("~/.ssh/id_lab")
    assert (host.become, host.become_user) == (True, "admin")
    assert host.ssh_common_args == "-o ProxyJump=jump"


def test_graph_and_list() -> None:
    inv = load_one(FIXTURES / "docs_children.ini")
    assert inv.graph("northwest") == "\n".join(
        [
            "@northwest:",
            "  |--@cascadia:",
            "  |  |--nw-a.example.com",
            "  |  |--nw-b.example.com",
            "  |  |--nw-c.example.com",
        ]
    )
    assert inv.graph().splitlines()[:3] == ["@all:", "  |--@ungrouped:", "  |  |--jumper"]
    with pytest.raises(PatternError, match="no group named 'nowhere'"):
        inv.graph("nowhere")
    listed = inv.to_ansible_list()
    assert listed["northwest"] == {"children": ["cascadia"]}
    assert "northeast" not in listed  # empty groups are left out, as Ansible does
    assert listed["_meta"]["hostvars"]["badwolf.example.com"] == {"ansible_port": 5309}
    exported = inv.to_ansible_list(export=True)
    assert exported["atlanta"]["vars"]["proxy"] == "proxy.atlanta.example.com"
    assert exported["_meta"]["hostvars"]["host1"] == {"http_port": 80, "maxRequestsPerChild": 808}


def test_empty_inventory() -> None:
    inv = empty()
    assert dict(inv.hosts) == {}
    assert inv.to_ansible_list() == {"all": {"children": ["ungrouped"]}, "_meta": {"hostvars": {}}}
    assert inv.graph() == "@all:\n  |--@ungrouped:"
    with pytest.raises(PatternError, match="selects no host"):
        inv.select()


# --- where inventories come from -------------------------------------------------------


def test_default_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: Write) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEET_INVENTORY", raising=False)
    with pytest.raises(InventoryError, match="does not exist") as caught:
        inventory.load()
    assert "FLEET_INVENTORY" in str(caught.value.fix)
    write("inventory/hosts.ini", "[web]\nweb1\n")
    assert list(inventory.load().hosts) == ["web1"]
    one = write("a/one.yml", "all:\n  hosts:\n    a1:\n")
    two = write("b/two.ini", "b1\n")
    monkeypatch.setenv("FLEET_INVENTORY", os.pathsep.join([str(one), str(two)]))
    inv = inventory.load()
    assert list(inv.hosts) == ["a1", "b1"]
    assert inv.sources == (one, two)


def test_missing_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="inventory source does not exist") as caught:
        inventory.load([tmp_path / "nope.yml"])
    assert caught.value.path == str(tmp_path / "nope.yml")
    assert caught.value.exit_code == EXIT_BAD_FILE


def test_empty_directory_warns(tmp_path: Path) -> None:
    inv = inventory.load([tmp_path])
    assert dict(inv.hosts) == {}
    assert inv.warnings == (f"{tmp_path}: no inventory file found in this directory",)


def test_symlink_loop_in_directory(tmp_path: Path, write: Write) -> None:
    write("inv/hosts.ini", "h1\n")
    (tmp_path / "inv" / "again").symlink_to(tmp_path / "inv")
    assert list(inventory.load([tmp_path / "inv"]).hosts) == ["h1"]


@pytest.mark.parametrize(
    ("name", "text", "hosts", "warning"),
    [
        # Without an extension a file is tried as YAML, then as INI, like Ansible does.
        ("hosts", "[web]\nweb1\n", ["web1"], None),
        ("hosts", "all:\n  hosts:\n    y1:\n", ["y1"], None),
        ("hosts", "plain1\nplain2\n", ["plain1", "plain2"], None),
        (
            "hosts.json",
            '{"all": {"hosts": {"j1": {"v": {"__ansible_unsafe": "{{x}}"}}}}}',
            ["j1"],
            None,
        ),
        # A .yml file that is not YAML is still read as INI (with a warning).
        ("hosts.yml", "[web]\nweb1\n", ["web1"], "read it as INI"),
        ("hosts.yml", "", [], "the YAML inventory is empty"),
        ("hosts.inventory", "w1 a=1\n", ["w1"], None),
    ],
)
def test_formats(write: Write, name: str, text: str, hosts: list[str], warning: str | None) -> None:
    inv = load_one(write(name, text))
    assert list(inv.hosts) == hosts
    if warning:
        assert any(warning in w for w in inv.warnings)
    else:
        assert inv.warnings == ()


def test_json_unsafe_round_trip(write: Write) -> None:
    path = write("hosts.json", '{"all": {"hosts": {"j1": {"v": {"__ansible_unsafe": "{{x}}"}}}}}')
    inv = load_one(path)
    assert isinstance(inv.hosts["j1"].vars["v"], Unsafe)
    assert inv.to_ansible_list()["_meta"]["hostvars"]["j1"] == {"v": {"__ansible_unsafe": "{{x}}"}}


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "needles", "line", "column"),
    [
        ("malformed.yml", ["invalid YAML", "did not find expected key", "line 4"], 6, 8),
        ("malformed.ini", ["expected key=value after host 'web2'", "'ansible_port'"], 3, None),
        ("cycle.ini", ["group cycle: a -> b -> c -> a"], 8, None),
        ("port.yml", ["host 'web2'", "ansible_port is 'ssh'", "1-65535"], 7, None),
        ("port_range.ini", ["host 'web1'", "ansible_port is 70000"], 5, None),
        ("python_tag.yml", ["!!python/object/apply:os.system", "is not allowed"], 4, 16),
        ("billion_laughs.yml", ["more than 1000000 values", "billion laughs"], 8, 12),
    ],
)
def test_bad_fixtures_are_refused_with_evidence(
    name: str, needles: list[str], line: int, column: int | None
) -> None:
    started = time.perf_counter()
    with pytest.raises(InventoryError) as caught:
        load_one(BAD / name)
    assert (
        time.perf_counter() - started < 30
    )  # a hang guard (a bomb expanded would not finish), not a speed target
    error = caught.value
    assert error.path == str(BAD / name)
    assert (error.line, error.column) == (line, column)
    assert str(error).startswith(f"{BAD / name}:{line}")
    for needle in needles:
        assert needle in error.message
    assert error.fix
    assert error.exit_code == EXIT_BAD_FILE


def test_missing_key_file_names_host_and_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(InventoryError) as caught:
        load_one(BAD / "keyfile.yml")
    error = caught.value
    assert (error.path, error.line) == (str(BAD / "keyfile.yml"), 4)
    missing = tmp_path / ".ssh" / "fleet-test-missing-key"
    assert f"host 'gpu01': ansible_ssh_private_key_file {missing} does not exist" in error.message
    # Once the key exists the same inventory loads, with ~ expanded.
    missing.parent.mkdir()
    missing.write_text("key")
    assert load_one(BAD / "keyfile.yml").hosts["gpu01"].key_file == str(missing)


def test_host_vars_for_unknown_host() -> None:
    with pytest.raises(InventoryError, match="no host named 'ghost'") as caught:
        load_one(BAD / "unknown_host_vars")
    assert caught.value.path == str(BAD / "unknown_host_vars" / "host_vars" / "ghost.yml")
    assert "rename or remove" in str(caught.value.fix)


def test_vars_dir_symlink_loop_and_vars_file_not_dir(write: Write, tmp_path: Path) -> None:
    path = write("inv/hosts.ini", "[web]\nweb1\n")
    write("inv/group_vars/web/main.yml", "a: 1\n")
    (tmp_path / "inv" / "group_vars" / "web" / "again").symlink_to(tmp_path / "inv" / "group_vars")
    write("inv/host_vars", "not a directory\n")
    inv = load_one(path)
    assert inv.hosts["web1"].vars == {"a": 1}
    assert inv.warnings == (f"{tmp_path / 'inv' / 'host_vars'}: not a directory, so not read",)


def test_vars_files_for_unknown_groups_and_shadowed_files(write: Write) -> None:
    path = write("inv/hosts.yml", "all:\n  children:\n    web:\n      hosts:\n        web1:\n")
    write("inv/group_vars/nosuch.yml", "a: 1\n")
    write("inv/group_vars/README.md", "notes\n")
    write("inv/host_vars/web1", "from: bare\n")
    write("inv/host_vars/web1.yml", "from: yml\n")
    inv = load_one(path)
    assert inv.hosts["web1"].vars == {"from": "bare"}  # NAME comes before NAME.yml
    text = "\n".join(inv.warnings)
    assert "group_vars/nosuch.yml: no group named 'nosuch'" in text
    assert "host_vars/web1.yml: ignored" in text
    assert "README" not in text


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("[web:chidren]\nweb1\n", 1, "unknown type 'chidren'"),
        ("[web\nweb1\n", 1, "is not closed"),
        ("[web]\n[bad header]\n", 2, "invalid section header"),
        ("[web]\nweb1 note='unclosed\n", 2, "cannot split host line"),
        ("[a:children]\nb\n\n[c]\n", 2, "lists 'b', which is not a defined group"),
        ("x\n[ghost:vars]\nv=1\n", 2, "[ghost:vars] is for group 'ghost'"),
        ("[a:children]\na\n", 2, "lists itself"),
        ("[web:children]\nall\n", 2, "group cycle: all -> web -> all"),
        ("[web:vars]\nnovalue\n[web]\n", 2, "expected key=value in [web:vars]"),
        ("[web:children]\nbad child\n", 2, "expected a group name"),
        ("[web]\nweb1:\n", 2, "ends with ':'"),
        ("[web]\nweb[01:3]\n", 2, "equally wide"),
        ('[web]\nweb1 x="{[1]: 2}"\n', 2, "cannot read value"),
        ("---\n[web]\n", 1, "looks like a YAML file"),
        ("[web:vars]\nansible_group_priority=high\n[web]\n", 2, "not a number"),
        (b"[web]\nweb\xff1\n", 2, "not UTF-8"),
    ],
)
def test_bad_ini(write: Write, text: str | bytes, line: int, needle: str) -> None:
    path = write("hosts.ini", text)
    with pytest.raises(InventoryError) as caught:
        load_one(path)
    assert (caught.value.path, caught.value.line) == (str(path), line)
    assert needle in caught.value.message


def test_ini_comments_may_hold_any_bytes(write: Write) -> None:
    inv = load_one(write("hosts.ini", b"# caf\xe9 (latin-1)\n[web]\nweb1\n"))
    assert list(inv.hosts) == ["web1"]


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("all:\n  hosts:\n    - web1\n", 2, "'hosts' of group 'all' must be a mapping, not a list"),
        ("- a\n- b\n", 1, "must be a mapping of group names, not a list"),
        ("all:\n  hosts:\n    web1: [1, 2]\n", 3, "variables of host 'web1' must be a mapping"),
        ("all:\n  children:\n    web: 5\n", 3, "child 'web' of group 'all' is not a group"),
        ("all:\n  hosts:\n    1:\n", 3, "host 1 in group 'all' must be a string"),
        ("all:\n  vars:\n    ansible_group_priority: high\n", 3, "not a number"),
        ("all:\n  vars:\n    1: x\n", 3, "variable name 1 is not a string"),
        ("3:\n  hosts:\n", 1, "group name 3 is not a string"),
        ("a: &a [*a]\n", 1, "refers to a collection that contains it"),
        ("a: &x 1\nb: &x 2\n", 2, "found duplicate anchor 'x'"),
        ("a: *nope\n", 1, "found undefined alias 'nope'"),
        ("a: 1\n---\nb: 2\n", 2, "expected a single document"),
        ("all:\n  vars:\n    s: !vault |\n      $ANSIBLE_VAULT;1.1\n", 3, "!vault"),
        ("all:\n  vars:\n    s: !unsafe [1]\n", 3, "!unsafe on strings only"),
        ("? [a, b]\n: 1\n", 1, "a key that is a list or mapping"),
        ("all:\n  vars:\n    when: 2024-13-45\n", None, "invalid YAML value"),
        (b"all:\n  hosts:\n    h\xff:\n", 3, "not UTF-8"),
    ],
)
def test_bad_yaml(write: Write, text: str | bytes, line: int | None, needle: str) -> None:
    path = write("hosts.yml", text)
    with pytest.raises(InventoryError) as caught:
        load_one(path)
    assert (caught.value.path, caught.value.line) == (str(path), line)
    assert needle in caught.value.message


def test_refused_sources(write: Write) -> None:
    with pytest.raises(InventoryError, match="TOML inventories are not supported"):
        load_one(write("hosts.toml", "[all]\n"))
    with pytest.raises(InventoryError, match="inventory plugin configuration") as caught:
        load_one(write("aws_ec2.yml", "plugin: amazon.aws.aws_ec2\n"))
    assert "ansible-inventory" in str(caught.value.fix)


def test_extensionless_file_reports_the_likely_format(write: Write) -> None:
    with pytest.raises(InventoryError, match="invalid YAML"):
        load_one(write("a/hosts", "all:\n  hosts:\n   web1:\n  - x\n"))
    with pytest.raises(InventoryError, match="unknown type"):
        load_one(write("b/hosts", "[web:chidren]\nweb1\n"))


def test_connection_vars_are_checked(write: Write, tmp_path: Path) -> None:
    key = write("id_lab", "key")
    inv = load_one(
        write(
            "ok.yml",
            f"all:\n  hosts:\n    h1:\n      ansible_port: '2222'\n"
            f"      ansible_ssh_private_key_file: {key}\n      ansible_become: 'yes'\n",
        )
    )
    assert (inv.hosts["h1"].port, inv.hosts["h1"].key_file) == (2222, str(key))
    cases = [
        ("ansible_ssh_port: 0", "ansible_ssh_port is 0"),
        ("ansible_port: true", "ansible_port is True"),
        ("ansible_port: '{{ base + 1 }}'", "does not evaluate Jinja templates"),
        (f"ansible_private_key_file: {tmp_path}", "is not a file"),
        ("ansible_ssh_private_key_file: [a]", "not a path"),
        ("ansible_become: maybe", "ansible_become is 'maybe', not a boolean"),
    ]
    for setting, needle in cases:
        path = write("bad.yml", f"all:\n  hosts:\n    h1:\n      {setting}\n")
        with pytest.raises(InventoryError) as caught:
            load_one(path)
        assert needle in caught.value.message
        assert (caught.value.path, caught.value.line) == (str(path), 4)


def test_every_bad_port_is_listed(write: Write) -> None:
    path = write("hosts.ini", "[web]\nw[1:9] ansible_port=ssh\n")
    with pytest.raises(InventoryError) as caught:
        load_one(path)
    message = caught.value.message
    assert message.startswith(f"{path}:2: host 'w1': ansible_port is 'ssh'")
    assert message.count(str(path)) == 6  # the first and five more, each with its line
    assert "other problems:" in message
    assert "host 'w6'" in message
    assert "... and 3 more" in message


def test_group_and_host_names_ansible_frowns_on(write: Write) -> None:
    inv = load_one(write("hosts.ini", "[db-servers]\ndb1 bad-name=1\n[db1]\nx\n"))
    text = "\n".join(inv.warnings)
    assert "group name 'db-servers' has characters Ansible calls invalid" in text
    assert "variable name 'bad-name' is not valid" in text
    assert "'db1' is both a group and a host" in text


# --- limits against hostile input ------------------------------------------------------


def test_huge_file_is_refused_before_reading(write: Write) -> None:
    path = write("huge.yml", b"#" * (MAX_FILE_BYTES + 1))
    started = time.perf_counter()
    with pytest.raises(InventoryError, match="fleet reads inventory files of at most"):
        load_one(path)
    assert time.perf_counter() - started < 30  # a hang guard, not a speed target


def test_deep_nesting_is_refused_without_crashing(write: Write) -> None:
    # libyaml's own composer crashes the interpreter on ~100k nested brackets.
    started = time.perf_counter()
    for name, text in [
        ("flow.yml", "[" * 200_000 + "]" * 200_000),
        ("block.yml", "".join(f"{'  ' * i}k{i}:\n" for i in range(150))),
    ]:
        # fleet's own limit, or PyYAML's (6.0.4 and later stop deep flow nesting themselves).
        with pytest.raises(
            InventoryError, match=r"nested more than 100 levels|maximum nesting depth"
        ):
            load_one(write(name, text))
    assert time.perf_counter() - started < 30  # a hang guard, not a speed target


def test_many_small_aliases_are_fine(write: Write) -> None:
    text = "all:\n  vars:\n    base: &b {x: 1}\n" + "".join(f"    v{i}: *b\n" for i in range(2000))
    assert load_one(write("ok.yml", text)).groups["all"].vars["v1999"] == {"x": 1}


# --- property: whatever the input, only FleetErrors ------------------------------------

_NAMES = st.sampled_from(
    [
        "all",
        "ungrouped",
        "web",
        "db",
        "web1",
        "db1",
        "gpu[01:03]",
        "h:2222",
        "[::1]:22",
        "x y",
        "",
        "hosts",
        "children",
        "vars",
        "plugin",
        "/abs",
        "a/b",
        "nul\x00",
    ]
)
_VAR_NAMES = st.sampled_from(
    [
        "ansible_port",
        "ansible_ssh_port",
        "ansible_host",
        "ansible_become",
        "ansible_group_priority",
        "ansible_ssh_private_key_file",
        "x",
        "1bad",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70_000),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.sampled_from(["22", "ssh", "yes", "{{ x }}", "/dev/null", "2024-01-01"]),
)
_KEYS = st.one_of(_NAMES, _VAR_NAMES, st.integers(0, 3), st.booleans())
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=30,
)
_GROUPS: st.SearchStrategy[dict[str, object]] = st.deferred(
    lambda: st.dictionaries(
        _NAMES,
        st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "hosts": st.dictionaries(
                    _NAMES, st.none() | st.dictionaries(_VAR_NAMES, _SCALARS, max_size=3)
                ),
                "vars": st.dictionaries(_VAR_NAMES, _SCALARS, max_size=3),
                "children": _GROUPS,
                "other": _SCALARS,
            },
        ),
        max_size=3,
    )
)
_INI_LINES = st.one_of(
    st.sampled_from(
        [
            "[web]",
            "[web:children]",
            "[web:vars]",
            "[db]",
            "[db:children]",
            "[all:vars]",
            "[ungrouped]",
            "[x:bogus]",
            "web1",
            "all",
            "ungrouped",
            "db1 ansible_port=22",
            "gpu[01:03] x=1",
            "h:2222",
            "web",
            "db",
            "x=1",
            "ansible_port=ssh",
            "ansible_group_priority=2",
            "k=[1, 2]",
            'h k="{[1]: 2}"',
            "'unclosed",
            "---",
            "[bad",
            "# comment",
            "",
        ]
    ),
    st.text(max_size=12),
)


def _check_loaded(inv: Inventory) -> None:
    json.dumps(inv.to_ansible_list(export=True))
    json.dumps(inv.to_ansible_list())
    inv.graph()
    for host in inv.hosts.values():
        assert host.groups == () or host.groups[-1] == "all"
    # The walk behind the pattern 'all' reaches every host that is in a group (the pattern
    # itself may not: a host named 'all' is what 'all' means then, as in Ansible).
    grouped = {name for name, host in inv.hosts.items() if host.groups}
    assert set(patterns.group_hosts(inv, "all")) == grouped


def _load_or_fleet_error(path: Path) -> None:
    try:
        inv = inventory.load([path])
    except FleetError:
        return
    _check_loaded(inv)


_PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(document=st.one_of(_TREES, _GROUPS, st.builds(lambda g: {"all": {"children": g}}, _GROUPS)))
def test_random_yaml_inventories_only_raise_fleet_errors(
    tmp_path_factory: pytest.TempPathFactory, document: object
) -> None:
    path = tmp_path_factory.mktemp("yaml") / "hosts.yml"
    path.write_text(yaml.safe_dump(document))
    _load_or_fleet_error(path)


@_PROPERTY
@given(lines=st.lists(_INI_LINES, max_size=15))
def test_random_ini_inventories_only_raise_fleet_errors(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str]
) -> None:
    path = tmp_path_factory.mktemp("ini") / "hosts"
    path.write_text("\n".join(lines))
    _load_or_fleet_error(path)


@_PROPERTY
@given(data=st.binary(max_size=200))
def test_random_bytes_only_raise_fleet_errors(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("bytes") / "hosts"
    path.write_bytes(data)
    _load_or_fleet_error(path)


def test_extra_vars_win_over_every_hosts_own_connection_variables(tmp_path: Path) -> None:
    source = tmp_path / "hosts.yml"
    source.write_text("all:\n  hosts:\n    gpu1: {ansible_user: lab}\n    gpu2:\n")
    loaded = inventory.load([source])
    overridden = loaded.with_vars({"ansible_user": "ops", "ansible_become_password": "pw"})
    assert [h.user for h in overridden.hosts.values()] == ["ops", "ops"]
    assert overridden.hosts["gpu2"].vars["ansible_become_password"] == "pw"
    assert loaded.hosts["gpu1"].user == "lab"  # the loaded inventory is unchanged
    assert loaded.with_vars({}) is loaded


# -- names that would steer a terminal -------------------------------------------------------
@pytest.mark.hostile
@pytest.mark.parametrize(
    ("text", "name", "line"),
    [
        ('all:\n  hosts:\n    "lab\\e7": {}\n', "\\x1b", 3),
        ('all:\n  children:\n    "gpu\\e]0;owned\\a":\n      hosts: {lab1: {}}\n', "\\x1b", 3),
        ('all:\n  hosts:\n    "lab1\\nlab2": {}\n', "\\n", 3),
        ('all:\n  hosts:\n    "lab\\u202e1": {}\n', "\\u202e", 3),
        ('all:\n  hosts:\n    "lab\\t1": {}\n', "\\t", 3),
        ("[gpu\x1b[0m]\nlab1\n", "\\x1b", 1),
        ("[gpu]\nlab\u202e1\n", "\\u202e", 2),
    ],
)
def test_a_name_that_steers_a_terminal_is_refused_at_load(
    tmp_path: Path, text: str, name: str, line: int
) -> None:
    path = tmp_path / ("hosts.yml" if text.startswith("all:") else "hosts.ini")
    path.write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_one(path)
    message = caught.value.message
    assert f"{path}:{line}:" in message and f"contains {name}" in message
    assert "\x1b" not in message and "\u202e" not in message and "\n" not in message
    assert caught.value.fix and "rename" in caught.value.fix

"""The host-pattern language (fleet.hosts.patterns) on small inventories; Ansible parity is in
test_inventory_ansible.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import EXIT_BAD_OPTIONS, FleetError, PatternError
from fleet.hosts import hostnames, inventory, patterns
from fleet.hosts.model import Inventory

LAB = """\
all:
  hosts:
    loner:
  children:
    web:
      hosts:
        web1:
        web2:
        web3:
    db:
      hosts:
        db1:
        db2:
    gpu:
      hosts:
        gpu00:
      children:
        rack1:
          hosts:
            gpu01:
            gpu02:
        rack2:
          hosts:
            gpu03:
            gpu04:
    api:
      hosts:
        api.example.com:
        web2:
    edge:
      hosts:
        edge-proxy:
    solo:
      hosts:
        edge:
"""
ALL = [
    "loner",
    "web1",
    "web2",
    "web3",
    "db1",
    "db2",
    "gpu00",
    "api.example.com",
    "edge-proxy",
    "edge",
    "gpu01",
    "gpu02",
    "gpu03",
    "gpu04",
]


@pytest.fixture(scope="module")
def inv(tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    path = tmp_path_factory.mktemp("patterns") / "hosts.yml"
    path.write_text(LAB)
    return inventory.load([path])


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("all", ALL),
        ("*", ALL),
        # A group: its own hosts first, then its children's, generation by generation.
        ("gpu", ["gpu00", "gpu01", "gpu02", "gpu03", "gpu04"]),
        ("rack2", ["gpu03", "gpu04"]),
        # Unions keep the order in which hosts were first matched.
        ("db:web", ["db1", "db2", "web1", "web2", "web3"]),
        ("db,web", ["db1", "db2", "web1", "web2", "web3"]),
        ("db web", ["db1", "db2", "web1", "web2", "web3"]),
        ("web1:web1:web", ["web1", "web2", "web3"]),
        # '&' and '!' apply after every union, wherever they are written.
        ("!web2:web", ["web1", "web3"]),
        ("&api:web", ["web2"]),
        ("web:&api", ["web2"]),
        ("gpu:!rack1:!gpu04", ["gpu00", "gpu03"]),
        # Only '!'/'&' terms: Ansible starts from 'all'.
        ("!gpu:!web", ["loner", "db1", "db2", "api.example.com", "edge-proxy", "edge"]),
        ("&rack1", ["gpu01", "gpu02"]),
        # Globs match group names (then all their hosts) and, with * ? [ ., host names.
        ("rack*", ["gpu01", "gpu02", "gpu03", "gpu04"]),
        ("web?", ["web1", "web2", "web3"]),
        ("*.example.com", ["api.example.com"]),
        # A regex matches from the start of the name, not the whole name.
        ("~gpu0[13]", ["gpu01", "gpu03"]),
        ("~(web|db)1", ["web1", "db1"]),
        ("~rack", ["gpu01", "gpu02", "gpu03", "gpu04"]),
        # Index and inclusive slices on a group's hosts.
        ("web[0]", ["web1"]),
        ("web[-1]", ["web3"]),
        ("web[1:2]", ["web2", "web3"]),
        ("web[1:]", ["web2", "web3"]),
        ("gpu[1:3]", ["gpu01", "gpu02", "gpu03"]),
        ("web[2:0]", ["web3"]),  # Ansible reads an end of 0 as "no end": like web[2]
        ("web[0]:db[-1]", ["web1", "db2"]),
        # A term that is a host's name is that host, even when a group shares the name.
        ("edge", ["edge"]),
        ("ungrouped", ["loner"]),
    ],
)
def test_select_follows_ansible_semantics(
    inv: Inventory, pattern: str, expected: list[str]
) -> None:
    assert patterns.select(inv, pattern) == expected


def test_inventory_select_returns_hosts(inv: Inventory) -> None:
    hosts = inv.select("rack1")
    assert [h.name for h in hosts] == ["gpu01", "gpu02"]
    assert hosts[0] is inv.hosts["gpu01"]
    assert [h.name for h in inv.select()] == ALL


@pytest.mark.parametrize(
    ("pattern", "limit", "expected"),
    [
        ("all", "web", ["web1", "web2", "web3"]),
        ("web", "!web2", ["web1", "web3"]),
        ("gpu", "rack2:gpu00", ["gpu00", "gpu03", "gpu04"]),  # the pattern's order
        ("web:db", "db[0]:web[-1]", ["web3", "db1"]),
        ("all", "~gpu0[2-3]", ["gpu02", "gpu03"]),
    ],
)
def test_limit_intersects_like_ansible(
    inv: Inventory, pattern: str, limit: str, expected: list[str]
) -> None:
    assert patterns.select(inv, pattern, limit) == expected


def test_limit_from_retry_file(inv: Inventory, tmp_path: Path) -> None:
    retry = tmp_path / "deploy.retry"
    retry.write_text("gpu03\n\n  web1  \n")
    assert patterns.select(inv, "all", f"@{retry}") == ["web1", "gpu03"]
    # fleet also accepts @FILE in the pattern itself (Ansible only in --limit).
    assert patterns.select(inv, f"@{retry}") == ["gpu03", "web1"]
    assert patterns.select(inv, f"@{retry}:!web1") == ["gpu03"]


@pytest.mark.parametrize(
    ("pattern", "limit", "needles"),
    [
        ("", None, ["empty"]),
        (" , ,", None, ["empty"]),
        ("web", "", ["--limit is empty"]),
        ("nosuch", None, ["'nosuch'", "matches no host and no group", "known groups: all"]),
        ("web:wbe", None, ["'wbe' in pattern 'web:wbe'", "did you mean 'web'"]),
        ("web:!dbb", None, ["'dbb'"]),  # a mistyped exclusion must not be ignored
        ("web:!web", None, ["selects no host", "fleet inventory --graph"]),
        ("web", "db", ["with --limit 'db' selects no host"]),
        ("web[3]", None, ["index 3 is out of range", "'web' has 3 hosts"]),
        ("web[-4]", None, ["index -4 is out of range"]),
        ("~(web", None, ["not a valid regular expression"]),
        ("!", None, ["names nothing"]),
        ("web:&", None, ["names nothing"]),
        ("@/nonexistent/fleet.retry", None, ["does not exist"]),
        ("all", "@/", ["is a directory"]),
        # 'gpu0[12]' is read as index 12 of 'gpu0' (as Ansible does), not a glob class.
        ("gpu0[12]", None, ["'gpu0'", "matches no host and no group"]),
    ],
)
def test_bad_patterns_raise_pattern_error(
    inv: Inventory, pattern: str, limit: str | None, needles: list[str]
) -> None:
    with pytest.raises(PatternError) as caught:
        patterns.select(inv, pattern, limit)
    text = str(caught.value)
    for needle in needles:
        assert needle in text
    assert caught.value.exit_code == EXIT_BAD_OPTIONS
    assert caught.value.fix


def test_unknown_host_names_the_close_ones(inv: Inventory) -> None:
    with pytest.raises(PatternError, match="no host named 'gpu5'") as caught:
        inv.host("gpu5")
    assert "gpu0" in str(caught.value.fix)
    assert inv.host("gpu01").name == "gpu01"


@pytest.mark.parametrize(
    ("pattern", "terms"),
    [
        ("a,b[1], c[2:3] , d", ["a", "b[1]", "c[2:3]", "d"]),
        ("a:b:!c:&d", ["a", "b", "!c", "&d"]),
        ("web[1:3]", ["web[1:3]"]),  # one address with a range: not split at ':'
        ("~gpu0[1-3]:db", ["~gpu0[1-3]", "db"]),
        ("::1", ["::1"]),
        ("host:22", ["host:22"]),
        ("a b\tc", ["a", "b", "c"]),
        ("a b,c", ["a b", "c"]),
        ("", []),
    ],
)
def test_split_pattern(pattern: str, terms: list[str]) -> None:
    assert patterns.split_pattern(pattern) == terms


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("gpu01", ("gpu01", None)),
        ("gpu01:2222", ("gpu01", 2222)),
        ("badwolf.example.com:5309", ("badwolf.example.com", 5309)),
        ("192.0.2.50", ("192.0.2.50", None)),
        ("10.0.0.[1:3]:22", ("10.0.0.[1:3]", 22)),
        ("[2001:db8::1]:2222", ("2001:db8::1", 2222)),
        ("2001:db8::1", ("2001:db8::1", None)),
        ("::1", ("::1", None)),
        ("gpu[01:04]", ("gpu[01:04]", None)),
        ("db-[a:f].example.com", ("db-[a:f].example.com", None)),
        ("bad_", None),
        ("two words", None),
        ("gpu*", None),
    ],
)
def test_parse_address(entry: str, parsed: tuple[str, int | None] | None) -> None:
    assert hostnames.parse_address(entry) == parsed


@pytest.mark.parametrize(
    ("pattern", "names"),
    [
        ("gpu01", ["gpu01"]),
        ("gpu[01:03]", ["gpu01", "gpu02", "gpu03"]),
        ("gpu[1:3]", ["gpu1", "gpu2", "gpu3"]),
        ("www[01:10:3].lab", ["www01.lab", "www04.lab", "www07.lab", "www10.lab"]),
        ("db-[a:c]", ["db-a", "db-b", "db-c"]),
        ("n[y:B]", ["ny", "nz", "nA", "nB"]),  # Ansible's letters: a-z then A-Z
        ("r[1:2]n[a:b]", ["r1na", "r1nb", "r2na", "r2nb"]),
        ("[:2]x", ["0x", "1x", "2x"]),  # a missing begin is 0
        ("g[3:1]", []),
        ("10.0.0.[8:10]", ["10.0.0.8", "10.0.0.9", "10.0.0.10"]),
    ],
)
def test_expand_hostnames(pattern: str, names: list[str]) -> None:
    assert hostnames.expand_hostnames(pattern) == names


@pytest.mark.parametrize(
    ("pattern", "needle"),
    [
        ("g[01:3]", "equally wide"),
        ("g[1:]", "no end value"),
        ("g[1]", "begin:end"),
        ("g[1:2:3:4]", "begin:end"),
        ("g[x:1]", "neither numeric nor alphabetic"),
        ("g[1:5:0]", "neither numeric nor alphabetic"),
        ("g[c:a]", "begin <= end"),
        ("g[1:2", "malformed"),
        ("g[1:2]x[", "malformed"),
    ],
)
def test_bad_ranges(pattern: str, needle: str) -> None:
    with pytest.raises(PatternError, match=needle):
        hostnames.expand_hostnames(pattern)


def test_huge_ranges_are_refused_without_expanding_them() -> None:
    with pytest.raises(PatternError, match="more than 100000 hosts"):
        hostnames.expand_hostnames("gpu[0:999999999999]")
    with pytest.raises(PatternError, match="more than 100000 hosts"):
        hostnames.expand_hostnames("gpu[1:2][0:999999999999]")
    # A range times an empty one is no name, found without walking the huge range.
    assert hostnames.expand_hostnames("gpu[0:999999999999][1:0]") == []
    assert len(hostnames.expand_hostnames("n[0:9][0:9][0:9]", limit=1000)) == 1000


_PATTERN_PIECES = st.sampled_from(
    [
        *":,!&~*?[]@. \t-_0123456789()|\\^$+{}",
        "web",
        "db",
        "gpu",
        "rack1",
        "all",
        "ungrouped",
        "web1",
        "api.example.com",
        "[0]",
        "[1:2]",
        "[-1]",
        "[2:]",
        "[1-2]",
        "@/nonexistent",
    ]
)
_PATTERNS = st.lists(_PATTERN_PIECES, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(pattern=st.one_of(_PATTERNS, st.text(max_size=20)), limit=st.none() | _PATTERNS)
def test_random_patterns_only_raise_pattern_errors(
    inv: Inventory, pattern: str, limit: str | None
) -> None:
    try:
        names = patterns.select(inv, pattern, limit)
    except PatternError:
        return
    assert names
    assert len(set(names)) == len(names)
    assert set(names) <= set(inv.hosts)


@settings(max_examples=300, deadline=None)
@given(entry=st.text(alphabet="ab01:[]-._ ", max_size=16))
def test_random_host_entries_only_raise_pattern_errors(entry: str) -> None:
    try:
        name, _port = hostnames.split_host_port(entry)
        names = hostnames.expand_hostnames(name, limit=1000)
    except FleetError as exc:
        assert isinstance(exc, PatternError)
        return
    assert all(isinstance(n, str) and n for n in names) or not name
    if "[" not in name:
        assert names == [name]

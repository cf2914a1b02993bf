"""Ansible's host-pattern language: which hosts of an inventory a pattern names.

    all, *                     every host
    web, gpu01                 a group (its hosts and its children's hosts) or one host
    gpu*, ~gpu0[1-3]           a glob or a regex (matched from the start) on group and host names
    a:b  a,b                   union
    a:&b                       intersection
    a:!b                       exclusion
    web[0]  web[-1]  web[1:3]  an index or an inclusive slice of a group's hosts
    @retry.txt                 the terms in a file, one per line (Ansible's retry files)

Evaluation follows Ansible's ``InventoryManager.get_hosts``: the terms are split, plain terms
are applied first, then the ``&`` terms, then the ``!`` terms (a pattern of only ``&``/``!``
terms starts from ``all``); the result keeps the order in which hosts were first matched.
``--limit`` is evaluated the same way and intersected with the pattern's result.

Where Ansible only warns, fleet refuses: a term that names no host and no group, a pattern
that selects no host, an empty pattern. A mistyped group name must not turn a deployment
into a no-op (or, with ``!``, into a deployment to hosts that were meant to be excluded).

This module also holds the inventory side of the language: host names with ranges
(``gpu[01:12]``, ``node-[a:f]``, ``[1:10:2]``) and ``name:port``, as Ansible parses them.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import string
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fleet.errors import PatternError

if TYPE_CHECKING:
    from fleet.hosts.inventory import Inventory

# Host ranges, addresses and ports, as Ansible's parse_address() accepts them.
_NUMERIC_RANGE = r"\[[0-9]+:[0-9]+(?::[0-9]+)?\]"
_HEX_RANGE = r"\[[0-9a-f]+:[0-9a-f]+(?::[0-9]+)?\]"
_ALNUM_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_V4_PART = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{_NUMERIC_RANGE})"
_V6_PART = rf"(?:[0-9a-f]{{1,4}}|{_HEX_RANGE})"
# A DNS label (underscores allowed), possibly with ranges; it may not end in '-' or '_'.
_LABEL = rf"(?:\w|{_ALNUM_RANGE})(?:[\w-]|{_ALNUM_RANGE})*(?<![_-])"


def _ipv6_forms(part: str) -> str:
    """Every way to write an IPv6 address (compressed or not, IPv4-mapped), as alternatives."""
    forms = [
        rf"(?:{part}:){{7}}{part}",
        rf"(?:{part}:){{1,6}}:",
        *(rf"(?:{part}:){{{n}}}(?::{part}){{1,{7 - n}}}" for n in range(1, 7)),
        rf":(?::{part}){{1,6}}",
        rf"{part}?::",
        rf"(?:0:){{6}}(?:{part}\.){{3}}{part}",
        rf"::(?:ffff:)?(?:{part}\.){{3}}{part}",
        rf"(?:0:){{5}}ffff:(?:{part}\.){{3}}{part}",
    ]
    return "|".join(forms)


_BRACKETED_HOSTPORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
_HOSTPORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_IPV4 = re.compile(rf"^(?:{_V4_PART}\.){{3}}{_V4_PART}$", re.I)
_IPV6 = re.compile(rf"^(?:{_ipv6_forms(_V6_PART)})$", re.I)
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.I)

# Terms of a ':'-separated pattern: anything but whitespace and ':[]', or a whole [...].
_COLON_TERM = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
# 'name[3]', 'name[-1]', 'name[1:3]', 'name[2:]' (and the old 'name[1-3]').
_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")
# Characters that make Ansible look at host names even when group names matched.
_HOST_SEARCH_CHARS = (".", "?", "*", "[")

# Bounds that keep a typo like 'gpu[0:99999999]' from eating the machine.
MAX_EXPANDED_HOSTS = 100_000
MAX_PATTERN_FILE_BYTES = 4 * 1024 * 1024

_GRAPH_FIX = "run 'fleet inventory --graph' to see the groups and their hosts"


def parse_address(address: str) -> tuple[str, int | None] | None:
    """Split ``host:port`` / ``[v6]:port`` like Ansible; None when it is not an address.

    The host part may contain ranges (``gpu[01:04]``). Like Ansible, both port forms are
    tried in turn, so ``[a:b]:22`` is read as the bracketed form first.
    """
    port: int | None = None
    for form in (_BRACKETED_HOSTPORT, _HOSTPORT):
        found = form.match(address)
        if found:
            address, port = found.group(1), int(found.group(2))
    if _IPV4.match(address) or _IPV6.match(address) or _HOSTNAME.match(address):
        return address, port
    return None


def split_host_port(pattern: str) -> tuple[str, int | None]:
    """An inventory host entry's name part and port (None when there is no valid port)."""
    parsed = parse_address(pattern)
    return parsed if parsed is not None else (pattern, None)


def expand_hostnames(pattern: str, limit: int = MAX_EXPANDED_HOSTS) -> list[str]:
    """Expand Ansible host ranges: ``gpu[01:03]`` -> gpu01 gpu02 gpu03; ``[a:c]``; ``[1:9:2]``.

    Several ranges in one name multiply (``r[1:2]n[1:2]``). Raises PatternError for a
    malformed range or one that would produce more than ``limit`` names.
    """
    return _expand(pattern, pattern, limit)


def _expand(pattern: str, whole: str, limit: int) -> list[str]:
    if "[" not in pattern:
        return [pattern]
    opened = pattern.index("[")
    closed = pattern.find("]", opened)
    if closed < 0:
        return list(_expand_first_range(pattern, whole))  # raises: malformed
    # Every name of the first range continues with the same rest: expand the rest once,
    # so the work is proportional to the names made (a range times an empty one is none).
    firsts = _expand_first_range(pattern[: closed + 1], whole)
    rests = _expand(pattern[closed + 1 :], whole, limit)
    names: list[str] = []
    if not rests:
        return names
    for first in firsts:
        names.extend(first + rest for rest in rests)
        if len(names) > limit:
            raise PatternError(
                f"host range {whole!r} expands to more than {limit} hosts",
                fix="check the range bounds (a typo such as [0:99999999]?)",
            )
    return names


def _expand_first_range(name: str, whole: str) -> Iterator[str]:
    """The names made by expanding the first ``[begin:end(:step)]`` of ``name``."""
    parts = name.replace("[", "|", 1).replace("]", "|", 1).split("|")
    if len(parts) != 3:
        raise PatternError(
            f"host range in {whole!r} is malformed",
            fix="write a range as name[begin:end] or name[begin:end:step], e.g. gpu[01:12]",
        )
    head, body, tail = parts
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise PatternError(
            f"host range [{body}] in {whole!r} must be begin:end or begin:end:step",
            fix="write e.g. gpu[01:12] or gpu[1:12:2]",
        )
    begin = bounds[0] or "0"
    end = bounds[1]
    step = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise PatternError(f"host range [{body}] in {whole!r} has no end value")
    width = 0
    if begin[0] == "0" and len(begin) > 1:
        # A leading zero asks for zero-padded names; both bounds must then be as wide.
        if len(begin) != len(end):
            raise PatternError(
                f"host range [{body}] in {whole!r} must have equally wide begin and end",
                fix=f"write e.g. [{begin}:{end.zfill(len(begin))}]",
            )
        width = len(begin)
    values = _alphabetic_range(begin, end, step, whole)
    if values is None:
        try:
            values = (str(n) for n in range(int(begin), int(end) + 1, int(step)))
        except ValueError:
            raise PatternError(
                f"host range [{body}] in {whole!r} is neither numeric nor alphabetic",
                fix="write e.g. gpu[01:12], node-[a:f] or gpu[1:12:2]",
            ) from None
    return (head + (value.zfill(width) if width else value) + tail for value in values)


def _alphabetic_range(begin: str, end: str, step: str, whole: str) -> Iterator[str] | None:
    """Letters from ``begin`` to ``end``; None when the bounds are not letters."""
    letters = string.ascii_letters
    # Ansible finds the bounds with str.index, so 'ab' counts as starting at 'a'.
    if begin not in letters or end not in letters:
        return None
    first, last = letters.index(begin), letters.index(end)
    if first > last:
        raise PatternError(f"host range in {whole!r} must have begin <= end")
    try:
        stride = int(step)
    except ValueError:
        return None
    if stride == 0:
        return None
    return iter(letters[first : last + 1 : stride])


def split_pattern(pattern: str) -> list[str]:
    """Split a pattern into terms like Ansible's split_host_pattern (',' or ':' separated).

    A pattern that is one address (``gpu[1:3]``, ``::1``, ``host:22``) is one term.
    """
    if "," in pattern:
        terms = pattern.split(",")
    elif parse_address(pattern) is not None:
        terms = [pattern]
    else:
        terms = _COLON_TERM.findall(pattern)
    return [term.strip() for term in terms if term.strip()]


def select(inventory: Inventory, pattern: str, limit: str | None = None) -> list[str]:
    """The names of the hosts ``pattern`` selects, restricted by ``limit`` (``--limit``).

    The order is Ansible's (``ansible -i INV PATTERN --list-hosts``). Raises PatternError
    for a malformed pattern, a term that matches nothing, or an empty result.
    """
    matcher = _Matcher(inventory)
    terms = _terms(pattern, "pattern")
    if not terms:
        raise PatternError("the host pattern is empty", fix="give a group or host name, or 'all'")
    names = matcher.evaluate(terms, pattern)
    if limit is not None:
        limit_terms = _terms(limit, "--limit")
        if not limit_terms:
            raise PatternError("--limit is empty", fix="give a pattern to --limit, or leave it out")
        allowed = set(matcher.evaluate(limit_terms, limit))
        names = [name for name in names if name in allowed]
    names = list(dict.fromkeys(names))
    if not names:
        where = f"pattern {pattern!r}" + (f" with --limit {limit!r}" if limit is not None else "")
        raise PatternError(
            f"the {where} selects no host",
            fix=f"known groups: {_listing(inventory.groups)}; {_GRAPH_FIX}",
        )
    return names


def group_hosts(inventory: Inventory, group: str) -> list[str]:
    """A group's hosts and its descendants' hosts, in Ansible's order, without repeats.

    Ansible walks the group, its children, then each further generation; the order within
    a generation comes from iterating a set, so it varies between Ansible runs once two
    groups of one generation have children. fleet takes them in definition order.
    """
    groups = inventory.groups
    ordered = [group, *groups[group].children]
    seen = set(ordered)
    generation = ordered[1:]
    while generation:
        following: list[str] = []
        for name in generation:
            for child in groups[name].children:
                if child not in seen:
                    seen.add(child)
                    following.append(child)
        ordered.extend(following)
        generation = following
    hosts: dict[str, None] = {}
    for name in ordered:
        for host in groups[name].hosts:
            hosts.setdefault(host)
    return list(hosts)


def _terms(pattern: str, what: str) -> list[str]:
    """The pattern's terms, with ``@file`` terms replaced by the file's lines."""
    terms: list[str] = []
    for term in split_pattern(pattern):
        if term.startswith("@"):
            terms.extend(_read_pattern_file(term[1:], what))
        else:
            terms.append(term)
    return terms


def _read_pattern_file(name: str, what: str) -> list[str]:
    """The non-empty stripped lines of a retry/limit file."""
    path = Path(os.path.expanduser(name))
    try:
        if not path.is_file():
            problem = "is a directory" if path.is_dir() else "does not exist"
            raise PatternError(
                f"{what} file {name!r} {problem}",
                fix="give @FILE with a file of host names, one per line",
            )
        if path.stat().st_size > MAX_PATTERN_FILE_BYTES:
            raise PatternError(
                f"{what} file {name!r} is larger than {MAX_PATTERN_FILE_BYTES} bytes",
                fix="a retry file holds one host name per line; check the path",
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PatternError(f"cannot read {what} file {name!r}: {exc}") from exc
    return [line.strip() for line in text.split("\n") if line.strip()]


class _Matcher:
    """Evaluates terms against one inventory, caching each term's matches."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._cache: dict[str, list[str]] = {}
        self._group_hosts: dict[str, list[str]] = {}

    def evaluate(self, terms: Sequence[str], pattern: str) -> list[str]:
        """Ansible's _evaluate_patterns: unions first, then '&' terms, then '!' terms."""
        plain = [t for t in terms if t[0] not in "&!"]
        intersect = [t for t in terms if t[0] == "&"]
        exclude = [t for t in terms if t[0] == "!"]
        hosts: list[str] = []
        for term in (plain or ["all"]) + intersect + exclude:
            if term in self.inventory.hosts:
                # A term that is exactly a host name is that host, even if a group shares it.
                hosts.append(term)
                continue
            matched = self.match(term, pattern)
            if term[0] == "!":
                excluded = set(matched)
                hosts = [h for h in hosts if h not in excluded]
            elif term[0] == "&":
                kept = set(matched)
                hosts = [h for h in hosts if h in kept]
            else:
                known = set(hosts)
                hosts.extend(h for h in matched if h not in known)
        return hosts

    def match(self, term: str, pattern: str) -> list[str]:
        """The hosts one term (without its '&'/'!') matches, subscript applied."""
        body = term[1:] if term[0] in "&!" else term
        if not body:
            raise PatternError(
                f"term {term!r} in pattern {pattern!r} names nothing",
                fix="write '!name' or '&name' with a group or host name",
            )
        if body not in self._cache:
            self._cache[body] = self._match_uncached(body, pattern)
        return self._cache[body]

    def _match_uncached(self, body: str, pattern: str) -> list[str]:
        expr, subscript = _split_subscript(body)
        hosts, matched_group = self._enumerate(expr, pattern)
        if not hosts and not matched_group:
            raise PatternError(
                f"{expr!r} in pattern {pattern!r} matches no host and no group",
                fix=self._suggest(expr),
            )
        if subscript is None or not hosts:
            return hosts
        start, end = subscript
        # Ansible's rule, kept as is: 'web[2:0]' is read like 'web[2]' (an end of 0 is "none").
        if end:
            if end == -1:
                end = len(hosts) - 1
            return hosts[start : end + 1]
        try:
            return [hosts[start]]
        except IndexError:
            raise PatternError(
                f"{body!r} in pattern {pattern!r}: index {start} is out of range "
                f"({expr!r} has {len(hosts)} hosts)",
                fix=f"use an index from {-len(hosts)} to {len(hosts) - 1}",
            ) from None

    def _enumerate(self, expr: str, pattern: str) -> tuple[list[str], bool]:
        """Hosts of the groups ``expr`` matches, plus hosts it matches by name."""
        regex = compile_term(expr, pattern)
        groups = [name for name in self.inventory.groups if regex.match(name)]
        hosts: list[str] = []
        for name in groups:
            if name not in self._group_hosts:
                self._group_hosts[name] = group_hosts(self.inventory, name)
            hosts.extend(self._group_hosts[name])
        if not groups or expr[0] == "~" or any(c in expr for c in _HOST_SEARCH_CHARS):
            hosts.extend(name for name in self.inventory.hosts if regex.match(name))
        return hosts, bool(groups)

    def _suggest(self, expr: str) -> str:
        names = [*self.inventory.groups, *self.inventory.hosts]
        close = difflib.get_close_matches(expr, names, n=3)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return f"{hint}known groups: {_listing(self.inventory.groups)}; {_GRAPH_FIX}"


def _split_subscript(body: str) -> tuple[str, tuple[int, int | None] | None]:
    """'web[1:3]' -> ('web', (1, 3)); a regex term ('~...') never has a subscript."""
    if body[0] == "~":
        return body, None
    found = _SUBSCRIPT.match(body)
    if not found:
        return body, None
    expr, index, start, _separator, end = found.groups()
    if index:
        return expr, (int(index), None)
    return expr, (int(start), int(end) if end else -1)


def compile_term(expr: str, pattern: str) -> re.Pattern[str]:
    """A glob (fnmatch, whole name) or, with '~', a regex matched from the name's start."""
    try:
        with warnings.catch_warnings():
            # Python warns of syntax that may change meaning one day ('[[' ...); the
            # expression compiles and means what it says today, so the user is not nagged.
            warnings.simplefilter("ignore", FutureWarning)
            if expr[0] == "~":
                return re.compile(expr[1:])
            return re.compile(fnmatch.translate(expr))
    except (re.error, OverflowError, RecursionError) as exc:
        raise PatternError(
            f"{expr!r} in pattern {pattern!r} is not a valid regular expression: {exc}",
            fix="'~' starts a Python regular expression; escape special characters with '\\'",
        ) from None


def _listing(names: Iterable[str], most: int = 20) -> str:
    """A short comma-separated list of names for an error message."""
    items = list(names)
    shown = ", ".join(items[:most])
    return shown + (f", ... ({len(items)} in all)" if len(items) > most else "")

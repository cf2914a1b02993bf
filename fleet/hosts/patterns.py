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

Host names with ranges and ports, the inventory's side, are :mod:`fleet.hosts.hostnames`.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fleet.errors import PatternError
from fleet.hosts.hostnames import parse_address

if TYPE_CHECKING:
    from fleet.hosts.model import Inventory


# Terms of a ':'-separated pattern: anything but whitespace and ':[]', or a whole [...].
_COLON_TERM = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
# 'name[3]', 'name[-1]', 'name[1:3]', 'name[2:]' (and the old 'name[1-3]').
_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")
# Characters that make Ansible look at host names even when group names matched.
_HOST_SEARCH_CHARS = (".", "?", "*", "[")

MAX_PATTERN_FILE_BYTES = 4 * 1024 * 1024

_GRAPH_FIX = "run 'fleet inventory --graph' to see the groups and their hosts"


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

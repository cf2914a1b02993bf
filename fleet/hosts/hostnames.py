"""Inventory host names as Ansible parses them: ranges (``gpu[01:12]``, ``node-[a:f]``,
``[1:10:2]``), ``name:port`` and ``[v6]:port``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator

from fleet.errors import PatternError

# Host ranges, addresses and ports, as Ansible's parse_address() accepts them.
_NUMERIC_RANGE = r"\[[0-9]+:[0-9]+(?::[0-9]+)?\]"
_HEX_RANGE = r"\[[0-9a-f]+:[0-9a-f]+(?::[0-9]+)?\]"
_ALNUM_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
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
_V4_PART = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{_NUMERIC_RANGE})"
_V6_PART = rf"(?:[0-9a-f]{{1,4}}|{_HEX_RANGE})"
_IPV4 = re.compile(rf"^(?:{_V4_PART}\.){{3}}{_V4_PART}$", re.I)
_IPV6 = re.compile(rf"^(?:{_ipv6_forms(_V6_PART)})$", re.I)
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.I)
# Bounds that keep a typo like 'gpu[0:99999999]' from eating the machine.
MAX_EXPANDED_HOSTS = 100_000


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

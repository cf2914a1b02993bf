"""Sizes and times as fleet reads and shows them: one parser, one formatter, one clock.

Sizes use binary units, as Docker reads them (``2g`` is 2 GiB, ``--shm-size``, ``docker
run --memory``): ``10G``, ``500M``, ``1.5T``, ``10GiB``, ``512KB`` or a plain number of
bytes, case-insensitive.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?)(?:i?b)?\s*", re.IGNORECASE)
_POWERS = " kmgtp"
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def parse_size(value: object) -> int:
    """Bytes from a size (``10G``) or a non-negative integer; ValueError names the value."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a size like 10G or 500M")
    return int(float(match.group(1)) * 1024 ** _POWERS.index(match.group(2).lower() or " "))


def format_size(count: float) -> str:
    """A byte count as people read it: ``512B``, ``1.5MiB``, ``6.3GiB``."""
    for unit in _UNITS:
        if abs(count) < 1024 or unit == _UNITS[-1]:
            return f"{count:.0f}{unit}" if unit == "B" else f"{count:.1f}{unit}"
        count /= 1024
    raise AssertionError("unreachable: the last unit always returns")


def utc_now() -> str:
    """The current time as UTC ISO-8601 with a ``Z``, to the second."""
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds of ``90``, ``90s``, ``30m``, ``2h`` or ``1d``; ValueError naming the text."""
    matched = _DURATION.match(str(text))
    if matched is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 90, 90s, 30m, 2h)")
    return float(matched.group(1)) * _DURATION_UNITS[matched.group(2) or "s"]

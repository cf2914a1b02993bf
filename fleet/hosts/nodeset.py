"""Host names folded into ranges, as cluster tools print node sets: ``gpu[01-40,42]``.

A summary line naming 500 hosts one by one is thousands of characters nobody reads; folded,
a lab's hosts are a few ranges. Only a name's last run of digits is folded; a zero-padded
number folds only with numbers of its width (``gpu01``-``gpu09`` and ``gpu10``, never
``gpu1``), so every range stands for exactly the names it came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)(?P<suffix>\D*)$")


@dataclass
class _Group:
    prefix: str
    suffix: str
    # (value, width): width is the digits' length when zero-padded, 0 when not.
    numbers: set[tuple[int, int]] = field(default_factory=set)

    def pieces(self) -> Iterable[tuple[str, int]]:
        """The group as one name or one bracketed set of ranges, with how many it names."""
        # gpu10 is as wide as gpu09: it continues the padded range.
        padded = {width for _, width in self.numbers if width}
        numbers = {
            (value, len(str(value))) if not width and len(str(value)) in padded else (value, width)
            for value, width in self.numbers
        }
        ordered = sorted(numbers, key=lambda n: (n[1], n[0]))
        if len(ordered) == 1:
            value, width = ordered[0]
            yield f"{self.prefix}{value:0{width}d}{self.suffix}", 1
            return
        ranges: list[str] = []
        start = end = ordered[0]
        for number in [*ordered[1:], None]:
            if number is not None and number[1] == end[1] and number[0] == end[0] + 1:
                end = number
                continue
            first, last = f"{start[0]:0{start[1]}d}", f"{end[0]:0{end[1]}d}"
            ranges.append(first if start == end else f"{first}-{last}")
            if number is not None:
                start = end = number
        yield f"{self.prefix}[{','.join(ranges)}]{self.suffix}", len(ordered)


def fold(names: Iterable[str]) -> list[tuple[str, int]]:
    """``names`` as pieces (a name or a range set) and how many names each stands for, in
    the order their first name came."""
    groups: dict[tuple[str, str], _Group] = {}
    order: list[tuple[str, str] | str] = []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        match = _NUMBERED.match(name)
        if match is None:
            order.append(name)
            continue
        key = (match["prefix"], match["suffix"])
        digits = match["digits"]
        width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
        if key not in groups:
            groups[key] = _Group(*key)
            order.append(key)
        groups[key].numbers.add((int(digits), width))
    pieces: list[tuple[str, int]] = []
    for item in order:
        if isinstance(item, str):
            pieces.append((item, 1))
        else:
            pieces.extend(groups[item].pieces())
    return pieces


def folded(names: Iterable[str], width: int = 160) -> str:
    """``names`` folded, cut at about ``width`` characters: ``h[0-9], x, y … and 497 more``."""
    pieces = fold(names)
    text = ", ".join(piece for piece, _ in pieces)
    if len(text) <= width:
        return text
    shown: list[str] = []
    used = 0
    for piece, _ in pieces:
        if shown and used + len(piece) + 2 > width - 20:
            break
        shown.append(piece)
        used += len(piece) + 2
    rest = sum(count for _, count in pieces[len(shown) :])
    return f"{', '.join(shown)} … and {rest} more"

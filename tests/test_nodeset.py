"""Host names folded into ranges: every range names exactly the hosts it came from."""

from __future__ import annotations

import re

import pytest

from fleet.hosts.nodeset import fold, folded


def expand(piece: str) -> list[str]:
    """The names a folded piece stands for (the test's own reading of the notation)."""
    match = re.fullmatch(r"(?P<prefix>.*?)\[(?P<ranges>[\d,-]+)\](?P<suffix>.*)", piece)
    if match is None:
        return [piece]
    names = []
    for part in match["ranges"].split(","):
        first, _, last = part.partition("-")
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        for value in range(int(first), int(last or first) + 1):
            names.append(f"{match['prefix']}{value:0{width}d}{match['suffix']}")
    return names


@pytest.mark.parametrize(
    ("names", "pieces"),
    [
        ([f"gpu{i:02d}" for i in range(1, 41)] + ["gpu42"], ["gpu[01-40,42]"]),
        ([f"h{i}" for i in range(500)], ["h[0-499]"]),
        (["lab1", "lab2", "lab3", "db", "x1y2", "x1y3"], ["lab[1-3]", "db", "x1y[2-3]"]),
        # gpu1 and gpu01 are two hosts: neither range may swallow the other.
        (["gpu1", "gpu01", "gpu2"], ["gpu[1-2,01]"]),
        (["rack2-n7", "rack2-n8", "rack3-n1"], ["rack2-n[7-8]", "rack3-n1"]),
        (["a", "a", "b"], ["a", "b"]),
        ([], []),
    ],
)
def test_fold(names: list[str], pieces: list[str]) -> None:
    folded_pieces = fold(names)
    assert [p for p, _ in folded_pieces] == pieces
    assert sorted(n for p in pieces for n in expand(p)) == sorted(set(names))
    assert sum(count for _, count in folded_pieces) == len(set(names))


def test_folded_cuts_what_does_not_fold_and_counts_the_rest() -> None:
    # Names without digits: nothing folds.
    names = [f"host-{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(500)]
    text = folded(names, width=120)
    assert len(text) <= 140
    shown = text.split(" … ")[0].split(", ")
    rest = int(re.search(r"and (\d+) more$", text)[1])  # type: ignore[index]
    assert rest == 500 - len(shown)
    assert folded(["lab1", "lab2"]) == "lab[1-2]"

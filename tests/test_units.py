"""One size parser and formatter, one clock."""

from __future__ import annotations

import re

import pytest

from fleet.units import format_size, parse_size, utc_now


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10G", 10 << 30),
        ("500m", 500 << 20),
        ("1.5T", int(1.5 * (1 << 40))),
        ("10GiB", 10 << 30),
        ("512KB", 512 << 10),
        (" 2g ", 2 << 30),
        ("1024", 1024),
        (7, 7),
    ],
)
def test_sizes_read_as_docker_reads_them(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "ten", "10X", "-1", -1, True, None, 1.5, "10 G B"])
def test_a_bad_size_names_itself(bad: object) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        parse_size(bad)


def test_sizes_shown_to_the_unit_that_fits() -> None:
    assert [format_size(n) for n in (512, 1536, 240 << 20, int(6.3 * (1 << 30)), 3 << 40)] == [
        "512B",
        "1.5KiB",
        "240.0MiB",
        "6.3GiB",
        "3.0TiB",
    ]


def test_utc_now_is_iso_to_the_second() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_now())

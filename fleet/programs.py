"""The programs fleet runs on hosts: files under ``fleet/data/remote/``, read once.

They are files so that linters read them (CI runs shellcheck on the shell ones and ruff on
the Python ones) and tests run them against recorded hosts. A line ``#@include NAME`` is
replaced by the program NAME, so that programs share parts without copies. Each goes to a
host as the argument of ``sh -c`` (or ``python3 -c``) with its inputs as positional
arguments: nothing from outside is ever spliced into a program's text.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_INCLUDE = re.compile(r"^#@include ([\w.-]+)\n", re.M)


@functools.cache
def program(name: str) -> str:
    """The text of the host program ``name``, its includes expanded."""
    text = resources.files("fleet").joinpath("data", "remote", name).read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: program(m.group(1)), text)


def names() -> list[str]:
    """Every host program shipped with fleet."""
    folder = resources.files("fleet").joinpath("data", "remote")
    return sorted(entry.name for entry in folder.iterdir() if entry.is_file())

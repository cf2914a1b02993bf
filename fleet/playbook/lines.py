"""A file's lines edited as Ansible's ``lineinfile`` edits them: one line made present
(replacing the last line a ``regexp`` or ``search_string`` matches, with the match's
groups in it under ``backrefs``; else inserted after or before an anchor, else appended)
or every matching line removed. Pure: text in, text and a message out.

Regular expressions are searched per line, bounded in time: a file a container can write
must not stall the controller.
"""

from __future__ import annotations

import regex

from fleet.errors import PlaybookError

# Longer than this for one search is a pathological pattern, not a file's content.
SEARCH_SECONDS = 1.0


def _search(pattern: str, text: str) -> regex.Match[str] | None:
    try:
        return regex.search(pattern, text, timeout=SEARCH_SECONDS)
    except regex.error as exc:
        raise PlaybookError(f"lineinfile: {pattern!r} is not a regular expression: {exc}") from None
    except TimeoutError:
        raise PlaybookError(
            f"lineinfile: {pattern!r} took over {SEARCH_SECONDS:g}s on one line"
        ) from None


def _found(
    current: str, regexp: str | None, search_string: str | None
) -> regex.Match[str] | bool | None:
    """Whether a line is the one sought: ``regexp``'s match (its groups serve backrefs),
    else whether it holds ``search_string``."""
    if regexp is not None:
        return _search(regexp, current)
    return search_string is not None and search_string in current


def present(
    text: str,
    line: str,
    *,
    regexp: str | None = None,
    insertafter: str | None = None,
    insertbefore: str | None = None,
    firstmatch: bool = False,
    search_string: str | None = None,
    backrefs: bool = False,
) -> tuple[str, str]:
    """``text`` with ``line`` in it; the new text and Ansible's message ('' unchanged)."""
    lines = text.splitlines(keepends=True)
    wanted = line + "\n"
    matched = None
    match: regex.Match[str] | None = None
    if regexp is not None or search_string is not None:
        for index, current in enumerate(lines):
            found = _found(current, regexp, search_string)
            if found:
                matched = index
                match = found if isinstance(found, regex.Match) else None
                if firstmatch:
                    break
    if backrefs and match is not None:
        wanted = _expand(match, line) + "\n"
    anchor = None
    if insertafter not in (None, "BOF", "EOF"):
        anchor = insertafter
    elif insertbefore not in (None, "BOF"):
        anchor = insertbefore
    spot = None
    if matched is None:
        # Where the line is already, else where an anchor puts it.
        for index, current in enumerate(lines):
            if current.rstrip("\r\n") == line:
                matched = index
            elif anchor is not None and _search(anchor, current):
                spot = index + 1 if insertafter else index
                if firstmatch:
                    break
    if matched is not None:
        if lines[matched] == wanted:
            return text, ""
        lines[matched] = wanted
        return "".join(lines), "line replaced"
    if backrefs:
        # Without a match there are no groups to build the line from: nothing is added.
        return text, ""
    if "BOF" in (insertafter, insertbefore):
        return wanted + text, "line added"
    # The line is nowhere in the file (it would have matched above): insert it.
    if spot is None or insertafter == "EOF":
        spot = len(lines)
    if spot == len(lines) and lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"
    lines.insert(spot, wanted)
    return "".join(lines), "line added"


def _expand(match: regex.Match[str], line: str) -> str:
    try:
        return match.expand(line)
    except (regex.error, IndexError) as exc:
        raise PlaybookError(
            f"lineinfile: line {line!r} names a group the regexp has not: {exc}"
        ) from None


def absent(
    text: str,
    *,
    line: str | None = None,
    regexp: str | None = None,
    search_string: str | None = None,
) -> tuple[str, int]:
    """``text`` without the lines ``regexp`` matches (or that hold ``search_string``, else
    equal to ``line``); how many went."""
    kept: list[str] = []
    removed = 0
    for current in text.splitlines(keepends=True):
        if regexp is not None or search_string is not None:
            gone = bool(_found(current, regexp, search_string))
        else:
            gone = current.rstrip("\r\n") == line
        removed += gone
        if not gone:
            kept.append(current)
    return "".join(kept), removed

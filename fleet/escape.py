"""Text from a host, an image label or an inventory, escaped so no terminal obeys it.

Such text is data, never instructions to the terminal: every character that could steer
one is shown escaped, the way Python writes it: ESC as ``\\x1b``, so a CSI (``\\x1b[2J``)
or OSC (``\\x1b]0;title\\x07``) sequence is read, not obeyed. That covers the C0 controls,
DEL and the C1 controls (U+0080-U+009F, which some terminals take as CSI and OSC on their
own), the characters that reorder what follows (bidirectional overrides and isolates)
and the Unicode line separators. Tab is kept: terminals and rich expand it to spaces.

A newline is escaped too (``\\n``) unless the caller shows a block of lines: in a table
cell or on a one-line entry a newline starts a line that looks like fleet's own, a fake
row of another host, a fake "fix:". Where lines are kept, they are indented, so a host's
line never starts where fleet's own lines start.

Bytes that were not UTF-8 arrive as U+FFFD (decoded with "replace") or, decoded with
"surrogateescape", as lone surrogates U+DC80-U+DCFF, which no terminal encoding can
write: those are shown as the byte they stand for (``\\xff``).

Names (hosts, groups) may hold none of these characters, nor a tab: the inventory refuses
them at load (:func:`steering`), so a name is never one thing on screen and another in a
file.
"""

from __future__ import annotations

import re

# C0 but tab, DEL, C1; the bidirectional marks, embeddings, overrides and isolates; the
# Unicode line and paragraph separators; lone surrogates (not UTF-8, cannot be written).
_STEERING = re.compile(
    r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_STEERING_BUT_NEWLINE = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r"}
_TAB = re.compile("\t")


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def visible(text: object, *, lines: bool = False, indent: str = "") -> str:
    """``text`` (``str()`` of any value) with every character that could steer a
    terminal shown escaped.

    With ``lines``, newlines are kept and each line after the first starts with
    ``indent``; otherwise a newline is shown as ``\\n``, so the text stays on one line.
    """
    value = text if isinstance(text, str) else str(text)
    if lines:
        return _STEERING_BUT_NEWLINE.sub(_escaped, value).replace("\n", "\n" + indent)
    return _STEERING.sub(_escaped, value)


def steering(text: str) -> str | None:
    """The first character of ``text`` that could steer a terminal, or a tab, escaped as
    :func:`visible` shows it (a tab as ``\\t``); None when there is none."""
    found = _STEERING.search(text) or _TAB.search(text)
    if found is None:
        return None
    return "\\t" if found.group() == "\t" else _escaped(found)


def first_line(text: str) -> str:
    """The text up to its first newline (a carriage return does not end it: it is shown)."""
    return text.split("\n", 1)[0]

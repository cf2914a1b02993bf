"""Text from a host, an image label or an inventory, made safe to show with rich.

It is always wrapped in a ``Text`` (rich parses markup only in plain ``str``, so ``[/]``
or ``[link=...]`` stay characters), with every character that could steer a terminal
escaped by :func:`fleet.escape.visible`.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from fleet.escape import first_line, visible


def safe_text(
    text: object, style: str | Style = "", *, lines: bool = False, indent: str = ""
) -> Text:
    """A ``Text`` of ``text`` as :func:`visible` shows it: never markup, never a control."""
    return Text(visible(text, lines=lines, indent=indent), style=style)


__all__ = ["first_line", "safe_text", "visible"]

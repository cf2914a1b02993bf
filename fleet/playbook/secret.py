"""Secret variables: values that never reach output, ``--json``, image labels or host history.

A playbook run marks variables secret (``fleet play --secret NAME``, or ``--secret @FILE``
for a file of them). Their values may be used where a host needs them (``exec``,
``copy``, ``cron``, ``dir``); every result is redacted before anyone sees it, and steps
whose arguments are recorded (in image labels, the hosts' history) refuse them.

A value is redacted in every form it takes on the way to a reader, not only as itself: a
command line quotes it for the shell, an error message ``repr``s that command line, a
JSON document escapes it, a diff splits it into lines (see :func:`renderings`). A task
whose arguments hold a secret also shows no diff content and no command line at all
(:data:`fleet.ops.files.DIFF_HIDDEN`, :meth:`Secrets.hide_commands`): what is left of a
secret after quoting, truncation or partial output cannot be told from the rest.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shlex
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import markupsafe
from jinja2.utils import htmlsafe_json_dumps

from fleet.errors import CommandError, FleetError, HostError, UnreachableError, tail_lines
from fleet.results import FleetResult, HostResult

REDACTED = "********"
COMMAND_HIDDEN = "(command hidden: holds a secret)"

# A line of a multi-line secret (a key file, a credentials file) is redacted on its own
# from this length, counted without its indentation. Shorter lines of such files are their
# structure ("}", "---", blank lines) and would, redacted everywhere, garble unrelated
# output and tell a reader which short strings the secret contains; a credential of three
# characters falls to guessing whatever the output shows. A whole value is redacted at any
# length, as before.
MIN_LINE = 4


def _shell_quoted(text: str) -> str:
    # shlex.quote wraps in '...' and writes each ' as '"'"': the inside of that, which is
    # also what a secret looks like inside a longer quoted word (sh -c 'echo SECRET').
    return text.replace("'", "'\"'\"'")


def _repr_in_single_quotes(text: str) -> str:
    # The inside of a repr() that chose '...': with a trailing " it always does.
    return repr(text + '"')[1:-2]


def _repr_in_double_quotes(text: str) -> str:
    # repr() chooses "..." for a string with ' and no ": a secret without " may sit in one.
    return repr(text + "'")[1:-2] if '"' not in text else text


def _json_ascii(text: str) -> str:
    return json.dumps(text)[1:-1]


def _json_unicode(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _collapsed(text: str) -> str:
    # Messages that abbreviate commands join their words with single spaces.
    return " ".join(text.split())


def _yaml_single_quoted(text: str) -> str:
    # to_yaml's quoted scalars double each '.
    return text.replace("'", "''")


def _json_html_safe(text: str) -> str:
    # Jinja's tojson also escapes <, >, & and ' (as \u003c ...).
    return str(htmlsafe_json_dumps(text))[1:-1]


def _url_encoded(text: str) -> str:
    return urllib.parse.quote(text, safe="/")


def _url_encoded_form(text: str) -> str:
    return urllib.parse.quote_plus(text)


def _html_escaped(text: str) -> str:
    return str(markupsafe.escape(text))


_RENDERERS: tuple[Callable[[str], str], ...] = (
    _shell_quoted,
    _repr_in_single_quotes,
    _repr_in_double_quotes,
    _json_ascii,
    _json_unicode,
    _collapsed,
    _yaml_single_quoted,
    _json_html_safe,
    _url_encoded,
    _url_encoded_form,
    _html_escaped,
)


def _base64_cores(text: str) -> set[str]:
    """What base64 of any text holding ``text`` holds for sure: at each of the three
    alignments, the groups made of ``text``'s bytes alone (b64encode of a longer value)."""
    data = text.encode()
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        first = 4 if offset else 0  # the group that mixes the prefix in
        whole = (offset + len(data)) // 3 * 4  # groups with no byte of what follows
        core = encoded[first:whole]
        if len(core) >= MIN_LINE * 2:
            cores.add(core)
    return cores


# A repr'd shell command line (a timeout message) is two renderings deep; a third covers
# such a message inside a JSON document or a list's repr.
_DEPTH = 3


def renderings(text: str) -> frozenset[str]:
    """Every form ``text`` takes in output, ``text`` itself included.

    Shell-quoted (``shlex.quote``), ``repr`` (alone or in a list, either quote), JSON
    (ASCII or not, or HTML-safe as Jinja's ``tojson``), YAML-quoted, URL-encoded,
    HTML-escaped, whitespace-collapsed, and combinations of up to :data:`_DEPTH` of them;
    base64 at any alignment (:func:`_base64_cores`); then the same for each line of a multi-line ``text`` that has at least
    :data:`MIN_LINE` characters besides indentation.
    """
    bases = {text, text.strip()}
    if "\n" in text or "\r" in text:
        bases.update(line.strip() for line in text.splitlines() if len(line.strip()) >= MIN_LINE)
    forms = {base for base in bases if base}
    for _ in range(_DEPTH):
        forms |= {render(form) for form in forms for render in _RENDERERS}
    forms |= {core for base in bases if base for core in _base64_cores(base)}
    return frozenset(form for form in forms if form)


def _longest_first(texts: Iterable[str]) -> tuple[str, ...]:
    # Longest first, so that no form is left half-replaced by a shorter one inside it.
    return tuple(sorted(set(texts), key=lambda text: (-len(text), text)))


def _replace_all(text: str, forms: Sequence[str], replacement: str) -> str:
    for form in forms:
        if form in text:
            text = text.replace(form, replacement)
    return text


@dataclass(frozen=True)
class Secrets:
    """The marked names and every value they carry (longest first, so none leaks in part)."""

    names: frozenset[str] = frozenset()
    values: tuple[str, ...] = ()
    forms: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        forms = (form for value in self.values for form in renderings(value))
        object.__setattr__(self, "forms", _longest_first(forms))

    @classmethod
    def of(cls, names: Iterable[str], sources: Iterable[Mapping[str, Any]]) -> Secrets:
        """The values of ``names`` wherever they are defined in ``sources``."""
        marked = frozenset(names)
        found: set[str] = set()
        for source in sources:
            for name in marked & source.keys():
                found.update(text for text in _leaves(source[name]) if text)
        return cls(marked, tuple(sorted(found, key=lambda text: (-len(text), text))))

    def __bool__(self) -> bool:
        return bool(self.values)

    def adding(self, derived: Iterable[str]) -> Secrets:
        """These secrets and the values templates ``derived`` from them (redacted alike)."""
        new = set(derived) - set(self.values)
        if not new:
            return self
        values = sorted({*self.values, *new}, key=lambda text: (-len(text), text))
        return Secrets(self.names, tuple(values))

    def found_in(self, value: Any) -> bool:
        """Whether any secret value appears anywhere in ``value`` (strings, nested)."""
        return any(secret in text for text in _leaves(value) for secret in self.values)

    def redact(self, value: Any) -> Any:
        """``value`` with every rendering of every secret replaced by :data:`REDACTED`."""
        if not self.values:
            return value
        if isinstance(value, str):
            return _replace_all(value, self.forms, REDACTED)
        if isinstance(value, Mapping):
            return {key: self.redact(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact(item) for item in value)
        return value

    def result(self, result: FleetResult) -> FleetResult:
        """A fleet result whose every host row is redacted."""
        if not self.values:
            return result
        rows = tuple(self._row(row) for row in result.results)
        return dataclasses.replace(result, results=rows)

    def _row(self, row: HostResult) -> HostResult:
        return dataclasses.replace(
            row,
            reason=self.redact(row.reason),
            fix=self.redact(row.fix),
            details=self.redact(dict(row.details)),
            stdout=self.redact(row.stdout),
            stderr=self.redact(row.stderr),
        )

    def error(self, exc: FleetError) -> FleetError:
        """``exc`` with its message and fix redacted (the same object, for its exit code)."""
        if self.values:
            exc.message = self.redact(exc.message)
            exc.fix = self.redact(exc.fix)
            exc.args = (exc.message,)
        return exc

    # -- tasks whose arguments hold a secret --------------------------------------------
    def hide_commands(self, text: str | None, commands: Iterable[Sequence[str]]) -> str | None:
        """``text`` with each command line of ``commands`` (argv lists) replaced by
        :data:`COMMAND_HIDDEN` in every rendering, then redacted."""
        if text is None:
            return None
        lines = {line for argv in commands for line in (shlex.join(argv), " ".join(argv))}
        forms = _longest_first(form for line in lines if line for form in renderings(line))
        return str(self.redact(_replace_all(text, forms, COMMAND_HIDDEN)))

    def hide_commands_in_row(
        self, row: HostResult, commands: Iterable[Sequence[str]]
    ) -> HostResult:
        """``row`` whose reason and fix name none of ``commands``."""
        listed = [list(argv) for argv in commands]
        return dataclasses.replace(
            row,
            reason=self.hide_commands(row.reason, listed),
            fix=self.hide_commands(row.fix, listed),
        )

    def hide_commands_in_error(
        self, exc: HostError, commands: Iterable[Sequence[str]]
    ) -> HostError:
        """A host error like ``exc`` (unreachable stays unreachable) that names none of
        ``commands``: a failed command says its exit code and output tail only (its message
        abbreviates long command lines, which could cut a secret where no form matches)."""
        listed = [list(argv) for argv in commands]
        if isinstance(exc, CommandError):
            reason = f"command exited {exc.returncode}: {COMMAND_HIDDEN}"
            tail = tail_lines(exc.stderr or exc.stdout)
            if tail:
                reason += "\n" + tail
            reason = str(self.redact(reason))
        else:
            reason = str(self.hide_commands(exc.reason, listed))
        fix = self.hide_commands(exc.fix, listed)
        kind = UnreachableError if isinstance(exc, UnreachableError) else HostError
        return kind(exc.host, reason, fix=fix)


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, bool) or value is None:
        return
    else:
        yield str(value)

"""Templates and conditions: Jinja2 in a sandbox, with the filters and tests Ansible adds.

Every ``{{ }}`` of a playbook and every ``when:`` is Jinja2, evaluated in an
``ImmutableSandboxedEnvironment`` (no attribute of Python's internals, no mutation of the
variables) with an undefined that fails loudly, naming the variable. A string that is
exactly one ``{{ expression }}`` keeps its value's type (``{{ port }}`` is a number), as
Ansible's native rendering does; any other string is rendered to text.

Beside Jinja2's own filters (``default``/``d``, ``lower``, ``upper``, ``replace``, ``join``,
``length``, ``first``, ``last``, ``min``, ``max``, ``string``, ``int``, ``float``, ...):
Ansible's ``bool``, ``regex_replace``, ``regex_search``, ``basename``, ``dirname``,
``to_json``, ``to_yaml``, ``dict2items``, ``split``; tests: ``version``, ``match``,
``search``, ``regex``, and ``changed``, ``failed``, ``succeeded``, ``skipped`` of a
registered result, beside ``defined``/``undefined``. Syntax errors and unknown filters or
tests are found when the playbook is validated (:func:`check`), before any host is touched.
"""

from __future__ import annotations

import functools
import json
import operator
import posixpath
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml
from jinja2 import StrictUndefined, Template, Undefined
from jinja2.exceptions import TemplateError  # SecurityError among them
from jinja2.exceptions import UndefinedError as JinjaUndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from fleet.errors import PlaybookError, UndefinedError

# One {{ }} expression; a string that is exactly one keeps its value's type.
_WHOLE = re.compile(r"\{\{((?:(?!\}\}).)*)\}\}", re.S)
_VERSION_OPERATORS: Mapping[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "=": operator.eq,
    "eq": operator.eq,
    "!=": operator.ne,
    "<>": operator.ne,
    "ne": operator.ne,
    "<": operator.lt,
    "lt": operator.lt,
    "<=": operator.le,
    "le": operator.le,
    ">": operator.gt,
    "gt": operator.gt,
    ">=": operator.ge,
    "ge": operator.ge,
}


def _bool(value: Any) -> bool:
    """Ansible's ``bool``: yes/on/true/1 (any case) are true, everything else false."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("yes", "on", "true", "1", "y", "t")


def _regex_replace(
    value: Any,
    pattern: str,
    replacement: str = "",
    ignorecase: bool = False,
    multiline: bool = False,
) -> str:
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    return re.sub(pattern, replacement, str(value), flags=flags)


def _regex_search(value: Any, pattern: str, *groups: str, ignorecase: bool = False) -> Any:
    found = re.search(pattern, str(value), flags=re.I if ignorecase else 0)
    if found is None:
        return None
    if not groups:
        return found.group(0)
    picked = [
        found.group(int(g[1:]) if g[1:].isdigit() else g[len("\\g<") : -1])
        for g in groups
        if g.startswith("\\")
    ]
    return picked


def _to_yaml(value: Any, **options: Any) -> str:
    return str(yaml.safe_dump(value, allow_unicode=True, default_flow_style=None, **options))


def _version_key(text: Any) -> list[tuple[int, Any]]:
    """A loose version's parts (numbers compare as numbers, words as words)."""
    return [
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.findall(r"\d+|[A-Za-z]+", str(text))
    ]


def _version(value: Any, other: Any, op: str = "eq", strict: bool = False) -> bool:
    """Ansible's ``version`` test: ``x is version('0.2.60', '>=')``."""
    compare = _VERSION_OPERATORS.get(op)
    if compare is None:
        raise PlaybookError(
            f"version test: unknown operator {op!r}",
            fix=f"use one of {', '.join(_VERSION_OPERATORS)}",
        )
    if strict and not re.fullmatch(r"\d+(\.\d+){1,2}", str(value)):
        raise PlaybookError(f"version test: {value!r} is not a strict version (like 1.2.3)")
    return bool(compare(_version_key(value), _version_key(other)))


def _dict2items(value: Any, key_name: str = "key", value_name: str = "value") -> list[Any]:
    """Ansible's ``dict2items``: a mapping as a list of key/value pairs, for ``loop``."""
    if not isinstance(value, Mapping):
        raise PlaybookError(f"dict2items expects a mapping, got {type(value).__name__}")
    return [{key_name: k, value_name: v} for k, v in value.items()]


def _split(value: Any, separator: str | None = None, limit: int = -1) -> list[str]:
    """Ansible's ``split``: Python's ``str.split``."""
    return str(value).split(separator, limit)


def _result_test(key: str, wanted: bool = True) -> Callable[[Any], bool]:
    """Ansible's tests of a registered result: ``out is changed``, ``is failed``..."""

    def test(value: Any) -> bool:
        if not isinstance(value, Mapping):
            raise PlaybookError(
                f"the '{key}' test applies to a registered result, not {type(value).__name__}"
            )
        return bool(value.get(key, False)) is wanted

    return test


def _match(value: Any, pattern: str, ignorecase: bool = False) -> bool:
    return re.match(pattern, str(value), flags=re.I if ignorecase else 0) is not None


def _search(value: Any, pattern: str, ignorecase: bool = False) -> bool:
    return re.search(pattern, str(value), flags=re.I if ignorecase else 0) is not None


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    env.filters.update(
        {
            "bool": _bool,
            "regex_replace": _regex_replace,
            "regex_search": _regex_search,
            "basename": posixpath.basename,
            "dirname": posixpath.dirname,
            "to_json": json.dumps,
            "to_yaml": _to_yaml,
            "dict2items": _dict2items,
            "split": _split,
        }
    )
    env.tests.update(
        {
            "version": _version,
            "version_compare": _version,
            "match": _match,
            "search": _search,
            "regex": _search,
            "changed": _result_test("changed"),
            "failed": _result_test("failed"),
            "succeeded": _result_test("failed", wanted=False),
            "success": _result_test("failed", wanted=False),
            "skipped": _result_test("skipped"),
        }
    )
    return env


_ENV = _environment()


# A playbook's templates are few and evaluated per host (and per loop item): each is
# compiled once. The environment is immutable, so compiled templates are safe to share.
@functools.lru_cache(maxsize=1024)
def _template(text: str) -> Template:
    return _ENV.from_string(text)


@functools.lru_cache(maxsize=1024)
def _expression(text: str) -> Callable[..., Any]:
    return _ENV.compile_expression(text, undefined_to_none=False)


def _failure(exc: Exception) -> PlaybookError:
    """Jinja2's error as fleet's: an undefined variable, or a template that cannot work."""
    if isinstance(exc, JinjaUndefinedError):
        return UndefinedError(str(exc.message or exc))
    if isinstance(exc, PlaybookError):
        return exc
    message = getattr(exc, "message", None) or str(exc)
    return PlaybookError(message)


def check(text: str) -> None:
    """PlaybookError unless ``text`` compiles as a template (syntax, filters, tests)."""
    try:
        _template(text)
    except TemplateError as exc:
        raise _failure(exc) from None


def check_condition(text: str) -> None:
    """PlaybookError unless ``text`` compiles as a ``when`` expression."""
    try:
        _expression(text)
    except TemplateError as exc:
        raise _failure(exc) from None


def expression(text: str, variables: Mapping[str, Any]) -> Any:
    """The value of one expression (a ``when`` or the inside of ``{{ }}``), natively typed."""
    try:
        value = _expression(text)(**variables)
        if isinstance(value, Undefined):
            # An expression that is only an undefined name (or an attribute the sandbox
            # refuses) yields the Undefined itself: using it raises the error with its name.
            str(value)
        return value
    except (TemplateError, TypeError, ValueError) as exc:
        raise _failure(exc) from None


def render(value: Any, variables: Mapping[str, Any]) -> Any:
    """``value`` with every template in its strings rendered (UndefinedError if one names
    an unknown variable); a string that is exactly one ``{{ }}`` keeps the value's type."""
    if isinstance(value, str):
        if "{" not in value:
            return value
        whole = _WHOLE.fullmatch(value)
        if whole:
            return expression(whole.group(1).strip(), variables)
        try:
            return _template(value).render(variables)
        except (TemplateError, TypeError, ValueError) as exc:
            raise _failure(exc) from None
    if isinstance(value, Mapping):
        return {k: render(v, variables) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, variables) for v in value]
    return value

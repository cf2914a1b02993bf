"""Templates and conditions: Jinja2 in a sandbox, with the filters and tests Ansible adds.

Every ``{{ }}`` of a playbook and every ``when:`` is Jinja2, evaluated in an
``ImmutableSandboxedEnvironment`` (no attribute of Python's internals, no mutation of the
variables) with an undefined that fails loudly, naming the variable. A string that is
exactly one ``{{ expression }}`` keeps its value's type (``{{ port }}`` is a number), as
Ansible's native rendering does; any other string is rendered to text.

Beside Jinja2's own filters (``default``/``d``, ``lower``, ``upper``, ``replace``, ``join``,
``length``, ``first``, ``last``, ``min``, ``max``, ``string``, ``int``, ``float``, ...):
Ansible's ``bool``, ``regex_replace``, ``regex_search``, ``basename``, ``dirname``,
``to_json``, ``to_yaml``, ``b64encode``, ``b64decode``, ``dict2items``, ``split``; tests: ``version``, ``match``,
``search``, ``regex``, and ``changed``, ``failed``, ``succeeded``, ``skipped`` of a
registered result, beside ``defined``/``undefined``. Syntax errors and unknown filters or
tests are found when the playbook is validated (:func:`check`), before any host is touched.

A playbook is input, and its templates run on the controller: they are bounded. A range
holds at most :data:`MAX_RANGE` numbers, ``*`` makes at most :data:`MAX_REPEAT` items or
characters, ``**`` no number past :data:`MAX_POWER_BITS` bits, a rendering at most
:data:`MAX_OUTPUT` characters within :data:`MAX_SECONDS`, a regex filter or test answers
within :data:`REGEX_SECONDS` (an engine with a timeout: ``(a+)+$`` backtracks for ever
in Python's own), and memory, overflow and recursion errors (a macro that calls itself)
are a ``PlaybookError`` like any other, never a crash of the controller.

Secrets are tracked through what templates do to them (:class:`Taint`): a filter, a
method call, a slice or a ``%`` format whose input holds a secret makes a value *derived*
from it, which is then redacted like the secret itself; one too short to be told from
other text (``token[:3]``, ``token | first``) is refused.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import functools
import json
import operator
import posixpath
import shlex
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import regex as re
import yaml
from jinja2 import StrictUndefined, Template, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import TemplateError  # SecurityError among them
from jinja2.exceptions import UndefinedError as JinjaUndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from fleet.errors import PlaybookError, UndefinedError

MAX_RANGE = 10_000
MAX_REPEAT = 1 << 20
MAX_POWER_BITS = 4096
MAX_OUTPUT = 8 << 20
MAX_SECONDS = 10.0
REGEX_SECONDS = 1.0
_BOUND_FIX = "playbook templates are for values, not computations: make it smaller"
# A value derived from a secret shorter than this is refused: redacting every occurrence
# of three characters would garble the output and still tell a reader which they are.
MIN_DERIVED = 8

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
    return str(_bounded(re.sub, pattern, replacement, str(value), flags=flags))


def _regex_search(value: Any, pattern: str, *groups: str, ignorecase: bool = False) -> Any:
    found = _bounded(re.search, pattern, str(value), flags=re.I if ignorecase else 0)
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


def _b64encode(value: Any, encoding: str = "utf-8") -> str:
    """Ansible's ``b64encode``: the text's bytes (UTF-8) in base64."""
    return base64.b64encode(str(value).encode(encoding)).decode("ascii")


def _b64decode(value: Any, encoding: str = "utf-8") -> str:
    """Ansible's ``b64decode``: base64 back to text."""
    try:
        return base64.b64decode(str(value), validate=True).decode(encoding)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlaybookError(f"b64decode: not base64 of {encoding} text ({exc})") from None


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
    return _bounded(re.match, pattern, str(value), flags=re.I if ignorecase else 0) is not None


def _search(value: Any, pattern: str, ignorecase: bool = False) -> bool:
    return _bounded(re.search, pattern, str(value), flags=re.I if ignorecase else 0) is not None


def _bounded(function: Callable[..., Any], pattern: str, *args: Any, flags: int = 0) -> Any:
    """A regex function of the ``regex`` engine (Python's syntax) with a time bound."""
    try:
        return function(pattern, *args, flags=flags | re.VERSION0, timeout=REGEX_SECONDS)
    except TimeoutError:
        raise PlaybookError(
            f"the regular expression {pattern[:100]!r} did not finish within "
            f"{REGEX_SECONDS:g}s (catastrophic backtracking?)",
            fix="write it without nested repetition such as (a+)+",
        ) from None
    except re.error as exc:
        raise PlaybookError(f"bad regular expression {pattern[:100]!r}: {exc}") from None


class Taint:
    """The secrets of one run, and the values templates derived from them so far."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.secrets = tuple(s for s in secrets if s)
        self.derived: set[str] = set()

    def known(self) -> tuple[str, ...]:
        return (*self.secrets, *self.derived)

    def follow(self, inputs: Any, output: Any, what: str) -> None:
        """Note what ``output`` carries of a secret in ``inputs`` (an operation's)."""
        known = self.known()
        sources = [text for text in _texts(inputs) if any(k in text for k in known)]
        if not sources:
            return
        passed = set(_texts(inputs))
        for text in _texts(output):
            if any(k in text for k in known) or text in passed:
                continue  # the secret whole (redacted as such), or a value passed through
            if len(text) < MIN_DERIVED:
                raise PlaybookError(
                    f"{what} makes a short piece of text ({len(text)} characters) out of a "
                    "secret: fleet cannot redact a part of a secret reliably",
                    fix="use the secret whole, or derive it outside the playbook and mark "
                    "the result secret too",
                )
            self.derived.add(text)


_TAINT: contextvars.ContextVar[Taint | None] = contextvars.ContextVar("taint", default=None)


@contextlib.contextmanager
def tracking(taint: Taint) -> Iterator[Taint]:
    """Follow secrets through every template rendered in this context."""
    token = _TAINT.set(taint)
    try:
        yield taint
    finally:
        _TAINT.reset(token)


def _texts(value: Any) -> Iterator[str]:
    """The text leaves of a value: strings, and the strings inside containers (not keys)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _texts(item)


def _follow(inputs: Any, output: Any, what: str) -> None:
    taint = _TAINT.get()
    if taint is not None and taint.secrets:
        taint.follow(inputs, output, what)


def _tracked_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps jinja's pass_context/pass_environment marks
    def tracked(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        _follow((args, kwargs), result, f"the filter '{name}'")
        return result

    return tracked


def _quote(value: Any) -> str:
    """Ansible's ``quote``: a word the shell reads as it is."""
    return shlex.quote(str(value))


def _range(*args: Any) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise PlaybookError(
            f"range{args!r} has {len(numbers)} numbers; templates may make {MAX_RANGE}",
            fix=_BOUND_FIX,
        )
    return numbers


class _SliceThroughGetitem(CodeGenerator):
    """Jinja2's code generator, except that a slice (``x[2:]``) goes through
    ``environment.getitem`` like an index does, so the sandbox sees it too."""

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.getitem(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for index, part in enumerate((node.arg.start, node.arg.stop, node.arg.step)):
            if index:
                self.write(", ")
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, bounded, following secrets through calls and slices."""

    code_generator_class = _SliceThroughGetitem

    # Intercepted, they are never folded into constants when a template compiles either.
    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(count, int)
                    and len(sequence) * count > MAX_REPEAT
                ):
                    raise PlaybookError(
                        f"'*' would make {len(sequence) * count} items or characters; "
                        f"templates may make {MAX_REPEAT}",
                        fix=_BOUND_FIX,
                    )
        if (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and right > 0
            and abs(left) > 1
            and abs(left).bit_length() * right > MAX_POWER_BITS
        ):
            raise PlaybookError(
                f"'**' would make a number of over {MAX_POWER_BITS} bits "
                f"({abs(left).bit_length()} bits to the power {right})",
                fix=_BOUND_FIX,
            )
        result = super().call_binop(context, operator, left, right)
        if operator == "%":
            _follow((left, right), result, "a '%' format")
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        result = super().call(__context, __obj, *args, **kwargs)
        bound = getattr(__obj, "__self__", None)
        _follow((bound, args, kwargs), result, f"the call {getattr(__obj, '__name__', '')}()")
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        result = super().getitem(obj, argument)
        if isinstance(obj, str) or (isinstance(argument, slice) and isinstance(obj, list | tuple)):
            _follow(obj, result, "a subscript")
        return result


def _environment(trim_blocks: bool = False) -> ImmutableSandboxedEnvironment:
    env = _Sandbox(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=trim_blocks,
    )
    env.globals["range"] = _range
    env.filters.update(
        {
            "bool": _bool,
            "regex_replace": _regex_replace,
            "regex_search": _regex_search,
            "basename": posixpath.basename,
            "dirname": posixpath.dirname,
            "to_json": json.dumps,
            "to_yaml": _to_yaml,
            "b64encode": _b64encode,
            "b64decode": _b64decode,
            "dict2items": _dict2items,
            "split": _split,
            "quote": _quote,
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
    env.filters = {name: _tracked_filter(name, f) for name, f in env.filters.items()}
    return env


_ENV = _environment()
# Ansible's template module renders files with trim_blocks on (a block tag's newline goes).
_FILES = _environment(trim_blocks=True)


# A playbook's templates are few and evaluated per host (and per loop item): each is
# compiled once. The environment is immutable, so compiled templates are safe to share.
@functools.lru_cache(maxsize=1024)
def _template(text: str) -> Template:
    return _ENV.from_string(text)


@functools.lru_cache(maxsize=1024)
def _expression(text: str) -> Callable[..., Any]:
    return _ENV.compile_expression(text, undefined_to_none=False)


# What a template can exhaust on the controller: caught as the template's error.
_EXHAUSTION = (MemoryError, OverflowError, RecursionError)


def _failure(exc: Exception) -> PlaybookError:
    """Jinja2's error as fleet's: an undefined variable, or a template that cannot work."""
    if isinstance(exc, JinjaUndefinedError):
        return UndefinedError(str(exc.message or exc))
    if isinstance(exc, PlaybookError):
        return exc
    if isinstance(exc, _EXHAUSTION):
        what = {
            MemoryError: "needs more memory than the controller has",
            OverflowError: "makes a number or a range too large",
            RecursionError: "recurses too deep (a macro that calls itself?)",
        }[type(exc)]
        return PlaybookError(
            f"the template {what} ({type(exc).__name__}: {str(exc)[:200]})",
            fix=_BOUND_FIX,
        )
    message = getattr(exc, "message", None) or str(exc)
    return PlaybookError(message)


def check(text: str) -> None:
    """PlaybookError unless ``text`` compiles as a template (syntax, filters, tests)."""
    try:
        _template(text)
    except (TemplateError, *_EXHAUSTION) as exc:
        raise _failure(exc) from None


def check_condition(text: str) -> None:
    """PlaybookError unless ``text`` compiles as a ``when`` expression."""
    try:
        _expression(text)
    except (TemplateError, *_EXHAUSTION) as exc:
        raise _failure(exc) from None


def expression(text: str, variables: Mapping[str, Any]) -> Any:
    """The value of one expression (a ``when`` or the inside of ``{{ }}``), natively typed."""
    try:
        value = _expression(text)(**variables)
        if isinstance(value, Undefined):
            # An expression that is only an undefined name (or an attribute the sandbox
            # refuses) yields the Undefined itself: using it raises the error with its name.
            str(value)
        if isinstance(value, str) and len(value) > MAX_OUTPUT:
            raise _too_long(len(value))
        return value
    except (TemplateError, TypeError, ValueError, *_EXHAUSTION) as exc:
        raise _failure(exc) from None


def render(value: Any, variables: Mapping[str, Any]) -> Any:
    """``value`` with every template in its strings rendered (UndefinedError if one names
    an unknown variable); a string that is exactly one ``{{ }}`` keeps the value's type."""
    if isinstance(value, str):
        if "{" not in value:
            return value
        # One expression keeps its value's type. With a newline after it, Ansible's
        # templating does the same, but gives a text its newline back.
        whole = _WHOLE.fullmatch(value.removesuffix("\n"))
        if whole:
            found = expression(whole.group(1).strip(), variables)
            newline = value.endswith("\n") and isinstance(found, str)
            return found + "\n" if newline else found
        try:
            return _bounded_render(_template(value), variables)
        except (TemplateError, TypeError, ValueError, *_EXHAUSTION) as exc:
            raise _failure(exc) from None
    if isinstance(value, Mapping):
        return {k: render(v, variables) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, variables) for v in value]
    return value


def render_text(text: str, variables: Mapping[str, Any]) -> str:
    """A template file's text rendered as Ansible's template module renders it."""
    try:
        return _bounded_render(_FILES.from_string(text), variables)
    except (TemplateError, TypeError, ValueError, *_EXHAUSTION) as exc:
        raise _failure(exc) from None


def _bounded_render(compiled: Template, variables: Mapping[str, Any]) -> str:
    """The template's text, stopped past :data:`MAX_OUTPUT` characters or :data:`MAX_SECONDS`."""
    deadline = time.monotonic() + MAX_SECONDS
    parts: list[str] = []
    size = 0
    for chunk in compiled.generate(variables):
        size += len(chunk)
        parts.append(chunk)
        if size > MAX_OUTPUT:
            raise _too_long(size)
        if time.monotonic() > deadline:
            raise PlaybookError(
                f"the template was still rendering after {MAX_SECONDS:g}s",
                fix=_BOUND_FIX,
            )
    return "".join(parts)


def _too_long(size: int) -> PlaybookError:
    return PlaybookError(
        f"the template renders more than {MAX_OUTPUT} characters ({size} so far)",
        fix="a task's argument is a value, not a data set: keep it short",
    )

"""What fleet's host programs print, read in one place: size caps, ``@@name`` sections,
the engine's answer, the image store, and :class:`Fact` (a host program plus its
pure parser).

Every gatherer (facts, image state, the framework's state, provisioning facts, GPU checks,
the lock) reads a host's output through these functions, so a hostile or broken host fails
alone, with the same limits and the same evidence, whichever question was asked.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar

from fleet.errors import HostError, HostOutputError

if TYPE_CHECKING:
    from fleet.ssh.base import Transport

# What fleet's own gather scripts print is a few KiB per host (a few hundred KiB for a host
# with hundreds of images): past these limits the output is not parsed at all.
MAX_GATHER = 16 * 1024 * 1024
MAX_GATHER_LINES = 200_000

Store = Literal["classic", "containerd"]
"""Where an engine keeps its images: its own layer store, or containerd's image store."""


def gathered(text: str, what: str) -> str:
    """A gather script's output, checked against :data:`MAX_GATHER` and the line cap."""
    if len(text) > MAX_GATHER:
        raise HostOutputError(
            f"{what}: the host printed {len(text) // 1024} KiB, more than the "
            f"{MAX_GATHER // (1024 * 1024)} MiB fleet reads"
        )
    lines = text.count("\n")
    if lines > MAX_GATHER_LINES:
        raise HostOutputError(
            f"{what}: the host printed {lines} lines, more than the {MAX_GATHER_LINES} fleet reads"
        )
    return text


def json_answer(host: str, what: str, stdout: str, stderr: str = "") -> dict[str, Any]:
    """The JSON object a host program prints as its last line; else the host's error,
    with what it printed instead (its stderr first)."""
    lines = stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        said = (stderr.strip() or stdout.strip())[-400:]
        raise HostError(host, f"{what} did not answer: {said}")
    return answer


def sections(text: str, *, keep_blank: bool = True, strip: bool = False) -> dict[str, list[str]]:
    """Split a host program's output into its ``@@name`` sections (every program's format).

    A marker line may carry a value after a space (``@@engine_rc 0``). ``strip`` trims each
    line; ``keep_blank=False`` drops blank ones.
    """
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@@"):
            name, _, rest = line[2:].partition(" ")
            current = found.setdefault(name, [])
            if rest:
                current.append(rest.strip() if strip else rest)
            continue
        if current is not None and (keep_blank or line.strip()):
            current.append(line.strip() if strip else line)
    return found


def engine_answered(parts: Mapping[str, list[str]]) -> str | None:
    """The engine's version from the ``@@engine``/``@@engine_rc`` sections, or None when
    ``docker version`` failed or printed something that is not a version."""
    lines = parts.get("engine", [])
    if parts.get("engine_rc", ["1"])[:1] != ["0"] or not lines[:1] or not lines[0][:1].isdigit():
        return None
    return lines[0].strip()


def engine_error(parts: Mapping[str, list[str]]) -> str:
    """Why the engine did not answer, from its ``@@engine`` section."""
    return "\n".join(parts.get("engine", [])) or "docker did not answer"


def store_of(driver_status: Any) -> Store:
    """``containerd`` when an engine's ``DriverStatus`` (from ``docker info``) says it keeps
    its images in containerd's store, else ``classic``."""
    for pair in driver_status or ():
        if len(pair) == 2 and pair[0] == "driver-type" and "containerd" in str(pair[1]):
            return "containerd"
    return "classic"


def store_in(lines: Sequence[str]) -> Store | Literal[""]:
    """The image store from the lines a host program printed of ``DriverStatus``; "" when
    the host printed none (an older program, or an engine that did not say)."""
    if not lines:
        return ""
    return "containerd" if any("io.containerd.snapshotter" in line for line in lines) else "classic"


_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")

# What a parser raises when a host's output has another shape than fleet's script prints
# (a list where a mapping was, text where a number was, ...).
_SHAPE_ERRORS = (AttributeError, TypeError, ValueError, KeyError, IndexError, RecursionError)


def parses_host_output(what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Mark a parser of one host's output: any error of shape becomes HostOutputError.

    A hostile or broken host then fails alone with a reason that names ``what`` and the
    evidence, instead of an "internal error" traceback or a crashed view.
    """

    def decorate(parse: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(parse)
        def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return parse(*args, **kwargs)
            except HostOutputError:
                raise
            except _SHAPE_ERRORS as exc:
                raise HostOutputError(
                    f"{what}: the host printed something of another shape than expected "
                    f"({type(exc).__name__}: {clipped(str(exc), 160)})"
                ) from None

        return guarded

    return decorate


def clipped(text: str, limit: int = 80) -> str:
    """``text``, cut at ``limit`` characters with ``...`` when longer."""
    return text if len(text) <= limit else f"{text[:limit]}..."


@dataclass(frozen=True)
class Fact(Generic[_T]):
    """A question to a host: a ``sh`` program, and the pure parser of what it prints.

    The parser sees only text, so it is tested without a host; :meth:`gather` asks one host
    in one round trip and reads the answer under :func:`gathered`'s limits.
    """

    what: str
    program: str
    parse: Callable[[str], _T]
    # The program's $0: what the host's process list shows while it runs.
    name: str = ""

    def argv(self, *args: str) -> list[str]:
        """The command that runs the program with ``args`` as ``$1``..."""
        return ["sh", "-c", self.program, *([self.name, *args] if self.name else args)]

    def gather(self, transport: Transport, *args: str, timeout: float | None = None) -> _T:
        """Ask one host (exit codes are the parser's to read: the program prints them)."""
        ran = transport.run(self.argv(*args), timeout=timeout, check=False)
        return self.parse(gathered(ran.stdout, self.what))

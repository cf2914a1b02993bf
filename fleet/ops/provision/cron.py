"""The aicron script rendered, and fleet's managed block in a crontab found and replaced."""

from __future__ import annotations

import difflib
import re
import shlex
from importlib import resources

from fleet.errors import (
    CronBlockError,
)
from fleet.ops.provision.settings import (
    BEGIN_MARKER,
    COPY_NOTE,
    END_MARKER,
    SCRIPT_NAME,
    ProvisionSettings,
)


def script_template() -> str:
    """The aicron.sh template shipped with fleet."""
    return resources.files("fleet").joinpath("data", SCRIPT_NAME).read_text(encoding="utf-8")


def render_script(settings: ProvisionSettings, template: str | None = None) -> bytes:
    """aicron.sh for these settings: each placeholder replaced by a shell-quoted value."""
    text = script_template() if template is None else template
    values = {
        "SELF": settings.script_path,
        "DATA_ROOT": settings.data_root,
        "WEIGHTS_DIR": settings.weights_dir,
        "WEIGHTS_PORT": str(settings.weights_port),
        "WEIGHTS_BIND": settings.weights_bind,
        "WEIGHTS_USER": settings.weights_user,
        "URL": settings.weights_url,
        "LOG": settings.log_file,
        "PID_FILE": settings.pid_file,
    }
    for name, value in values.items():
        text = text.replace(f"__FLEET_{name}__", shlex.quote(value))
    if "__FLEET_" in text:
        leftover = re.search(r"__FLEET_[A-Z_]*__", text)
        raise ValueError(
            f"aicron.sh template has an unknown placeholder {leftover and leftover[0]}"
        )
    return text.encode()


def render_copy(settings: ProvisionSettings, template: str | None = None) -> bytes:
    """The copy in the data root: the script with :data:`COPY_NOTE` after its first line."""
    script = render_script(settings, template)
    first, newline, rest = script.partition(b"\n")
    return first + newline + COPY_NOTE.encode() + rest


def cron_block(settings: ProvisionSettings) -> bytes:
    """fleet's block in the cron file, markers included, ending with a newline."""
    return (
        f"{BEGIN_MARKER}\n"
        "# Managed by 'fleet provision' (fleet_provision.cron_schedule); edits here are replaced.\n"
        f"{settings.cron_line}\n"
        f"{END_MARKER}\n"
    ).encode()


def numbered_lines(content: bytes) -> list[tuple[int, bytes]]:
    """(offset, line with its newline) of every line, split on ``\\n`` only, as cron does."""
    found: list[tuple[int, bytes]] = []
    offset = 0
    for match in re.finditer(rb"[^\n]*\n|[^\n]+\Z", content):
        found.append((offset, match[0]))
        offset += len(match[0])
    return found


def find_block(content: bytes) -> tuple[int, int] | None:
    """Byte span of fleet's block (BEGIN line start to END line end), None when absent.

    Raises :class:`CronBlockError` when the markers are not exactly one BEGIN followed by
    one END: fleet then refuses to guess which lines are its own.
    """
    begins: list[tuple[int, int]] = []
    ends: list[tuple[int, int]] = []
    for number, (offset, line) in enumerate(numbered_lines(content), start=1):
        text = line.strip()
        if text == BEGIN_MARKER.encode():
            begins.append((number, offset))
        elif text == END_MARKER.encode():
            ends.append((number, offset + len(line)))
    if not begins and not ends:
        return None
    if len(begins) == 1 and len(ends) == 1 and begins[0][0] < ends[0][0]:
        return begins[0][1], ends[0][1]
    where = ", ".join(
        [f"{BEGIN_MARKER!r} at line {n}" for n, _ in begins]
        + [f"{END_MARKER!r} at line {n}" for n, _ in ends]
    )
    raise CronBlockError(f"fleet's markers are not one well-formed block: {where}")


def apply_block(content: bytes, block: bytes) -> bytes:
    """``content`` with fleet's block replaced in place, or appended; every other byte kept.

    A last line without its newline gets one before an appended block (cron ignores an
    unterminated last line anyway).
    """
    span = find_block(content)
    if span is None:
        if content and not content.endswith(b"\n"):
            content += b"\n"
        return content + block
    start, end = span
    return content[:start] + block + content[end:]


def other_aicron_lines(content: bytes, span: tuple[int, int] | None) -> list[int]:
    """Line numbers outside fleet's block that also run aicron.sh (a hand-made entry)."""
    found = []
    for number, (offset, line) in enumerate(numbered_lines(content), start=1):
        inside = span is not None and span[0] <= offset < span[1]
        text = line.strip()
        if not inside and SCRIPT_NAME.encode() in text and not text.startswith(b"#"):
            found.append(number)
    return found


def unified_diff(path: str, before: bytes | None, after: bytes) -> str:
    """A unified diff of a file's content (``/dev/null`` before a new file)."""
    label = path
    old = (before or b"").decode("utf-8", "replace").splitlines(keepends=True)
    new = after.decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(
        old,
        new,
        fromfile=f"{label} (before)" if before is not None else "/dev/null",
        tofile=f"{label} (after)",
    )
    text = ""
    for line in lines:
        text += line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
    return text


def label_diff(text: str, host: str) -> str:
    """A diff's file names prefixed with the host, as ``lab1:/etc/crontab``."""
    lines = []
    for line in text.splitlines(keepends=True):
        named = line.startswith(("--- /", "+++ /")) and not line.startswith("--- /dev/null")
        lines.append(f"{line[:4]}{host}:{line[4:]}" if named else line)
    return "".join(lines)

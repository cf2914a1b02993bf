"""Files and directories that fleet changes on a host as root: never by name below a root.

A container that mounts the data root (every framework container does) is root in that
tree: it can swap any name in it for a symbolic link between the moment fleet looks and
the moment fleet acts, and root would then write, chmod or chown the link's target. So
every write, directory, chmod and chown that fleet makes goes through one host helper
(``fleet/data/remote/safe_path.py``): it opens a *root* as the admin made it (a data root
may be a link to a bigger disk) and walks below it with directory descriptors and
``O_NOFOLLOW``, refusing a link at any component; it creates with ``O_EXCL`` and changes
through open descriptors (``fchown``, ``fchmod``), and renames into place.

The root of a path is the container-writable tree that holds it (the data root and the
host's other allowed roots, ``RunPolicy.paths``), else the path's own directory, which
no container can write (its links are the admin's, followed as before).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from fleet.programs import program

# The helper runs isolated (-I): nothing of the SSH user's environment or current
# directory is imported as root.
SAFE_PATH = ("python3", "-I", "-c", program("safe_path.py"))
# What the helper's exit codes mean (3: refused, with the reason on stderr).
REFUSED = 3
LEAVE = "-"  # an owner or mode that the helper leaves as it is

# The words of a file's settings, one rule each wherever a file is described (provision's
# settings, a playbook's dir/copy/cron): a user or group (useradd's 32 characters, or an id),
# an octal mode, a cron schedule, and a name cron reads in /etc/cron.d (no dots).
ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10}")
MODE = re.compile(r"0?[0-7]{3,4}")
_CRON_FIELD = r"[0-9A-Za-z*/,-]+"
CRON_SCHEDULE = re.compile(
    rf"{_CRON_FIELD}(?:[ \t]+{_CRON_FIELD}){{4}}"
    r"|@(?:reboot|yearly|annually|monthly|weekly|daily|midnight|hourly)"
)
CRON_D_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def root_of(path: str, writable: Iterable[str]) -> str:
    """The root to walk ``path`` from: the writable tree holding it, else its directory."""
    holding = [root for root in writable if path == root or path.startswith(root.rstrip("/") + "/")]
    if holding:
        return max(holding, key=len)
    return path.rpartition("/")[0] or "/"


def write_argv(root: str, path: str, mode: int, expected: str, owner: str = "0:0") -> list[str]:
    """Write stdin to ``path`` atomically with ``mode`` and ``owner`` ("-": the caller's).

    ``expected`` is what the file must still be: ``"absent"``, its sha256, or ``"any"``.
    """
    return [*SAFE_PATH, "write", root, path, f"{mode:04o}", expected, owner]


def dir_argv(
    root: str,
    path: str,
    mode: int | None = None,
    owner: str = LEAVE,
    create: bool = False,
    shape_parents: bool = False,
) -> list[str]:
    """Create (``create``) or fix ``path``: its mode (exact bits, setgid included) and owner;
    ``shape_parents``: the directories created on the way get them too."""
    mode_text = LEAVE if mode is None else f"{mode:04o}"
    made = "2" if create and shape_parents else "1" if create else "0"
    return [*SAFE_PATH, "dir", root, path, mode_text, owner, made]


def fix_argv(root: str, path: str, mode: int, owner: str = LEAVE) -> list[str]:
    """Set regular file ``path``'s mode and owner through the file itself (never a link)."""
    return [*SAFE_PATH, "fix", root, path, f"{mode:04o}", owner]


def stat_argv(root: str, path: str, content: bool = False) -> list[str]:
    """Describe ``path`` (kind, mode, owner; the content of a regular file if asked)."""
    return [*SAFE_PATH, "stat", root, path, "1" if content else "0"]


def touch_argv(root: str, path: str, mode: str = LEAVE, owner: str = LEAVE) -> list[str]:
    """Create ``path`` empty (or update its times), then its mode and owner when given."""
    return [*SAFE_PATH, "touch", root, path, mode, owner]


def remove_argv(root: str, path: str) -> list[str]:
    """Remove ``path``: a file, a link (never its target), or a directory with its tree."""
    return [*SAFE_PATH, "remove", root, path]


def link_argv(root: str, path: str, target: str) -> list[str]:
    """Make ``path`` a symbolic link to ``target`` (replacing a link or file there)."""
    return [*SAFE_PATH, "link", root, path, target]


def tree_argv(
    root: str,
    path: str,
    mode: str = LEAVE,
    user: str = LEAVE,
    group: str = LEAVE,
    check: bool = False,
) -> list[str]:
    """Give everything below directory ``path`` ``mode`` (directories and regular files),
    ``user`` and ``group`` (links too, never their targets); prints ``{"changed": N}``."""
    return [*SAFE_PATH, "tree", root, path, mode, user, group, "1" if check else "0"]


@dataclass(frozen=True)
class PathInfo:
    """What the helper saw at a path, never through a link below its root."""

    kind: str  # "absent", "regular file", "regular empty file", "directory", ...
    mode: str = ""  # octal, without leading zeros ("644", "2775")
    user: str = ""
    group: str = ""
    content: bytes | None = None
    target: str | None = None  # a symbolic link's

    @classmethod
    def parse(cls, stdout: str) -> PathInfo:
        """The helper's one JSON line; ``ValueError`` when it is not one."""
        found = json.loads(stdout)
        if not isinstance(found, dict) or not isinstance(found.get("kind"), str):
            raise ValueError(f"not a description of a path: {stdout[:200]!r}")
        content = found.get("content")
        return cls(
            kind=found["kind"],
            mode=str(found.get("mode", "")),
            user=str(found.get("user", "")),
            group=str(found.get("group", "")),
            content=bytes.fromhex(content) if isinstance(content, str) else None,
            target=found.get("target") if isinstance(found.get("target"), str) else None,
        )


__all__ = [
    "LEAVE",
    "REFUSED",
    "SAFE_PATH",
    "PathInfo",
    "dir_argv",
    "fix_argv",
    "link_argv",
    "remove_argv",
    "root_of",
    "stat_argv",
    "touch_argv",
    "write_argv",
]

"""A directory or a file made as wanted on one host, as root, link-safe: the playbook's
``dir``, ``copy`` and ``cron`` steps are these operations.

Each reads what the path is (from its root, without following a link below it; see
:mod:`fleet.ops.hostfiles`), changes only what differs, and says so: ``ok`` when the host
already had it, ``changed`` (or "would ..." in a dry run) with what changed. A file's
result carries a :class:`FileChange` whose JSON is the result's details (its diff).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from typing import Any

from fleet.errors import HostError, RunSpecError
from fleet.images.runspec import RunPolicy
from fleet.ops import hostfiles
from fleet.results import HostResult, Outcome
from fleet.runner import HostContext

# What a secret file's diff says instead of its lines.
DIFF_HIDDEN = "diff hidden: the task's content holds a secret"


@dataclass(frozen=True)
class FileChange:
    """What :func:`ensure_file` changed of a file: content, mode; its diff when asked."""

    path: str
    changes: tuple[str, ...]
    diff: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"diff": self.diff} if self.diff is not None else {}


def roots(ctx: HostContext) -> tuple[str, ...]:
    """The host's trees that containers can write: walked without following links."""
    try:
        return RunPolicy.for_host(ctx.host.vars).paths
    except RunSpecError as exc:
        raise HostError(ctx.name, exc.message, fix=exc.fix) from None


def helper(ctx: HostContext, argv: list[str], stdin: bytes | None = None) -> str:
    """Run the host's file helper (:mod:`fleet.ops.hostfiles`); its stdout, or a HostError."""
    ran = ctx.transport.run(argv, stdin=stdin, check=False)
    if ran.ok:
        return ran.stdout
    said = ran.stderr.strip().removeprefix("fleet: ") or f"exit {ran.exit_code}"
    if ran.exit_code == 127:
        raise HostError(
            ctx.name,
            f"python3 is not on the host ({said})",
            fix="install python3 on the host: fleet changes files there through it",
        )
    raise HostError(ctx.name, said)


def stat(ctx: HostContext, root: str, path: str, content: bool = False) -> hostfiles.PathInfo:
    """What ``path`` is, seen from ``root`` without following a link below it: in a
    directory that containers write, a name swapped for a symlink shows as the link, and
    no other file's content (root reads /etc/shadow as well as anything) reaches a diff."""
    out = helper(ctx, hostfiles.stat_argv(root, path, content))
    try:
        return hostfiles.PathInfo.parse(out)
    except ValueError as exc:
        raise HostError(ctx.name, f"cannot read what {path} is: {exc}") from None


def ensure_dir(
    ctx: HostContext,
    path: str,
    mode: str,
    *,
    owner: str | None = None,
    group: str | None = None,
    check: bool = False,
) -> HostResult:
    """``path`` a directory with ``mode`` (octal text), and ``owner``/``group`` when given
    (the other one defaults to what it is, the owner's name for a new directory)."""
    root = hostfiles.root_of(path, roots(ctx))
    found = stat(ctx, root, path)
    kind, current, has_owner, has_group = found.kind, found.mode, found.user, found.group
    changes: list[str] = []
    if kind == "absent":
        changes.append("create")
    elif kind != "directory":
        raise HostError(ctx.name, f"{path} exists and is a {kind}, not a directory")
    if kind == "absent" or current != mode:
        changes.append(f"mode {mode}")
    wanted_owner = owner if owner is not None else has_owner or "root"
    wanted_group = group if group is not None else has_group or wanted_owner
    owned = owner is not None or group is not None
    if owned and (kind == "absent" or has_owner != wanted_owner or has_group != wanted_group):
        changes.append(f"owner {wanted_owner}:{wanted_group}")
    if not changes:
        return ctx.result(Outcome.OK, f"{path} as wanted")
    if not check:
        account = f"{wanted_owner}:{wanted_group}" if owned else hostfiles.LEAVE
        helper(ctx, hostfiles.dir_argv(root, path, int(mode, 8), account, create=True))
    verb = "would " if check else ""
    return ctx.result(Outcome.CHANGED, f"{verb}{', '.join(changes)}: {path}")


def ensure_file(
    ctx: HostContext,
    path: str,
    content: bytes,
    mode: str,
    *,
    check: bool = False,
    diff: bool = False,
    secret: bool = False,
) -> HostResult:
    """``content`` at ``path`` with ``mode`` (octal text); a ``secret`` one shows no diff.

    Written only while the file is what was just read: a concurrent edit is kept.
    """
    root = hostfiles.root_of(path, roots(ctx))
    found = stat(ctx, root, path, content=True)
    kind, current_mode, current = found.kind, found.mode, found.content
    if kind not in ("absent", "regular file", "regular empty file"):
        raise HostError(ctx.name, f"{path} exists and is a {kind}, not a file")
    changes = []
    if current != content:
        changes.append("content")
    if kind == "absent" or current_mode != mode:
        changes.append(f"mode {mode}")
    shown: str | None = None
    if diff and current != content:
        shown = DIFF_HIDDEN if secret else _diff(path, current, content)
    if not changes:
        return ctx.result(Outcome.OK, f"{path} as wanted", payload=FileChange(path, (), shown))
    if not check:
        expected = "absent" if current is None else hashlib.sha256(current).hexdigest()
        argv = hostfiles.write_argv(root, path, int(mode, 8), expected, owner=hostfiles.LEAVE)
        helper(ctx, argv, stdin=content)
    verb = "would change" if check else "changed"
    return ctx.result(
        Outcome.CHANGED,
        f"{verb} {' and '.join(changes)} of {path}",
        payload=FileChange(path, tuple(changes), shown),
    )


def _diff(path: str, current: bytes | None, content: bytes) -> str:
    before = (current or b"").decode("utf-8", "replace").splitlines(keepends=True)
    after = content.decode("utf-8", "replace").splitlines(keepends=True)
    return "".join(difflib.unified_diff(before, after, f"{path} (before)", f"{path} (after)"))

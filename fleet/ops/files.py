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
import os
import time
from dataclasses import dataclass
from typing import Any

from fleet.errors import HostError, RunSpecError
from fleet.hostoutput import json_answer
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
    backup_file: str | None = None  # where the old content was kept, when asked

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"diff": self.diff} if self.diff is not None else {}
        return {**shown, "backup_file": self.backup_file} if self.backup_file else shown


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


def _owner_change(
    found: hostfiles.PathInfo, owner: str | None, group: str | None
) -> tuple[str, bool]:
    """The ``user:group`` to give a path (a part not asked is left empty: the helper leaves
    it as it is, or as the creating user made it, as Ansible's modules do), and whether
    that changes it."""
    absent = found.kind == "absent"
    changed = (owner is not None or group is not None) and (
        absent
        or (owner is not None and found.user != owner)
        or (group is not None and found.group != group)
    )
    # An existing path's own parts are kept (a rewrite makes a new file: root's otherwise).
    wanted_owner = owner if owner is not None else "" if absent else found.user
    wanted_group = group if group is not None else "" if absent else found.group
    return f"{wanted_owner}:{wanted_group}", changed


def _attributes(
    found: hostfiles.PathInfo,
    mode: str | None,
    default: str,
    owner: str | None,
    group: str | None,
) -> tuple[str, str, bool, list[str]]:
    """What a path's mode and owner should be (``mode``, else what it has, else
    ``default``), and the changes that takes: the mode, the ``user:group`` and whether
    that one changes, and the changes in words."""
    wanted = mode or found.mode or default
    changes = [f"mode {wanted}"] if found.kind == "absent" or found.mode != wanted else []
    account, owned = _owner_change(found, owner, group)
    if owned:
        changes.append(f"owner {account.strip(':')}")
    return wanted, account, owned, changes


def ensure_dir(
    ctx: HostContext,
    path: str,
    mode: str | None,
    *,
    owner: str | None = None,
    group: str | None = None,
    check: bool = False,
    shape_parents: bool = False,
) -> HostResult:
    """``path`` a directory with ``mode`` (octal text; None: a new one 755, an existing one
    as it is), and ``owner``/``group`` when given (the other one as it is);
    ``shape_parents``: the directories created on the way get them too, as Ansible's
    ``file`` module gives them."""
    root = hostfiles.root_of(path, roots(ctx))
    found = stat(ctx, root, path)
    changes: list[str] = []
    if found.kind == "absent":
        changes.append("create")
    elif found.kind != "directory":
        raise HostError(ctx.name, f"{path} exists and is a {found.kind}, not a directory")
    wanted_mode, account, owned, attributes = _attributes(found, mode, "755", owner, group)
    changes += attributes
    if not changes:
        return ctx.result(Outcome.OK, f"{path} as wanted")
    if not check:
        owner_arg = account if owned else hostfiles.LEAVE
        argv = hostfiles.dir_argv(
            root, path, int(wanted_mode, 8), owner_arg, create=True, shape_parents=shape_parents
        )
        helper(ctx, argv)
    verb = "would " if check else ""
    return ctx.result(Outcome.CHANGED, f"{verb}{', '.join(changes)}: {path}")


def ensure_below(
    ctx: HostContext,
    path: str,
    mode: str | None,
    *,
    owner: str | None = None,
    group: str | None = None,
    check: bool = False,
) -> int:
    """Everything below directory ``path`` given ``mode`` (directories and regular files)
    and ``owner``/``group`` (links too, never their targets), as Ansible's ``file`` with
    ``recurse``; how many entries changed (or would)."""
    root = hostfiles.root_of(path, roots(ctx))
    leave = hostfiles.LEAVE
    argv = hostfiles.tree_argv(
        root, path, mode or leave, owner or leave, group or leave, check=check
    )
    changed = json_answer(ctx.name, "the file helper", helper(ctx, argv)).get("changed")
    if not isinstance(changed, int):
        raise HostError(ctx.name, f"the file helper's answer is not understood: {changed!r}")
    return changed


def ensure_file(
    ctx: HostContext,
    path: str,
    content: bytes,
    mode: str | None,
    *,
    owner: str | None = None,
    group: str | None = None,
    check: bool = False,
    diff: bool = False,
    secret: bool = False,
    backup: bool = False,
) -> HostResult:
    """``content`` at ``path`` with ``mode`` (octal text; None: a new file 644, an existing
    one as it is) and ``owner``/``group`` when given (else as it is); a ``secret`` one shows
    no diff. ``backup``: old content that changes is kept first beside it, as Ansible's
    ``PATH.PID.YYYY-MM-DD@HH:MM:SS~``, with the old file's mode and owner.

    Written only while the file is what was just read: a concurrent edit is kept.
    """
    root = hostfiles.root_of(path, roots(ctx))
    found = stat(ctx, root, path, content=True)
    kind, current = found.kind, found.content
    if kind not in ("absent", "regular file", "regular empty file"):
        raise HostError(ctx.name, f"{path} exists and is a {kind}, not a file")
    changes = []
    if current != content:
        changes.append("content")
    wanted_mode, account, owned, attributes = _attributes(found, mode, "644", owner, group)
    changes += attributes
    shown: str | None = None
    if diff and current != content:
        shown = DIFF_HIDDEN if secret else _diff(path, current, content)
    if not changes:
        return ctx.result(Outcome.OK, f"{path} as wanted", payload=FileChange(path, (), shown))
    kept = None
    if not check:
        if backup and current is not None and current != content:
            kept = _backup_name(path)
            old_owner = f"{found.user}:{found.group}" if found.user else hostfiles.LEAVE
            argv = hostfiles.write_argv(root, kept, int(found.mode, 8), "absent", old_owner)
            helper(ctx, argv, stdin=current)
        expected = "absent" if current is None else hashlib.sha256(current).hexdigest()
        # A rewrite keeps the file's owner unless one was asked for (root writes it).
        keep = account if owned or kind != "absent" else hostfiles.LEAVE
        argv = hostfiles.write_argv(root, path, int(wanted_mode, 8), expected, owner=keep)
        helper(ctx, argv, stdin=content)
    verb = "would change" if check else "changed"
    return ctx.result(
        Outcome.CHANGED,
        f"{verb} {' and '.join(changes)} of {path}",
        payload=FileChange(path, tuple(changes), shown, kept),
    )


def _backup_name(path: str) -> str:
    """Ansible's name for a file's backup: beside it, the controller's pid and the time."""
    return f"{path}.{os.getpid()}.{time.strftime('%Y-%m-%d@%H:%M:%S')}~"


def ensure_state(
    ctx: HostContext,
    path: str,
    state: str,
    *,
    mode: str | None = None,
    owner: str | None = None,
    group: str | None = None,
    target: str | None = None,
    force: bool = False,
    check: bool = False,
) -> HostResult:
    """Ansible's ``file`` states other than directory: ``file`` (it must exist; its mode
    and owner set), ``touch`` (created, or its times updated: always a change, as there),
    ``absent`` (removed with its tree) and ``link`` (a symbolic link to ``target``)."""
    root = hostfiles.root_of(path, roots(ctx))
    found = stat(ctx, root, path)
    verb = "would " if check else ""
    if state == "absent":
        if found.kind == "absent":
            return ctx.result(Outcome.OK, f"{path} is absent")
        if not check:
            helper(ctx, hostfiles.remove_argv(root, path))
        return ctx.result(Outcome.CHANGED, f"{verb}remove {found.kind} {path}")
    if state == "link":
        if found.kind == "symbolic link" and found.target == target:
            return ctx.result(Outcome.OK, f"{path} links to {target}")
        if found.kind not in ("absent", "symbolic link") and not force:
            raise HostError(
                ctx.name,
                f"refusing to convert {path} from {found.kind} to a link",
                fix="remove it first (state: absent), or give force: true",
            )
        # As Ansible's file: a link to nothing is refused unless forced (a relative target
        # is read from the link's directory).
        source = (
            str(target) if str(target).startswith("/") else f"{path.rpartition('/')[0]}/{target}"
        )
        if not force and not ctx.transport.run(["test", "-e", source], check=False).ok:
            raise HostError(
                ctx.name,
                f"src file does not exist, use 'force=yes' if you really want to create the "
                f"link: {source}",
            )
        if found.kind not in ("absent", "symbolic link") and not check:
            helper(ctx, hostfiles.remove_argv(root, path))
        if not check:
            helper(ctx, hostfiles.link_argv(root, path, str(target)))
        return ctx.result(Outcome.CHANGED, f"{verb}link {path} -> {target}")
    if state == "file" and found.kind == "absent":
        raise HostError(
            ctx.name,
            f"file ({path}) is absent, cannot continue",
            fix="use state: touch to create an empty file, or copy to give it content",
        )
    if found.kind not in ("absent", "regular file", "regular empty file"):
        raise HostError(ctx.name, f"{path} exists and is a {found.kind}, not a file")
    wanted_mode, account, owned, changes = _attributes(found, mode, "644", owner, group)
    if state == "file" and not changes:
        return ctx.result(Outcome.OK, f"{path} as wanted")
    if not check:
        owner_arg = account if owned else hostfiles.LEAVE
        if state == "touch":
            helper(ctx, hostfiles.touch_argv(root, path, wanted_mode, owner_arg))
        else:
            helper(ctx, hostfiles.fix_argv(root, path, int(wanted_mode, 8), owner_arg))
    done = "touch" if state == "touch" else ", ".join(changes)
    return ctx.result(Outcome.CHANGED, f"{verb}{done}: {path}")


def _diff(path: str, current: bytes | None, content: bytes) -> str:
    """A file's change as Ansible's ``--diff`` shows it (its headers, a last line without
    a newline marked as diff marks it)."""
    texts = [(current or b"").decode("utf-8", "replace"), content.decode("utf-8", "replace")]
    before, after = (_marked(text.splitlines(keepends=True)) for text in texts)
    return "".join(difflib.unified_diff(before, after, f"before: {path}", f"after: {path}"))


def _marked(lines: list[str]) -> list[str]:
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines

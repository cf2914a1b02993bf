"""Version facts of a framework project, read from git.

``read(project)`` runs ``git`` (argv lists, never a shell) in the project's directory and
returns a frozen ``GitFacts``: the commit, how many commits HEAD reaches (fleet's tags are
``<prefix>.<count>``, so versions sort), the branch or a detached HEAD, whether the work
tree differs from the commit, ``git describe`` and the remote URL with any credentials
removed (it ends up in image labels that every host can read).

A tree is *dirty* when ``git status --porcelain`` lists anything: changed, staged or
untracked (not ignored) files all may reach an image's build context.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from fleet.errors import ProjectError, tail_lines

# Variables that would point git at another repository than the project's.
_REPOSITORY_VARIABLES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)

# ``user@host:path`` (scp-like syntax): no scheme, a colon before the first slash.
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/]+)@)?(?P<host>[^:/]+):(?P<path>.*)$")


@dataclass(frozen=True)
class GitFacts:
    """What git says about a project's work tree at one moment."""

    root: Path
    commit: str
    short_commit: str
    commit_count: int
    branch: str | None
    dirty: bool
    describe: str
    remote_url: str | None
    commit_date: str

    @property
    def detached(self) -> bool:
        """True when HEAD is not on a branch (a checked-out tag or commit)."""
        return self.branch is None

    @property
    def version(self) -> str:
        """``git describe --tags --always``, with ``-dirty`` when the tree is dirty."""
        return f"{self.describe}-dirty" if self.dirty else self.describe


def read(project: Path | str) -> GitFacts:
    """The git facts of the repository holding ``project``.

    Raises ``ProjectError`` when ``project`` is not inside a git work tree, when the
    repository has no commit yet, or when git itself is missing.
    """
    directory = Path(project)
    if not directory.is_dir():
        raise ProjectError(
            f"project directory {directory} does not exist",
            fix="pass the framework repository with --project DIR",
        )
    root_text = _git(directory, "rev-parse", "--show-toplevel", what="find the git work tree")
    root = Path(root_text)
    head = _git_optional(directory, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if head is None:
        raise ProjectError(
            f"the git repository {root} has no commit yet",
            fix="commit the framework first (git add -A && git commit); "
            "image tags count the commits reachable from HEAD",
        )
    short = _git(directory, "rev-parse", "--short", "HEAD", what="abbreviate HEAD")
    count = int(_git(directory, "rev-list", "--count", "HEAD", what="count commits"))
    branch = _git_optional(directory, "symbolic-ref", "--quiet", "--short", "HEAD")
    status = _git(directory, "status", "--porcelain", "--untracked-files=normal", what="status")
    describe = _git(directory, "describe", "--tags", "--always", what="describe HEAD")
    date = _git(directory, "show", "-s", "--format=%cI", "HEAD", what="read the commit date")
    return GitFacts(
        root=root,
        commit=head,
        short_commit=short,
        commit_count=count,
        branch=branch,
        dirty=bool(status.strip()),
        describe=describe,
        remote_url=_remote_url(directory, branch),
        commit_date=date,
    )


def sanitize_url(url: str) -> str:
    """``url`` reduced to scheme, host and path: no user, password, token or query.

    ``https://user:token@host/org/repo.git?x=1`` becomes ``https://host/org/repo.git``;
    ``git@host:org/repo.git`` becomes ``host:org/repo.git``. Local paths stay as they are.
    """
    url = url.strip()
    if "://" in url:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    match = _SCP_LIKE.match(url)
    if match and not url.startswith(("/", ".")):
        return f"{match['host']}:{match['path']}"
    return url


def browse_url(url: str | None) -> str | None:
    """The web page of a (sanitized) remote: ``https://host/path`` without ``.git``.

    None for local paths and ``file://`` remotes, which have no page to link to.
    """
    if not url:
        return None
    clean = sanitize_url(url)
    if "://" in clean:
        parts = urlsplit(clean)
        if parts.scheme not in {"http", "https", "ssh", "git"} or not parts.hostname:
            return None
        host, path = parts.hostname, parts.path
    else:
        match = _SCP_LIKE.match(clean)
        if not match or clean.startswith(("/", ".")):
            return None
        host, path = match["host"], "/" + match["path"].lstrip("/")
    path = path.removesuffix("/").removesuffix(".git")
    return f"https://{host}{path}"


def _remote_url(directory: Path, branch: str | None) -> str | None:
    """The sanitized URL of the branch's upstream remote, else ``origin``, else the first."""
    remotes = _git(directory, "remote", what="list remotes").split()
    if not remotes:
        return None
    chosen = None
    if branch is not None:
        chosen = _git_optional(directory, "config", "--get", f"branch.{branch}.remote")
    if chosen not in remotes:
        chosen = "origin" if "origin" in remotes else remotes[0]
    url = _git_optional(directory, "remote", "get-url", chosen)
    return sanitize_url(url) if url else None


def _environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _REPOSITORY_VARIABLES}
    env["LC_ALL"] = "C"
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_OPTIONAL_LOCKS"] = "0"
    return env


def _run(directory: Path, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    argv = ["git", "-C", str(directory), *args]
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, env=_environment(), check=False, timeout=60
        )
    except FileNotFoundError as exc:
        raise ProjectError(
            "git is not installed", fix="install git (apt-get install -y git)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ProjectError(
            f"git did not answer within 60 s: {' '.join(argv)}",
            fix="check the repository for locks or a slow file system",
        ) from exc


def _git(directory: Path, *args: str, what: str) -> str:
    """Run git; its stdout stripped. A failure becomes a ProjectError with git's stderr."""
    result = _run(directory, args)
    if result.returncode == 0:
        return result.stdout.strip()
    stderr = result.stderr
    if "not a git repository" in stderr:
        raise ProjectError(
            f"{directory} is not inside a git repository",
            fix="run fleet in the framework's git checkout, or pass it with --project DIR",
        )
    if "dubious ownership" in stderr:
        raise ProjectError(
            f"git refuses the repository {directory}: it belongs to another user\n"
            + tail_lines(stderr),
            fix=f"git config --global --add safe.directory {directory}",
        )
    raise ProjectError(
        f"git could not {what} in {directory} (exit {result.returncode}): "
        f"git {' '.join(args)}\n{tail_lines(stderr)}",
        fix="repair the repository so that this git command succeeds",
    )


def _git_optional(directory: Path, *args: str) -> str | None:
    """Run git; its stdout stripped, or None when it exits non-zero (a "no" answer)."""
    result = _run(directory, args)
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None

"""gitinfo on real temporary git repositories (no engine needed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import EXIT_BAD_FILE, ProjectError
from fleet.images import gitinfo


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity and dates, isolated from the user's config."""
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_AUTHOR_DATE": "2026-01-02T03:04:05+00:00",
        "GIT_COMMITTER_NAME": "Test Author",
        "GIT_COMMITTER_EMAIL": "author@example.com",
        "GIT_COMMITTER_DATE": "2026-01-02T03:04:05+00:00",
    }
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return result.stdout.strip()


def make_repo(path: Path, commits: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for number in range(commits):
        (path / "file.txt").write_text(f"version {number}\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"commit {number}")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", 3)


def test_facts_of_a_clean_repository(repo: Path) -> None:
    facts = gitinfo.read(repo)
    assert facts.root == repo.resolve()
    assert facts.commit == git(repo, "rev-parse", "HEAD")
    assert facts.short_commit == git(repo, "rev-parse", "--short", "HEAD")
    assert facts.commit_count == 3
    assert facts.branch == "main"
    assert not facts.detached
    assert not facts.dirty
    assert facts.describe == facts.short_commit  # no tags: --always gives the commit
    assert facts.version == facts.short_commit
    assert facts.remote_url is None
    assert facts.commit_date == "2026-01-02T03:04:05+00:00"


def test_facts_from_a_subdirectory_are_the_repositorys(repo: Path) -> None:
    (repo / "sub").mkdir()
    assert gitinfo.read(repo / "sub").commit_count == 3


def test_describe_uses_tags(repo: Path) -> None:
    git(repo, "tag", "v1.0")
    assert gitinfo.read(repo).version == "v1.0"
    (repo / "file.txt").write_text("next\n")
    git(repo, "commit", "-q", "-am", "next")
    facts = gitinfo.read(repo)
    assert facts.version == f"v1.0-1-g{facts.short_commit}"
    assert facts.commit_count == 4


@pytest.mark.parametrize("change", ["modify", "stage", "untracked"])
def test_dirty_tree(repo: Path, change: str) -> None:
    if change == "untracked":
        (repo / "new.txt").write_text("new\n")
    else:
        (repo / "file.txt").write_text("changed\n")
        if change == "stage":
            git(repo, "add", "file.txt")
    facts = gitinfo.read(repo)
    assert facts.dirty
    assert facts.version == f"{facts.short_commit}-dirty"
    assert facts.commit_count == 3


def test_ignored_files_keep_the_tree_clean(repo: Path) -> None:
    (repo / ".gitignore").write_text("*.pyc\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore")
    (repo / "cache.pyc").write_bytes(b"\0")
    assert not gitinfo.read(repo).dirty


def test_detached_head(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    facts = gitinfo.read(repo)
    assert facts.branch is None
    assert facts.detached
    assert facts.commit_count == 2


def test_remote_credentials_are_stripped(repo: Path) -> None:
    git(repo, "remote", "add", "origin", "https://alice:ghp_s3cr3t@git.example.com/lab/cauchy.git")
    facts = gitinfo.read(repo)
    assert facts.remote_url == "https://git.example.com/lab/cauchy.git"
    assert "s3cr3t" not in repr(facts)
    assert "alice" not in repr(facts)


def test_the_branchs_upstream_remote_wins(repo: Path) -> None:
    git(repo, "remote", "add", "origin", "https://example.com/origin.git")
    git(repo, "remote", "add", "lab", "https://example.com/lab.git")
    git(repo, "config", "branch.main.remote", "lab")
    assert gitinfo.read(repo).remote_url == "https://example.com/lab.git"


def test_git_dir_of_the_environment_is_ignored(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_repo(tmp_path / "other", 1)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert gitinfo.read(repo).commit_count == 3


def test_not_a_git_repository(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="not inside a git repository") as caught:
        gitinfo.read(tmp_path)
    assert caught.value.exit_code == EXIT_BAD_FILE
    assert caught.value.fix


def test_repository_without_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    with pytest.raises(ProjectError, match="no commit yet") as caught:
        gitinfo.read(tmp_path)
    assert caught.value.exit_code == EXIT_BAD_FILE
    assert "git commit" in (caught.value.fix or "")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="does not exist"):
        gitinfo.read(tmp_path / "nope")


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://user:token@github.com/lab/cauchy.git", "https://github.com/lab/cauchy.git"),
        ("https://token@github.com/lab/cauchy.git", "https://github.com/lab/cauchy.git"),
        ("https://u:p@ss@host:8443/x.git?private_token=abc#frag", "https://host:8443/x.git"),
        ("ssh://git@host:2222/lab/cauchy.git", "ssh://host:2222/lab/cauchy.git"),
        ("git@github.com:lab/cauchy.git", "github.com:lab/cauchy.git"),
        ("https://github.com/lab/cauchy.git", "https://github.com/lab/cauchy.git"),
        ("/srv/git/cauchy.git", "/srv/git/cauchy.git"),
        ("file:///srv/git/cauchy.git", "file:///srv/git/cauchy.git"),
        ("../cauchy.git", "../cauchy.git"),
    ],
)
def test_sanitize_url(url: str, clean: str) -> None:
    assert gitinfo.sanitize_url(url) == clean


@pytest.mark.parametrize(
    ("url", "page"),
    [
        ("https://user:token@github.com/lab/cauchy.git", "https://github.com/lab/cauchy"),
        ("git@github.com:lab/cauchy.git", "https://github.com/lab/cauchy"),
        ("ssh://git@host/lab/cauchy", "https://host/lab/cauchy"),
        ("/srv/git/cauchy.git", None),
        ("file:///srv/git/cauchy.git", None),
        (None, None),
    ],
)
def test_browse_url(url: str | None, page: str | None) -> None:
    assert gitinfo.browse_url(url) == page


_SECRET = st.text(alphabet="QXZqxz0123456789_~!$&'()*+,;=", min_size=6, max_size=30)


@given(
    user=_SECRET,
    token=_SECRET,
    scheme=st.sampled_from(["https", "http", "ssh", "git+ssh"]),
    path=st.from_regex(r"/[a-z/]{0,20}(\.git)?", fullmatch=True),
)
def test_sanitized_urls_never_carry_credentials(
    user: str, token: str, scheme: str, path: str
) -> None:
    url = f"{scheme}://{user}:{token}@git.example.com{path}"
    clean = gitinfo.sanitize_url(url)
    assert clean == f"{scheme}://git.example.com{path}"
    assert token not in clean

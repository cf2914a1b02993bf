"""A build's context: exactly the listed files (nothing else of the repository reaches the
engine), their digest, the tar sent, and the labels written into the Dockerfile.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from fleet.errors import ProjectError

BASE_DOCKERFILE = "Dockerfile.base"
FRAMEWORK_DOCKERFILE = "Dockerfile"

# A parser directive that changes the escape character (``# escape=`` before any instruction).
_ESCAPE_DIRECTIVE = re.compile(r"(?:\s*#\s*\w+\s*=.*\n)*\s*#\s*escape\s*=\s*[^\\\s]", re.I)
_SKIPPED_NAMES = frozenset({"__pycache__", ".git", ".mypy_cache", ".pytest_cache"})


def context_files(root: Path, dockerfile: str, paths: Iterable[str]) -> list[tuple[str, Path]]:
    """(name in the context, file) of the Dockerfile and every file under ``paths``, sorted.

    Caches (``__pycache__``, ``*.pyc``) and ``.git`` are left out. A listed path that does
    not exist, or that leads outside the project, raises ``ProjectError``.
    """
    dockerfile_path = root / dockerfile
    if not dockerfile_path.is_file():
        raise ProjectError(
            f"{dockerfile} is missing in {root}",
            fix=f"run fleet build in the framework repository (it holds {BASE_DOCKERFILE} "
            f"and {FRAMEWORK_DOCKERFILE}), or pass it with --project DIR",
        )
    files: dict[str, Path] = {dockerfile: dockerfile_path}
    for name in paths:
        path = root / name
        if not os.path.lexists(path):
            raise ProjectError(
                f"{name} is missing in {root}, but it is listed in the build context",
                fix=f"create {name}, or remove it from fleet_image.context/base_context",
            )
        if not path.resolve().is_relative_to(root):
            raise ProjectError(
                f"{name} leads outside the project ({path.resolve()})",
                fix="keep the build context inside the project",
            )
        for file in _walk(path):
            files[file.relative_to(root).as_posix()] = file
    return sorted(files.items())


def _walk(path: Path) -> Iterator[Path]:
    if path.is_symlink() or not path.is_dir():
        yield path
        return
    yield path
    for child in sorted(path.iterdir()):
        if child.name in _SKIPPED_NAMES or child.suffix == ".pyc":
            continue
        yield from _walk(child)


def context_digest(files: Iterable[tuple[str, Path]], build_args: Mapping[str, str]) -> str:
    """``sha256:...`` of the context's names, kinds, executable bits and contents, and args."""
    digest = hashlib.sha256()
    for name, path in files:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            kind, content = "link", os.readlink(path).encode()
        elif stat.S_ISDIR(info.st_mode):
            kind, content = "dir", b""
        else:
            kind, content = "file", path.read_bytes()
        executable = "x" if info.st_mode & 0o111 else "-"
        digest.update(f"{name}\0{kind}\0{executable}\0{len(content)}\0".encode())
        digest.update(content)
    for key, value in sorted(build_args.items()):
        digest.update(f"arg\0{key}\0{value}\0".encode())
    return "sha256:" + digest.hexdigest()


def context_tar(
    files: Iterable[tuple[str, Path]], *, replace: Mapping[str, bytes] | None = None
) -> io.BytesIO:
    """A gzip'd tar of the context, owned by root; ``replace`` swaps files' contents."""
    replace = replace or {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, path in files:
            info = archive.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if name in replace:
                info.size = len(replace[name])
                archive.addfile(info, io.BytesIO(replace[name]))
            elif info.isreg():
                with path.open("rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)
    buffer.seek(0)
    return buffer


def with_labels(dockerfile: str, labels: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """``dockerfile`` ending in one ``LABEL`` instruction that sets ``labels``.

    The legacy builder turns each ``--label`` option into a step of its own (a container
    each); one instruction is one step. Returns the new text and the labels that a
    Dockerfile cannot express (values with line breaks, or a Dockerfile with another
    escape character), which are left to the builder's ``labels`` option.
    """
    if _ESCAPE_DIRECTIVE.match(dockerfile):
        return dockerfile, dict(labels)
    inline = {k: v for k, v in labels.items() if "\n" not in v and "\r" not in v}
    rest = {k: v for k, v in labels.items() if k not in inline}
    if not inline:
        return dockerfile, rest
    pairs = " \\\n      ".join(f"{_quoted(key)}={_quoted(value)}" for key, value in inline.items())
    text = dockerfile.rstrip("\n") + f"\n\n# Added by fleet build.\nLABEL {pairs}\n"
    return text, rest


def _quoted(text: str) -> str:
    """``text`` as a double-quoted Dockerfile word: no escapes or variables left active."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'

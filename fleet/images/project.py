"""A framework project and its image settings.

Settings are read from ``fleet.yml`` at the project's root when it exists, otherwise from
``inventory/group_vars/all.yml``: the ``fleet_image`` mapping (repository, tag_prefix,
base_repository, base_tag, upstream_image, base_build_args, base_context, context,
description, vendor, url) and the run command (``fleet_run``/``fleet_run_overrides``, see
``fleet.images.runspec``). :func:`framework_labels` turns a project and its git facts into
the framework image's labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleet.errors import ProjectError, RunSpecError, UsageError
from fleet.images import gitinfo
from fleet.images.context import BASE_DOCKERFILE
from fleet.images.gitinfo import GitFacts
from fleet.images.labels import (
    LABEL_COMMIT_COUNT,
    LABEL_DETACHED,
    LABEL_DIRTY,
    LABEL_DOCKER_CMD,
    LABEL_FRAMEWORK,
    LABEL_INPUTS,
    LABEL_TAG,
)
from fleet.images.runspec import HealthCheck, RunSpec

SETTINGS_FILES = ("fleet.yml", "inventory/group_vars/all.yml")
DEFAULT_TAG_PREFIX = "0.1"

_FLEET_IMAGE_KEYS = frozenset(
    {
        "repository",
        "tag_prefix",
        "base_repository",
        "base_tag",
        "upstream_image",
        "base_build_args",
        "base_context",
        "context",
        "description",
        "vendor",
        "url",
    }
)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_BUILD_ARG = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ARG_BASE_IMAGE = re.compile(r"^\s*ARG\s+BASE_IMAGE=(\S+)\s*$", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Project:
    """A framework project: its directory and its image settings."""

    root: Path
    settings_path: Path | None
    repository: str
    tag_prefix: str
    base_repository: str
    base_tag: str
    upstream_image: str | None
    base_build_args: tuple[tuple[str, str], ...]
    base_context: tuple[str, ...]
    context: tuple[str, ...]
    description: str
    vendor: str
    url: str | None
    run_spec: RunSpec
    health: HealthCheck

    @property
    def base_reference(self) -> str:
        return f"{self.base_repository}:{self.base_tag}"

    def tag(self, git: GitFacts) -> str:
        """The framework image's tag for this commit: ``<prefix>.<commit count>``."""
        return f"{self.tag_prefix}.{git.commit_count}"

    def upstream_reference(self) -> str | None:
        """Layer 1: the setting, else the default of ``ARG BASE_IMAGE=`` in Dockerfile.base."""
        if self.upstream_image:
            return self.upstream_image
        try:
            text = (self.root / BASE_DOCKERFILE).read_text(encoding="utf-8")
        except OSError:
            return None
        match = _ARG_BASE_IMAGE.search(text)
        return match[1].strip("\"'") if match else None


def load_project(directory: Path | str, *, tag_prefix: str | None = None) -> Project:
    """The project in ``directory`` with its settings (see the module docstring).

    ``tag_prefix`` overrides the setting (``--tag-prefix``). Raises ``ProjectError`` for
    a missing directory or invalid settings, ``UsageError`` for an invalid override.
    """
    root = Path(directory).resolve()
    if not root.is_dir():
        raise ProjectError(
            f"project directory {root} does not exist",
            fix="pass the framework repository with --project DIR",
        )
    settings_path, variables = _read_settings(root)
    where = str(settings_path) if settings_path else None
    raw = variables.get("fleet_image") or {}
    if not isinstance(raw, Mapping):
        raise ProjectError("fleet_image: expected a mapping", path=where)
    unknown = sorted(set(map(str, raw)) - _FLEET_IMAGE_KEYS)
    if unknown:
        raise ProjectError(
            f"fleet_image.{unknown[0]}: unknown setting",
            path=where,
            fix="use one of: " + ", ".join(sorted(_FLEET_IMAGE_KEYS)),
        )
    repository = _text(raw, "repository", where) or _default_repository(root)
    if not _REPOSITORY.fullmatch(repository):
        raise ProjectError(
            f"fleet_image.repository: {repository!r} is not a valid image repository name",
            path=where,
            fix="use lowercase letters, digits and '.', '_', '-' (e.g. repository: cauchy)",
        )
    prefix = _text(raw, "tag_prefix", where) or DEFAULT_TAG_PREFIX
    if tag_prefix is not None:
        if not _TAG.fullmatch(tag_prefix):
            raise UsageError(
                f"tag prefix {tag_prefix!r} is not valid in an image tag",
                fix="use letters, digits, '.', '_' and '-', e.g. --tag-prefix 0.3",
            )
        prefix = tag_prefix
    elif not _TAG.fullmatch(prefix):
        raise ProjectError(
            f"fleet_image.tag_prefix: {prefix!r} is not valid in an image tag",
            path=where,
            fix='use letters, digits, ".", "_" and "-", quoted: tag_prefix: "0.2"',
        )
    base_repository = _text(raw, "base_repository", where) or f"{repository}_base"
    base_tag = _text(raw, "base_tag", where) or "latest"
    if not _REPOSITORY.fullmatch(base_repository) or not _TAG.fullmatch(base_tag):
        raise ProjectError(
            f"fleet_image: {base_repository}:{base_tag} is not a valid image name",
            path=where,
            fix="fix fleet_image.base_repository / fleet_image.base_tag",
        )
    try:
        run_spec = RunSpec.from_settings(variables)
        health = HealthCheck.from_settings(variables)
    except RunSpecError as exc:
        raise ProjectError(exc.message, path=where, fix=exc.fix) from None
    return Project(
        root=root,
        settings_path=settings_path,
        repository=repository,
        tag_prefix=prefix,
        base_repository=base_repository,
        base_tag=base_tag,
        upstream_image=_text(raw, "upstream_image", where),
        base_build_args=_build_args(raw.get("base_build_args"), where),
        base_context=_paths(raw, "base_context", ("external",), where),
        context=_paths(raw, "context", ("framework",), where),
        description=_text(raw, "description", where) or "",
        vendor=_text(raw, "vendor", where) or "",
        url=_text(raw, "url", where),
        run_spec=run_spec,
        health=health,
    )


def _read_settings(root: Path) -> tuple[Path | None, Mapping[str, Any]]:
    for name in SETTINGS_FILES:
        path = root / name
        if not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            raise ProjectError(
                f"not valid YAML: {exc.problem}",
                path=str(path),
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
                fix="fix the YAML syntax at that place",
            ) from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ProjectError(f"cannot read settings: {exc}", path=str(path)) from None
        if data is None:
            return path, {}
        if not isinstance(data, Mapping):
            raise ProjectError("expected a mapping of variables at the top level", path=str(path))
        return path, data
    return None, {}


def _text(raw: Mapping[str, Any], key: str, where: str | None) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, float) and key == "tag_prefix":
        raise ProjectError(
            f"fleet_image.tag_prefix: {value!r} was read as a number",
            path=where,
            fix=f'quote it, e.g. tag_prefix: "{value}" (0.10 would otherwise become 0.1)',
        )
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ProjectError(f"fleet_image.{key}: expected text, got {value!r}", path=where)
    return str(value)


def _build_args(value: Any, where: str | None) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ProjectError(
            "fleet_image.base_build_args: expected a mapping NAME: VALUE",
            path=where,
            fix='e.g. base_build_args: {PIP_PACKAGES: "scipy==1.13.1"}',
        )
    args = []
    for name, item in value.items():
        if not isinstance(name, str) or not _BUILD_ARG.fullmatch(name):
            raise ProjectError(
                f"fleet_image.base_build_args: {name!r} is not a build argument name",
                path=where,
            )
        if isinstance(item, bool) or not isinstance(item, str | int | float | type(None)):
            raise ProjectError(
                f"fleet_image.base_build_args.{name}: expected text, got {item!r}", path=where
            )
        args.append((name, "" if item is None else str(item)))
    return tuple(args)


def _paths(
    raw: Mapping[str, Any], key: str, default: tuple[str, ...], where: str | None
) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, str) or not isinstance(value, list):
        raise ProjectError(
            f"fleet_image.{key}: expected a list of project paths",
            path=where,
            fix=f"e.g. {key}: [{', '.join(default)}]",
        )
    paths = []
    for index, item in enumerate(value):
        if (
            not isinstance(item, str)
            or not item
            or Path(item).is_absolute()
            or ".." in Path(item).parts
        ):
            raise ProjectError(
                f"fleet_image.{key}[{index}]: {item!r} is not a path inside the project",
                path=where,
            )
        paths.append(item.rstrip("/"))
    return tuple(paths)


def _default_repository(root: Path) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", root.name.lower()).strip("._-")
    return name or "framework"


def framework_labels(
    project: Project,
    git: GitFacts,
    *,
    build_date: str,
    base_reference: str,
    base_id: str,
    inputs: str,
) -> dict[str, str]:
    """Every label of a framework image: label-schema, OCI and fleet's own.

    Unknown facts (no remote, a detached HEAD) are empty strings, so that every framework
    image has the same keys. Nothing secret: the remote URL has its credentials removed.
    """
    tag = project.tag(git)
    reference = f"{project.repository}:{tag}"
    source = gitinfo.sanitize_url(git.remote_url) if git.remote_url else ""
    url = project.url or gitinfo.browse_url(source) or ""
    schema = "org.label-schema."
    oci = "org.opencontainers.image."
    return {
        f"{schema}schema-version": "1.0",
        f"{schema}build-date": build_date,
        f"{schema}name": project.repository,
        f"{schema}description": project.description,
        f"{schema}url": url,
        f"{schema}vcs-url": source,
        f"{schema}vcs-ref": git.short_commit,
        f"{schema}vcs-branch": git.branch or "",
        f"{schema}vendor": project.vendor,
        f"{schema}version": git.version,
        LABEL_DOCKER_CMD: project.run_spec.render(reference),
        f"{oci}created": build_date,
        f"{oci}revision": git.commit,
        f"{oci}source": source,
        f"{oci}version": git.version,
        f"{oci}title": project.repository,
        f"{oci}description": project.description,
        f"{oci}vendor": project.vendor,
        f"{oci}url": url,
        f"{oci}base.name": base_reference,
        f"{oci}base.digest": base_id,
        LABEL_FRAMEWORK: project.repository,
        LABEL_TAG: tag,
        LABEL_DIRTY: _flag(git.dirty),
        LABEL_DETACHED: _flag(git.detached),
        LABEL_COMMIT_COUNT: str(git.commit_count),
        LABEL_INPUTS: inputs,
    }


def framework_build_args(labels: Mapping[str, str]) -> dict[str, str]:
    """The build arguments of ``Dockerfile``, from the labels (they carry the same facts)."""
    schema = "org.label-schema."
    oci = "org.opencontainers.image."
    return {
        "BASE_IMAGE": labels[f"{oci}base.name"],
        "BUILD_DATE": labels[f"{schema}build-date"],
        "NAME": labels[f"{schema}name"],
        "DESCRIPTION": labels[f"{schema}description"],
        "VENDOR": labels[f"{schema}vendor"],
        "URL": labels[f"{schema}url"],
        "VCS_URL": labels[f"{schema}vcs-url"],
        "VCS_REF": labels[f"{schema}vcs-ref"],
        "VCS_REVISION": labels[f"{oci}revision"],
        "VCS_BRANCH": labels[f"{schema}vcs-branch"],
        "VERSION": labels[f"{schema}version"],
        "TAG": labels[LABEL_TAG],
        "DOCKER_CMD": labels[LABEL_DOCKER_CMD],
        "BASE_NAME": labels[f"{oci}base.name"],
        "BASE_DIGEST": labels[f"{oci}base.digest"],
    }


def _flag(value: bool) -> str:
    return "true" if value else "false"

"""The framework's images: settings, labels, builds and the local versions.

A framework ships as three layers:

1. the *upstream* ML image (``fleet_image.upstream_image``), never built here;
2. the *base* image ``<base_repository>:<base_tag>`` (``Dockerfile.base``), the framework's
   third-party software; rebuilt only when missing, when layer 1 changed under it, or when
   its inputs changed: their hash (``Dockerfile.base``, the ``base_context`` files and the
   build arguments) is recorded as the label ``io.fleet.base.inputs`` and compared;
3. the *framework* image ``<repository>:<tag_prefix>.<commit count>`` (``Dockerfile``),
   built on every commit, labelled with label-schema, OCI and fleet labels (see
   ``framework_labels``). Building a commit that is already built from a clean tree, with
   the same base and settings, reuses that image: a tag names one image everywhere.

Settings are read from ``fleet.yml`` at the project's root when it exists, otherwise from
``inventory/group_vars/all.yml``: the ``fleet_image`` mapping (repository, tag_prefix,
base_repository, base_tag, upstream_image, base_build_args, base_context, context,
description, vendor, url) and the run command (``fleet_run``/``fleet_run_overrides``, see
``fleet.ops.runspec``). Each build sends a context of exactly the listed paths, so nothing
else of the repository (``.git``, caches, lab files) reaches the engine.

Only this module talks to docker-py. ``build`` and ``list_versions`` take a
``docker.DockerClient``, so that they work against any engine, local or remote.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import re
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import yaml

from fleet.errors import (
    BuildError,
    EngineError,
    ProjectError,
    RunSpecError,
    TagCollisionError,
    UsageError,
)
from fleet.hostoutput import store_of
from fleet.images import gitinfo
from fleet.images.gitinfo import GitFacts
from fleet.images.labels import (
    LABEL_BASE,
    LABEL_BASE_INPUTS,
    LABEL_BRANCH,
    LABEL_BUILD_DATE,
    LABEL_COMMIT_COUNT,
    LABEL_DETACHED,
    LABEL_DIRTY,
    LABEL_DOCKER_CMD,
    LABEL_FRAMEWORK,
    LABEL_INPUTS,
    LABEL_MOVED_FROM,
    LABEL_REVISION,
    LABEL_TAG,
    LABEL_UPSTREAM,
    ImageVersion,
    framework_filter,
    image_version,
    newest_first,
    required_cuda,
)
from fleet.images.store import ContentStore, Descriptor, LocalLayers
from fleet.ops.runspec import HealthCheck, RunSpec
from fleet.units import utc_now

SETTINGS_FILES = ("fleet.yml", "inventory/group_vars/all.yml")
BASE_DOCKERFILE = "Dockerfile.base"
FRAMEWORK_DOCKERFILE = "Dockerfile"
DEFAULT_TAG_PREFIX = "0.1"

# Labels that differ between two builds of the same inputs.
_VOLATILE_LABELS = frozenset({"org.label-schema.build-date", "org.opencontainers.image.created"})

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
# A parser directive that changes the escape character (``# escape=`` before any instruction).
_ESCAPE_DIRECTIVE = re.compile(r"(?:\s*#\s*\w+\s*=.*\n)*\s*#\s*escape\s*=\s*[^\\\s]", re.I)
_SKIPPED_NAMES = frozenset({"__pycache__", ".git", ".mypy_cache", ".pytest_cache"})

StepCallback = Callable[[str, str], None]
OutputCallback = Callable[[str], None]


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


@dataclass(frozen=True)
class LayerInfo:
    """One of the three layers after a build: what it is and what the build did to it."""

    role: str  # "upstream", "base" or "framework"
    reference: str | None
    image_id: str | None
    size: int | None  # the whole image, in bytes
    increment: int | None  # bytes added over the layer below
    action: str  # "built", "reused", "present" or "missing"
    reason: str


@dataclass(frozen=True)
class BuildResult:
    """What ``build`` made: the three layers, the git facts and the framework's labels."""

    project: Project
    git: GitFacts
    tag: str
    reference: str
    upstream: LayerInfo
    base: LayerInfo
    framework: LayerInfo
    labels: Mapping[str, str] = field(default_factory=dict)
    log: tuple[str, ...] = ()

    @property
    def layers(self) -> tuple[LayerInfo, LayerInfo, LayerInfo]:
        return (self.upstream, self.base, self.framework)

    @property
    def image_id(self) -> str:
        return self.framework.image_id or ""

    def to_json(self) -> dict[str, Any]:
        """The ``fleet build --json`` document."""
        git = self.git
        return {
            "reference": self.reference,
            "repository": self.project.repository,
            "tag": self.tag,
            "image_id": self.image_id,
            "project": str(self.project.root),
            "settings": str(self.project.settings_path) if self.project.settings_path else None,
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "git": {
                "commit": git.commit,
                "short_commit": git.short_commit,
                "commit_count": git.commit_count,
                "branch": git.branch,
                "detached": git.detached,
                "dirty": git.dirty,
                "version": git.version,
                "remote_url": git.remote_url,
                "commit_date": git.commit_date,
            },
            "run_command": self.labels.get(LABEL_DOCKER_CMD, ""),
            "labels": dict(self.labels),
        }


# --- settings -----------------------------------------------------------------------------


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


# --- labels -------------------------------------------------------------------------------


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


# --- build contexts -----------------------------------------------------------------------


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


# --- engine -------------------------------------------------------------------------------


def connect() -> Any:
    """A ``docker.DockerClient`` for the engine of the environment (DOCKER_HOST or local)."""
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(
            f"cannot reach the Docker engine: {exc}",
            fix="start it (scripts/start-engine.sh), or point DOCKER_HOST at a running engine",
        ) from exc
    return client


def connect_url(base_url: str, *, where: str, fix: str) -> Any:
    """A ``docker.DockerClient`` for the engine at ``base_url`` (e.g. a relayed socket).

    ``where`` names the engine in errors (a build host), ``fix`` says what to do when it
    does not answer.
    """
    try:
        client = docker.DockerClient(base_url=base_url)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"cannot reach the Docker engine of {where}: {exc}", fix=fix) from exc
    return client


def image_store(client: Any) -> str:
    """``containerd`` when the engine keeps images in containerd's store, else ``classic``."""
    try:
        info = client.info()
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"cannot read the engine's info: {exc}") from exc
    return store_of(info.get("DriverStatus"))


def layer_chains(client: Any) -> frozenset[str]:
    """The chain IDs of every image's layers: what a classic store's ``docker load`` skips.

    Intermediate images count (their layers are in the store too); an image removed
    between the listing and its inspection (another user's prune) is skipped.
    """
    try:
        ids = client.api.images(all=True, quiet=True)
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"cannot list the engine's images: {exc}") from exc
    chains: set[str] = set()
    for image_id in ids:
        try:
            attrs = client.api.inspect_image(image_id)
        except docker.errors.NotFound:
            continue
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineError(f"cannot inspect the image {image_id}: {exc}") from exc
        chains.update(chain_ids((attrs.get("RootFS") or {}).get("Layers") or []))
    return frozenset(chains)


def find_image(client: Any, reference: str) -> ImageSpec | None:
    """The image named ``reference`` (a name or an ID) as a spec, or None when it is absent."""
    image = _image(client, reference)
    if image is None:
        return None
    config = image.attrs.get("Config") or {}
    cuda = required_cuda(config.get("Env") or [], config.get("Labels") or {})
    return ImageSpec(reference, str(image.id), tuple(_layers(image)), cuda)


def image_parent(client: Any, reference: str) -> str:
    """The image's parent in this engine: set by a local build, empty after a load."""
    image = _image(client, reference)
    return str(image.attrs.get("Parent") or "") if image is not None else ""


def tag_image(client: Any, image_id: str, reference: str) -> None:
    """Name ``image_id`` ``reference`` (``docker tag``)."""
    repository, _, tag = reference.rpartition(":")
    try:
        client.api.tag(image_id, repository, tag, force=True)
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"docker tag {image_id[:19]} {reference} failed: {exc}") from exc


def load_stream(client: Any, chunks: Iterable[bytes]) -> list[str]:
    """``docker load`` of a tarball given as a stream; the engine's messages.

    The engine may answer 200 and report the failure inside the stream, or not at all
    (seen on the lab's Docker 20.10 engines): callers verify the image afterwards.
    """
    messages: list[str] = []
    try:
        for item in client.api.load_image(chunks):
            if not isinstance(item, dict):
                continue
            if "error" in item:
                detail = item.get("errorDetail") or {}
                raise EngineError(
                    f"docker load failed: {detail.get('message') or item['error']}",
                    fix="check the engine's free disk (docker system df) and rerun",
                )
            if item.get("stream"):
                messages.append(str(item["stream"]).strip())
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"docker load failed: {exc}") from exc
    return messages


def _image(client: Any, reference: str) -> Any | None:
    """The image named ``reference``, or None when the engine has none."""
    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(
            f"cannot inspect the image {reference}: {exc}",
            fix="check that the Docker engine is running and answers (docker info)",
        ) from exc


def _labels(image: Any) -> dict[str, str]:
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return {str(key): str(value) for key, value in labels.items()}


def _layers(image: Any) -> list[str]:
    return list((image.attrs.get("RootFS") or {}).get("Layers") or [])


def _size(image: Any | None) -> int | None:
    if image is None:
        return None
    size = image.attrs.get("Size")
    return int(size) if isinstance(size, int) else None


def _increment(upper: int | None, lower: int | None) -> int | None:
    return upper - lower if upper is not None and lower is not None else None


# --- build --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LayerBuild:
    """One layer's ``docker build``: what :func:`_run_build` needs, and why it would run."""

    layer: str
    reference: str
    files: list[tuple[str, Path]]
    dockerfile: str
    build_args: Mapping[str, str]
    labels: Mapping[str, str]
    nocache: bool = False
    upstream_reference: str | None = None


def _layer(
    client: Any,
    spec: _LayerBuild,
    *,
    existing: Any,
    reason: str | None,
    reused: tuple[str, str],
    step: StepCallback,
    output: OutputCallback,
) -> tuple[Any, str, str]:
    """Reuse ``existing`` (``reason`` None) or build the layer: (image, action, reason).

    ``reused`` is (why it is reused, what the step says after "is up to date").
    """
    if reason is None and existing is not None:
        step(spec.layer, f"{spec.reference} is up to date{reused[1]}")
        return existing, "reused", reused[0]
    reason = reason or "its image is missing"
    step(spec.layer, f"building {spec.reference}: {reason}")
    _run_build(
        client,
        layer=spec.layer,
        reference=spec.reference,
        files=spec.files,
        dockerfile=spec.dockerfile,
        build_args=spec.build_args,
        labels=spec.labels,
        nocache=spec.nocache,
        output=output,
        upstream_reference=spec.upstream_reference,
    )
    image = _image(client, spec.reference)
    if image is None:
        raise EngineError(
            f"the image {spec.reference} vanished right after its build",
            fix="run fleet build again; do not remove images while it runs",
        )
    return image, "built", reason


def build(
    client: Any,
    project: Project,
    *,
    git: GitFacts | None = None,
    rebuild_base: bool = False,
    rebuild: bool = False,
    on_step: StepCallback | None = None,
    on_output: OutputCallback | None = None,
    build_date: str | None = None,
    retag: bool = False,
) -> BuildResult:
    """Build layer 2 if needed, then layer 3, on the engine of ``client``.

    ``rebuild_base`` rebuilds layer 2 without the build cache; ``rebuild`` builds layer 3
    even when an identical build of this commit exists. ``on_step(layer, message)`` hears
    what is being done, ``on_output(line)`` every line of build output. A tag that names
    another commit's image raises TagCollisionError before anything is built, unless
    ``retag`` moves it on purpose (recorded in the image's ``io.fleet.moved-from`` label).
    """
    git = git if git is not None else gitinfo.read(project.root)
    moved_from = check_tag(client, project, git, retag=retag)
    step = on_step or (lambda layer, message: None)
    log: list[str] = []

    def collect(line: str) -> None:
        log.append(line)
        (on_output or (lambda line: None))(line)

    upstream_reference = project.upstream_reference()
    upstream = _image(client, upstream_reference) if upstream_reference else None
    base_spec = _base_spec(project, rebuild_base)
    existing_base = _image(client, project.base_reference)
    base_reason = _base_rebuild_reason(
        existing_base, upstream, base_spec.labels[LABEL_BASE_INPUTS], rebuild_base
    )
    base, base_action, base_why = _layer(
        client,
        base_spec,
        existing=existing_base,
        reason=base_reason,
        reused=("inputs unchanged", ""),
        step=step,
        output=collect,
    )
    if upstream is None and upstream_reference:
        upstream = _image(client, upstream_reference)  # pulled by the build
    framework_spec = _framework_spec(project, git, str(base.id), build_date, moved_from)
    existing = _image(client, framework_spec.reference)
    same = not git.dirty and existing is not None and _same_build(existing, framework_spec.labels)
    framework, framework_action, framework_why = _layer(
        client,
        framework_spec,
        existing=existing,
        reason=None if same and not rebuild else _framework_reason(git, existing, rebuild),
        reused=(f"commit {git.short_commit} already built", f" (commit {git.short_commit})"),
        step=step,
        output=collect,
    )
    labels = {k: v for k, v in _labels(framework).items() if k in framework_spec.labels}
    return _build_result(
        project,
        git,
        (upstream_reference, upstream),
        (base, base_action, base_why),
        (framework, framework_action, framework_why),
        labels=labels,
        log=tuple(log),
    )


def _base_spec(project: Project, rebuild_base: bool) -> _LayerBuild:
    """Layer 2's build: Dockerfile.base on the upstream image, its inputs in its labels."""
    files = context_files(project.root, BASE_DOCKERFILE, project.base_context)
    upstream_reference = project.upstream_reference()
    args = dict(project.base_build_args)
    if project.upstream_image:
        args["BASE_IMAGE"] = project.upstream_image
    return _LayerBuild(
        layer="base",
        reference=project.base_reference,
        files=files,
        dockerfile=BASE_DOCKERFILE,
        build_args=args,
        labels={
            LABEL_BASE: project.repository,
            LABEL_BASE_INPUTS: context_digest(files, args),
            LABEL_UPSTREAM: upstream_reference or "",
        },
        nocache=rebuild_base,
        upstream_reference=upstream_reference,
    )


def _framework_spec(
    project: Project, git: GitFacts, base_id: str, build_date: str | None, moved_from: str
) -> _LayerBuild:
    """Layer 3's build: the Dockerfile on the base, the git identity in its labels."""
    files = context_files(project.root, FRAMEWORK_DOCKERFILE, project.context)
    labels = framework_labels(
        project,
        git,
        build_date=build_date or utc_now(),
        base_reference=project.base_reference,
        base_id=base_id,
        inputs=context_digest(files, {}),
    )
    if moved_from:
        labels[LABEL_MOVED_FROM] = moved_from
    return _LayerBuild(
        layer="framework",
        reference=f"{project.repository}:{project.tag(git)}",
        files=files,
        dockerfile=FRAMEWORK_DOCKERFILE,
        build_args=framework_build_args(labels),
        labels=labels,
    )


def _build_result(
    project: Project,
    git: GitFacts,
    upstream: tuple[str | None, Any],
    base: tuple[Any, str, str],
    framework: tuple[Any, str, str],
    *,
    labels: dict[str, str],
    log: tuple[str, ...],
) -> BuildResult:
    """The three layers as a BuildResult: sizes, and what each adds over the one below."""
    upstream_reference, upstream_image = upstream
    upstream_size, base_size = _size(upstream_image), _size(base[0])
    framework_size = _size(framework[0])
    tag = project.tag(git)
    return BuildResult(
        project=project,
        git=git,
        tag=tag,
        reference=f"{project.repository}:{tag}",
        upstream=LayerInfo(
            role="upstream",
            reference=upstream_reference,
            image_id=str(upstream_image.id) if upstream_image is not None else None,
            size=upstream_size,
            increment=upstream_size,
            action="present" if upstream_image is not None else "missing",
            reason="layer 1, never built here",
        ),
        base=LayerInfo(
            role="base",
            reference=project.base_reference,
            image_id=str(base[0].id),
            size=base_size,
            increment=_increment(base_size, upstream_size),
            action=base[1],
            reason=base[2],
        ),
        framework=LayerInfo(
            role="framework",
            reference=f"{project.repository}:{tag}",
            image_id=str(framework[0].id),
            size=framework_size,
            increment=_increment(framework_size, base_size),
            action=framework[1],
            reason=framework[2],
        ),
        labels=labels,
        log=log,
    )


def check_tag(client: Any, project: Project, git: GitFacts, *, retag: bool = False) -> str:
    """The commit a build of ``git`` would take the version tag from; "" when it is free.

    The tag counts commits (``<prefix>.<commit count>``), which is unique along one line of
    history only: a branch, or main after a rebase, can reach the same count with another
    commit. Moving the tag silently would make every host that runs that version run
    "another build of it", so it is refused unless ``retag`` asks for it.
    """
    reference = f"{project.repository}:{project.tag(git)}"
    existing = _image(client, reference)
    if existing is None:
        return ""
    labels = _labels(existing)
    theirs = labels.get(LABEL_REVISION, "")
    if not theirs or theirs == git.commit:
        return ""
    if retag:
        return theirs
    their_branch = labels.get(LABEL_BRANCH) or "no branch"
    our_branch = git.branch or "a detached HEAD"
    raise TagCollisionError(
        f"{reference} already names the image of commit {theirs[:12]} (branch {their_branch}, "
        f"built {labels.get(LABEL_BUILD_DATE) or 'at an unknown date'}); this build is commit "
        f"{git.short_commit} (branch {our_branch}, committed {git.commit_date}), which has "
        f"the same commit count {git.commit_count}. Nothing was built",
        reference=reference,
        theirs=theirs,
        ours=git.commit,
        fix=f"build from the branch that owns the numbering ({their_branch}); or give this "
        "branch its own numbering (fleet_image.tag_prefix, or --tag-prefix, e.g. "
        f"--tag-prefix {project.tag_prefix}-{_tag_word(git.branch)}); or move the tag on "
        "purpose with --retag (recorded in the new image's io.fleet.moved-from label)",
    )


def _tag_word(branch: str | None) -> str:
    """A branch name as it may appear in an image tag."""
    word = re.sub(r"[^A-Za-z0-9_.-]+", "-", branch or "detached").strip(".-")
    return word[:40] or "branch"


def _base_rebuild_reason(
    existing: Any | None, upstream: Any | None, inputs: str, forced: bool
) -> str | None:
    """Why layer 2 must be built, or None when the existing one still fits."""
    if forced:
        return "--rebuild-base asked for it"
    if existing is None:
        return "it does not exist yet"
    recorded = _labels(existing).get(LABEL_BASE_INPUTS)
    if recorded is None:
        return f"it has no {LABEL_BASE_INPUTS} label (not built by fleet)"
    if recorded != inputs:
        return f"{BASE_DOCKERFILE}, its context or its build arguments changed"
    if upstream is not None:
        below, above = _layers(upstream), _layers(existing)
        if above[: len(below)] != below:
            return "layer 1 changed under it"
    return None


def _same_build(existing: Any, labels: Mapping[str, str]) -> bool:
    """True when ``existing`` is a clean build of the same inputs (dates aside)."""
    present = _labels(existing)
    return all(
        present.get(key) == value for key, value in labels.items() if key not in _VOLATILE_LABELS
    )


def _framework_reason(git: GitFacts, existing: Any | None, forced: bool) -> str:
    if forced:
        return "--rebuild asked for it"
    if git.dirty:
        return "the work tree has uncommitted changes"
    if existing is None:
        return f"commit {git.short_commit} is not built yet"
    return "the commit, its base image or its settings changed"


def _run_build(
    client: Any,
    *,
    layer: str,
    reference: str,
    files: list[tuple[str, Path]],
    dockerfile: str,
    build_args: Mapping[str, str],
    labels: Mapping[str, str],
    nocache: bool,
    output: OutputCallback,
    upstream_reference: str | None,
) -> None:
    """Run one ``docker build``, streaming its output; a failure raises ``BuildError``."""
    log: list[str] = []

    def emit(text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                log.append(line)
                output(line)

    original = (dict(files)[dockerfile]).read_text(encoding="utf-8")
    text, option_labels = with_labels(original, labels)
    try:
        stream = client.api.build(
            fileobj=context_tar(files, replace={dockerfile: text.encode("utf-8")}),
            custom_context=True,
            encoding="gzip",
            dockerfile=dockerfile,
            tag=reference,
            buildargs=dict(build_args),
            labels=option_labels or None,
            nocache=nocache,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        error = None
        # Read to the end even after an error: an abandoned stream leaks its connection.
        for chunk in stream:
            if "stream" in chunk:
                emit(str(chunk["stream"]))
            elif "status" in chunk:
                emit(" ".join(str(chunk[key]) for key in ("id", "status") if chunk.get(key)))
            if "error" in chunk and error is None:
                detail = chunk.get("errorDetail") or {}
                error = str(detail.get("message") or chunk["error"]).strip()
                emit(error)
        if error is not None:
            raise BuildError(
                layer, reference, error, log, fix=_build_fix(layer, log, upstream_reference)
            )
    except docker.errors.APIError as exc:
        explanation = str(exc.explanation or exc)
        emit(explanation)
        raise BuildError(
            layer, reference, explanation, log, fix=_build_fix(layer, log, upstream_reference)
        ) from exc
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(
            f"the Docker engine failed while building {reference}: {exc}",
            fix="check that the engine is running and has disk space (docker info)",
        ) from exc


def _build_fix(layer: str, log: list[str], upstream_reference: str | None) -> str:
    text = "\n".join(log).lower()
    cannot_pull = any(
        sign in text
        for sign in ("pull access denied", "manifest unknown", "no such host", "dial tcp")
    )
    if layer == "base" and cannot_pull:
        return (
            f"layer 1 ({upstream_reference or 'ARG BASE_IMAGE of ' + BASE_DOCKERFILE}) is not "
            "in this engine and cannot be pulled: load it (docker load) or set "
            "fleet_image.upstream_image to an image the engine has"
        )
    if layer == "framework" and cannot_pull:
        return "the base image is missing: rerun with --rebuild-base"
    dockerfile = BASE_DOCKERFILE if layer == "base" else FRAMEWORK_DOCKERFILE
    return f"fix the failing step of {dockerfile} shown above (-v shows the whole build log)"


# --- local versions -----------------------------------------------------------------------


def list_versions(client: Any, repository: str) -> list[ImageVersion]:
    """The framework images of ``repository`` in the engine, newest first.

    Newest means the highest commit count, then the latest build date. Images whose tag
    moved on to a newer build (``tagged`` False) are listed too, like ``docker images``
    lists dangling images. One API call: the image summaries carry the labels.
    """
    try:
        found = client.api.images(filters=framework_filter(repository))
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(
            f"cannot list the images of {repository}: {exc}",
            fix="check that the Docker engine is running and answers (docker info)",
        ) from exc
    return newest_first([image_version(repository, summary) for summary in found])


# --- shipping -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSpec:
    """What is shipped: a name, its config digest (the image ID) and its layers."""

    ref: str
    config_digest: str
    diff_ids: tuple[str, ...]
    # The CUDA version it needs of a host's driver ("" when it states none).
    cuda: str = ""

    @property
    def chain_ids(self) -> tuple[str, ...]:
        return chain_ids(self.diff_ids)


def chain_ids(diff_ids: Sequence[str]) -> tuple[str, ...]:
    """The chain ID of each layer prefix, as the classic store names its layers."""
    chains: list[str] = []
    for diff in diff_ids:
        if not chains:
            chains.append(diff)
        else:
            digest = hashlib.sha256(f"{chains[-1]} {diff}".encode()).hexdigest()
            chains.append(f"sha256:{digest}")
    return tuple(chains)


def has_image(client: Any, reference: str) -> bool:
    """Whether the engine has an image of that name."""
    return _image(client, reference) is not None


def image_spec(client: Any, reference: str, store: ContentStore | None = None) -> ImageSpec:
    """What ``fleet push`` ships: the image's name, config digest and layers.

    On the classic store the image's ID is its config digest; on the containerd store it is
    its manifest's, and ``store`` (the engine's content store) tells the config's.
    """
    image = _image(client, reference)
    if image is None:
        raise _no_image(reference)
    config = image.attrs.get("Config") or {}
    cuda = required_cuda(config.get("Env") or [], config.get("Labels") or {})
    layers = tuple(_layers(image))
    config_digest = str(image.id)
    if store is not None:
        try:
            config_digest = store.resolve(config_digest, chain_ids(layers))
        except (OSError, ValueError) as exc:
            raise EngineError(
                f"cannot read {reference} in the engine's content store: {exc}"
            ) from exc
    return ImageSpec(reference, config_digest, layers, cuda)


def layer_sizes(client: Any, reference: str, count: int) -> list[int]:
    """Estimated unpacked size of each of the image's ``count`` layers, bottom first.

    From the image's history, which lists empty steps (ENV, LABEL) too, with size 0. Only
    an estimate for disk checks: the exact tar sizes are known once the layers stream.
    """
    try:
        history = client.api.history(reference)
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"cannot read the history of {reference}: {exc}") from exc
    sizes = [int(entry.get("Size") or 0) for entry in reversed(history)]
    non_empty = [s for s in sizes if s > 0]
    if len(non_empty) >= count:
        return non_empty[-count:] if count else []
    return [*([0] * (count - len(non_empty))), *non_empty]


@dataclass(frozen=True)
class Shippable:
    """An image on the controller as :func:`fleet.ship.push.push` ships it."""

    spec: ImageSpec
    sizes: tuple[int, ...]
    save: Callable[[], Iterable[bytes]]
    local: LocalLayers | ContentStore | None = None
    # Per layer, its blob as the controller's content store keeps it compressed (None:
    # only its tar can be sent); empty on a classic store.
    blobs: tuple[Descriptor | None, ...] = ()


def shippable(client: Any, reference: str) -> Shippable:
    """Everything push needs of ``reference``: its layers, their sizes, how to read them."""
    try:
        store = ContentStore.of(client)
    except OSError as exc:
        # The image's ID is not its config's there: the config is found in its blobs,
        # which docker save gives as the store keeps them (the slow way: every layer).
        store = _saved_copy(client, reference, str(exc))
    spec = image_spec(client, reference, store)
    return Shippable(
        spec=spec,
        sizes=tuple(layer_sizes(client, reference, len(spec.diff_ids))),
        save=functools.partial(save_stream, client, reference),
        local=store if store is not None else LocalLayers.of(client),
        blobs=tuple(store.stored(c) for c in spec.chain_ids) if store is not None else (),
    )


def _no_image(reference: str) -> EngineError:
    return EngineError(
        f"no image {reference} on the controller",
        fix="build it first ('fleet build'), or name an existing IMAGE:TAG ('fleet images')",
    )


def _saved_copy(client: Any, reference: str, why: str) -> ContentStore:
    if _image(client, reference) is None:
        raise _no_image(reference)
    try:
        return ContentStore.saved(save_stream(client, reference), why)
    except (OSError, tarfile.TarError) as exc:
        raise EngineError(
            f"cannot ship {reference}: {why}; and copying it with docker save failed: {exc}",
            fix="free space under $TMPDIR for a copy of the image, or run fleet as a user "
            "who may read the engine's containerd directory (FLEET_ENGINE_ROOT names the "
            "engine's root as this machine sees it)",
        ) from exc


def save_stream(client: Any, reference: str, where: str = "the controller") -> Iterator[bytes]:
    """``docker save REFERENCE`` as a stream of chunks, never held whole."""
    try:
        yield from client.api.get_image(reference, chunk_size=1 << 20)
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"docker save {reference} failed on {where}: {exc}") from exc

"""The framework's three-layer build: what is reused, what is rebuilt, and why.

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

The project's settings are in :mod:`fleet.images.project`, the context sent in
:mod:`fleet.images.context`; the engine is reached through :mod:`fleet.images.daemon` (any
engine, local or a build host's).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.errors import BuildError, EngineError, ProjectError, TagCollisionError
from fleet.images import daemon, gitinfo
from fleet.images.context import (
    BASE_DOCKERFILE,
    FRAMEWORK_DOCKERFILE,
    context_digest,
    context_files,
    context_tar,
    with_labels,
)
from fleet.images.daemon import EngineImage
from fleet.images.gitinfo import GitFacts
from fleet.images.labels import (
    LABEL_BASE,
    LABEL_BASE_INPUTS,
    LABEL_BRANCH,
    LABEL_BUILD_DATE,
    LABEL_DOCKER_CMD,
    LABEL_MOVED_FROM,
    LABEL_REVISION,
    LABEL_UPSTREAM,
)
from fleet.images.project import Project, framework_build_args, framework_labels
from fleet.units import utc_now

# Labels that differ between two builds of the same inputs.
_VOLATILE_LABELS = frozenset({"org.label-schema.build-date", "org.opencontainers.image.created"})


StepCallback = Callable[[str, str], None]
OutputCallback = Callable[[str], None]


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


# --- labels -------------------------------------------------------------------------------


# --- build contexts -----------------------------------------------------------------------


# --- engine -------------------------------------------------------------------------------


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
    existing: EngineImage | None,
    reason: str | None,
    reused: tuple[str, str],
    step: StepCallback,
    output: OutputCallback,
) -> tuple[EngineImage, str, str]:
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
    image = daemon.inspect_image(client, spec.reference)
    if image is None:
        raise EngineError(
            f"the image {spec.reference} vanished right after its build",
            fix="run fleet build again; do not remove images while it runs",
        )
    return image, "built", reason


@dataclass(frozen=True)
class BuildOptions:
    """How to build, as ``fleet build`` and a playbook's ``build`` step say it.

    ``rebuild_base`` rebuilds layer 2 without the build cache; ``rebuild`` builds layer 3
    even when an identical build of this commit exists; ``retag`` moves a tag that names
    another commit's image (recorded in the image's ``io.fleet.moved-from`` label), which
    is otherwise refused. ``on_step(layer, message)`` hears what is being done,
    ``on_output(line)`` every line of build output.
    """

    rebuild_base: bool = False
    rebuild: bool = False
    retag: bool = False
    build_date: str | None = None  # the label's date; now when None
    on_step: StepCallback | None = None
    on_output: OutputCallback | None = None


def build(
    client: Any,
    project: Project,
    options: BuildOptions = BuildOptions(),
    *,
    git: GitFacts | None = None,
) -> BuildResult:
    """Build layer 2 if needed, then layer 3, on the engine of ``client``.

    A tag that names another commit's image raises TagCollisionError before anything is
    built, unless ``options.retag``. ``git``: the project's git facts, when already read.
    """
    git = git if git is not None else gitinfo.read(project.root)
    moved_from = check_tag(client, project, git, retag=options.retag)
    step = options.on_step or (lambda layer, message: None)
    rebuild_base, rebuild, build_date = options.rebuild_base, options.rebuild, options.build_date
    log: list[str] = []

    def collect(line: str) -> None:
        log.append(line)
        (options.on_output or (lambda line: None))(line)

    upstream_reference = project.upstream_reference()
    upstream = daemon.inspect_image(client, upstream_reference) if upstream_reference else None
    base_spec = _base_spec(project, rebuild_base)
    existing_base = daemon.inspect_image(client, project.base_reference)
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
        upstream = daemon.inspect_image(client, upstream_reference)  # pulled by the build
    framework_spec = _framework_spec(project, git, base.id, build_date, moved_from)
    existing = daemon.inspect_image(client, framework_spec.reference)
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
    labels = {k: v for k, v in framework.labels.items() if k in framework_spec.labels}
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
    upstream: tuple[str | None, EngineImage | None],
    base: tuple[EngineImage, str, str],
    framework: tuple[EngineImage, str, str],
    *,
    labels: dict[str, str],
    log: tuple[str, ...],
) -> BuildResult:
    """The three layers as a BuildResult: sizes, and what each adds over the one below."""
    upstream_reference, upstream_image = upstream
    upstream_size = upstream_image.size if upstream_image is not None else None
    base_size, framework_size = base[0].size, framework[0].size
    tag = project.tag(git)
    return BuildResult(
        project=project,
        git=git,
        tag=tag,
        reference=f"{project.repository}:{tag}",
        upstream=LayerInfo(
            role="upstream",
            reference=upstream_reference,
            image_id=upstream_image.id if upstream_image is not None else None,
            size=upstream_size,
            increment=upstream_size,
            action="present" if upstream_image is not None else "missing",
            reason="layer 1, never built here",
        ),
        base=LayerInfo(
            role="base",
            reference=project.base_reference,
            image_id=base[0].id,
            size=base_size,
            increment=_increment(base_size, upstream_size),
            action=base[1],
            reason=base[2],
        ),
        framework=LayerInfo(
            role="framework",
            reference=f"{project.repository}:{tag}",
            image_id=framework[0].id,
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
    existing = daemon.inspect_image(client, reference)
    if existing is None:
        return ""
    labels = existing.labels
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
    existing: EngineImage | None, upstream: EngineImage | None, inputs: str, forced: bool
) -> str | None:
    """Why layer 2 must be built, or None when the existing one still fits."""
    if forced:
        return "--rebuild-base asked for it"
    if existing is None:
        return "it does not exist yet"
    recorded = existing.labels.get(LABEL_BASE_INPUTS)
    if recorded is None:
        return f"it has no {LABEL_BASE_INPUTS} label (not built by fleet)"
    if recorded != inputs:
        return f"{BASE_DOCKERFILE}, its context or its build arguments changed"
    if upstream is not None:
        below, above = upstream.layers, existing.layers
        if above[: len(below)] != below:
            return "layer 1 changed under it"
    return None


def _same_build(existing: EngineImage, labels: Mapping[str, str]) -> bool:
    """True when ``existing`` is a clean build of the same inputs (dates aside)."""
    present = existing.labels
    return all(
        present.get(key) == value for key, value in labels.items() if key not in _VOLATILE_LABELS
    )


def _framework_reason(git: GitFacts, existing: EngineImage | None, forced: bool) -> str:
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
        context = context_tar(files, replace={dockerfile: text.encode("utf-8")})
    except OSError as exc:
        raise ProjectError(
            f"cannot read the build context of {reference}: {exc}",
            fix="make the listed context files readable, or remove them from the context",
        ) from exc
    error: str | None = None
    try:
        # Read to the end even after an error: an abandoned stream leaks its connection.
        for chunk in daemon.build_chunks(
            client,
            context,
            dockerfile=dockerfile,
            reference=reference,
            build_args=build_args,
            labels=option_labels,
            nocache=nocache,
        ):
            if "stream" in chunk:
                emit(str(chunk["stream"]))
            elif "status" in chunk:
                emit(" ".join(str(chunk[key]) for key in ("id", "status") if chunk.get(key)))
            if "error" in chunk and error is None:
                detail = chunk.get("errorDetail") or {}
                error = str(detail.get("message") or chunk["error"]).strip()
                emit(error)
    except daemon.BuildRefused as exc:
        emit(exc.explanation)
        raise BuildError(
            layer, reference, exc.explanation, log, fix=_build_fix(layer, log, upstream_reference)
        ) from exc
    if error is not None:
        raise BuildError(
            layer, reference, error, log, fix=_build_fix(layer, log, upstream_reference)
        )


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


# --- shipping -----------------------------------------------------------------------------

"""The framework image's labels, and the version an image is, read from them.

Kept free of docker-py and paramiko: ``fleet audit`` reads versions on its critical path,
where importing either costs more than the audit itself.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

LABEL_FRAMEWORK = "io.fleet.framework"
LABEL_TAG = "io.fleet.tag"
LABEL_DIRTY = "io.fleet.dirty"
LABEL_DETACHED = "io.fleet.detached"
LABEL_COMMIT_COUNT = "io.fleet.commit-count"
LABEL_INPUTS = "io.fleet.inputs"
LABEL_BASE = "io.fleet.base"
LABEL_BASE_INPUTS = "io.fleet.base.inputs"
LABEL_UPSTREAM = "io.fleet.upstream"
# Set by ``fleet build --retag``: the commit whose image the tag named before this build.
LABEL_MOVED_FROM = "io.fleet.moved-from"
LABEL_DOCKER_CMD = "org.label-schema.docker.cmd"
LABEL_VERSION = "org.label-schema.version"
LABEL_BUILD_DATE = "org.label-schema.build-date"
LABEL_SHORT_COMMIT = "org.label-schema.vcs-ref"
LABEL_BRANCH = "org.label-schema.vcs-branch"
LABEL_REVISION = "org.opencontainers.image.revision"
# The CUDA an image was built for, as NVIDIA's CUDA images state it.
LABEL_CUDA = "com.nvidia.cuda.version"
_REQUIRE_CUDA = re.compile(r"(?:^|\s)cuda>=([0-9]+(?:\.[0-9]+)*)")
_CUDA_VERSION = re.compile(r"^([0-9]+(?:\.[0-9]+)*)$")


@dataclass(frozen=True)
class ImageVersion:
    """One local framework image, from its labels (like a row of ``docker images``)."""

    repository: str
    tag: str
    image_id: str
    created: str
    build_date: str
    commit: str
    short_commit: str
    branch: str | None
    dirty: bool
    commit_count: int | None
    version: str
    size: int
    tagged: bool  # False when the tag has moved to a newer build of the same commit count
    docker_cmd: str
    moved_from: str = ""  # the commit the tag named before ``fleet build --retag`` moved it
    # Its config's digest when the engine names images otherwise (the containerd store's
    # IDs are manifest digests); "" when it is the image ID or cannot be read.
    config_digest: str = ""

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"

    def to_json(self) -> dict[str, Any]:
        """One entry of the ``fleet images --json`` document."""
        return {"reference": self.reference, **dataclasses.asdict(self)}


def image_version(repository: str, summary: Mapping[str, Any]) -> ImageVersion:
    """The version an engine's image summary (an entry of ``GET /images/json``) describes."""
    labels = {str(k): str(v) for k, v in (summary.get("Labels") or {}).items()}
    tag = labels.get(LABEL_TAG, "")
    count = labels.get(LABEL_COMMIT_COUNT, "")
    created = summary.get("Created")
    return ImageVersion(
        repository=repository,
        tag=tag,
        image_id=str(summary.get("Id", "")),
        created=_iso(created) if isinstance(created, int | float) else str(created or ""),
        build_date=labels.get(LABEL_BUILD_DATE, ""),
        commit=labels.get(LABEL_REVISION, ""),
        short_commit=labels.get(LABEL_SHORT_COMMIT, ""),
        branch=labels.get(LABEL_BRANCH) or None,
        dirty=labels.get(LABEL_DIRTY) == "true",
        commit_count=int(count) if count.isascii() and count.isdigit() else None,
        version=labels.get(LABEL_VERSION, ""),
        size=int(summary.get("Size") or 0),
        tagged=f"{repository}:{tag}" in (summary.get("RepoTags") or []),
        docker_cmd=labels.get(LABEL_DOCKER_CMD, ""),
        moved_from=labels.get(LABEL_MOVED_FROM, ""),
    )


def newest_first(versions: list[ImageVersion]) -> list[ImageVersion]:
    """Highest commit count first, then the latest build."""
    return sorted(
        versions, key=lambda v: (v.commit_count or -1, v.build_date, v.created), reverse=True
    )


def framework_filter(repository: str) -> dict[str, list[str]]:
    """The engine's image filter for the framework images of ``repository``."""
    return {"label": [f"{LABEL_FRAMEWORK}={repository}"]}


def normalized_name(ref: str) -> str:
    """A reference as containerd names it (``docker.io/library/repo:tag``)."""
    repo, _, tag = ref.rpartition(":")
    if not repo or "/" in tag:
        repo, tag = ref, "latest"
    first = repo.split("/", 1)[0]
    if "/" not in repo:
        repo = f"docker.io/library/{repo}"
    elif not ("." in first or ":" in first or first == "localhost"):
        repo = f"docker.io/{repo}"
    return f"{repo}:{tag}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def required_cuda(env: Sequence[str], labels: Mapping[str, str]) -> str:
    """The CUDA version an image needs of the host's driver ("" when it states none).

    ``NVIDIA_REQUIRE_CUDA="cuda>=12.1 brand=tesla,driver>=470,..."`` as NVIDIA's images set
    it (what the NVIDIA runtime itself checks), else their ``com.nvidia.cuda.version`` label
    or ``CUDA_VERSION`` variable. Labels are untrusted: anything else counts as no statement.
    """
    variables = dict(entry.partition("=")[::2] for entry in env)
    found = _REQUIRE_CUDA.search(variables.get("NVIDIA_REQUIRE_CUDA", ""))
    if found:
        return found.group(1)
    for stated in (labels.get(LABEL_CUDA, ""), variables.get("CUDA_VERSION", "")):
        if _CUDA_VERSION.match(stated.strip()):
            return stated.strip()
    return ""


def cuda_tuple(version: str) -> tuple[int, int]:
    """(major, minor) of ``12.1.0``; a driver's CUDA is major.minor and so is the check."""
    major, _, rest = version.partition(".")
    minor = rest.partition(".")[0]
    return (int(major) if major.isdigit() else 0, int(minor) if minor.isdigit() else 0)

"""The framework on a host: its containers, its images, the deploy lock and the history.

One constant script gathers it all in one round trip (the framework's repository is
passed as an argument, never interpolated); :func:`parse` turns its output into
:class:`HostFramework`. Everything read here comes from the host and is treated as
untrusted: labels are only ever parsed, never executed.

Which image a host holds is told by its *config digest* (the digest of the image's
config JSON, which names its layers, labels, environment and command): the classic store
uses it as the image ID; the containerd store's image ID is the digest of a manifest
instead, so the script reads each framework image's manifest from the engine's content
store (``ctr``, sections ``@@store`` and ``@@manifests``) and :attr:`FrameworkImage.
config_digest` is the digest that manifest names. Output of older versions of the script
(without those sections) still parses: the store is then unknown (``""``), and so is
every config digest.

Where it can, the script lets one ``python3`` process (:data:`FAST_GATHER`, passed as an
argument; isolated and without ``site``, speaking HTTP/1.0 by hand, so that it starts in
a few milliseconds) ask the engine's API socket for the same documents instead of six
``docker`` CLI processes, and read the containerd store's manifests from the content store's files
(verified by their digest) instead of running ``ctr``: the same sections, in less time
and CPU on the host. Without python3, with ``DOCKER_HOST`` or a docker context set, or
when it fails, the docker CLI answers as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fleet.hostoutput import (
    Fact,
    Store,
    engine_answered,
    engine_error,
    gathered,
    parses_host_output,
    sections,
    store_in,
)
from fleet.images.labels import (
    LABEL_COMMIT_COUNT,
    LABEL_DIRTY,
    LABEL_DOCKER_CMD,
    LABEL_TAG,
    LABEL_VERSION,
)
from fleet.ops import gpu
from fleet.ops.gpu import GPUProcess, GPUProcesses
from fleet.ops.records import HistoryEntry, LockDocument
from fleet.programs import program

if TYPE_CHECKING:
    from fleet.ssh.base import Transport

STATE_DIR = "/var/lib/fleet"
HISTORY_FILE = f"{STATE_DIR}/history.jsonl"
LOCK_FILE = f"{STATE_DIR}/deploy.lock"
# flock(1) on this file serialises every change of LOCK_FILE (take, take over, release);
# LOCK_FILE itself is what a deploy holds, across many commands.
LOCK_GUARD = f"{STATE_DIR}/deploy.lock.guard"

SCRIPT = program("framework_state.sh")

# The same sections as SCRIPT, read from the engine's API socket by one python3 process
# instead of six docker CLI processes (about a third of the time on the lab's hosts).
# SCRIPT runs it only where the CLI would talk to that same socket (no DOCKER_HOST, no
# context) and falls back to the CLI when it fails: it prints nothing until it has all.
# Python 3.5 compatible (old GPU servers).
FAST_GATHER = program("framework_state_fast.py")


@dataclass(frozen=True)
class FrameworkImage:
    """A framework image on a host, described by its own labels."""

    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    size: int
    created: str
    # Added with the @@store/@@manifests sections; empty when the host did not tell.
    layers: tuple[str, ...] = ()  # RootFS diff IDs, bottom first
    config: Mapping[str, Any] = field(default_factory=dict)  # Env, Cmd, Entrypoint, ...
    config_digest: str = ""  # see the module docstring

    @property
    def tag(self) -> str:
        return self.labels.get(LABEL_TAG, "")

    @property
    def commit_count(self) -> int:
        text = self.labels.get(LABEL_COMMIT_COUNT, "")
        return int(text) if text.isascii() and text.isdigit() else -1

    @property
    def dirty(self) -> bool:
        return self.labels.get(LABEL_DIRTY) == "true"

    @property
    def docker_cmd(self) -> str:
        return self.labels.get(LABEL_DOCKER_CMD, "")


@dataclass(frozen=True)
class FrameworkContainer:
    """A framework container on a host."""

    id: str
    name: str
    image: str
    image_id: str
    labels: Mapping[str, str]
    status: str
    health: str
    started_at: str
    finished_at: str
    restart_count: int
    exit_code: int
    config: Mapping[str, Any] = field(default_factory=dict)
    host_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting")

    @property
    def tag(self) -> str:
        return self.labels.get(LABEL_TAG, "")

    @property
    def version(self) -> str:
        return self.labels.get(LABEL_VERSION, "")

    @property
    def commit_count(self) -> int:
        text = self.labels.get(LABEL_COMMIT_COUNT, "")
        return int(text) if text.isascii() and text.isdigit() else -1


@dataclass(frozen=True)
class HostFramework:
    """What one host runs and holds of the framework."""

    engine_ok: bool
    engine_error: str = ""
    engine_version: str = ""
    containers: tuple[FrameworkContainer, ...] = ()
    images: tuple[FrameworkImage, ...] = ()
    lock: LockDocument | None = None
    lock_raw: str = ""
    history: tuple[HistoryEntry, ...] = ()
    store: Store | Literal[""] = ""  # "" when the host did not tell
    # The GPUs' compute processes (none known when the host has no driver).
    gpu: GPUProcesses = field(default_factory=lambda: GPUProcesses(available=False))

    @property
    def busy(self) -> list[GPUProcess]:
        """GPU jobs running in the running framework containers: what a switch interrupts."""
        return self.gpu.in_containers([c.id for c in self.running])

    def image_by_id(self, image_id: str) -> FrameworkImage | None:
        for image in self.images:
            if image.id == image_id:
                return image
        return None

    @property
    def running(self) -> tuple[FrameworkContainer, ...]:
        return tuple(c for c in self.containers if c.running)

    def image_by_tag(self, tag: str) -> FrameworkImage | None:
        """The image the tag names now; else one whose labels say the tag (an older build)."""
        labelled = [image for image in self.images if image.tag == tag]
        for image in labelled:
            if any(name.endswith(f":{tag}") for name in image.tags):
                return image
        return labelled[0] if labelled else None


def gather(
    transport: Transport, repository: str, *, history: int = 20, timeout: float | None = None
) -> HostFramework:
    """Ask a host about the framework (one round trip)."""
    return FRAMEWORK.gather(transport, repository, str(history), FAST_GATHER, timeout=timeout)


def _json_lines(lines: list[str]) -> list[dict[str, Any]]:
    found = []
    for line in lines:
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _container(doc: Mapping[str, Any]) -> FrameworkContainer:
    state = doc.get("State") or {}
    config = doc.get("Config") or {}
    health = state.get("Health") or {}
    return FrameworkContainer(
        id=str(doc.get("Id", "")),
        name=str(doc.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        image_id=str(doc.get("Image", "")),
        labels=_labels(config.get("Labels")),
        status=str(state.get("Status", "")),
        health=str(health.get("Status", "")) if isinstance(health, Mapping) else "",
        started_at=str(state.get("StartedAt", "")),
        finished_at=str(state.get("FinishedAt", "")),
        restart_count=int(doc.get("RestartCount") or 0),
        exit_code=int(state.get("ExitCode") or 0),
        config=config if isinstance(config, Mapping) else {},
        host_config=doc.get("HostConfig") or {},
    )


def _image(doc: Mapping[str, Any], store: str, manifests: Mapping[str, str]) -> FrameworkImage:
    config = doc.get("Config") or {}
    rootfs = doc.get("RootFS") or {}
    layers = rootfs.get("Layers") if isinstance(rootfs, Mapping) else None
    ident = str(doc.get("Id", ""))
    config_digest = ident if store == "classic" else manifests.get(ident, "")
    return FrameworkImage(
        id=ident,
        tags=tuple(str(t) for t in doc.get("RepoTags") or ()),
        labels=_labels(config.get("Labels")),
        size=int(doc.get("Size") or 0),
        created=str(doc.get("Created", "")),
        layers=tuple(str(x) for x in layers) if isinstance(layers, list) else (),
        config=config if isinstance(config, Mapping) else {},
        config_digest=config_digest,
    )


def _manifest_configs(lines: list[str]) -> dict[str, str]:
    """Image ID -> config digest, from ``ID MANIFEST-JSON`` lines (indexes are skipped)."""
    found: dict[str, str] = {}
    for line in lines:
        ident, _, text = line.partition(" ")
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError:
            continue
        config = manifest.get("config") if isinstance(manifest, dict) else None
        digest = config.get("digest") if isinstance(config, dict) else None
        if isinstance(digest, str) and digest.startswith("sha256:"):
            found[ident] = digest
    return found


@parses_host_output("the framework's state")
def parse(text: str) -> HostFramework:
    """The framework's state from the output of :data:`SCRIPT`."""
    parts = sections(gathered(text, "the framework's state"), keep_blank=False)
    version = engine_answered(parts)
    if version is None:
        return HostFramework(False, engine_error(parts))
    lock_raw = "\n".join(parts.get("lock", [])).strip()
    lock = LockDocument.parse(lock_raw) if lock_raw else None
    containers = sorted(
        (_container(d) for d in _json_lines(parts.get("containers", []))),
        key=lambda c: (not c.running, -c.commit_count, c.name),
    )
    store = store_in(parts.get("store", []))
    manifests = _manifest_configs(parts.get("manifests", []))
    images = sorted(
        (_image(d, store, manifests) for d in _json_lines(parts.get("images", []))),
        key=lambda i: (-i.commit_count, i.created),
    )
    return HostFramework(
        gpu=gpu.parse(text),
        engine_ok=True,
        engine_version=version,
        containers=tuple(containers),
        images=tuple(images),
        lock=lock,
        lock_raw=lock_raw,
        history=tuple(
            entry
            for entry in map(HistoryEntry.parse, parts.get("history", []))
            if entry is not None
        ),
        store=store,
    )


FRAMEWORK: Fact[HostFramework] = Fact("the framework's state", SCRIPT, parse, "fleet-framework")


def previous_version(state: HostFramework) -> str | None:
    """The version to roll back to: what the running one replaced, from the history."""
    running = state.running
    current = running[0].tag if running else None
    for entry in reversed(state.history):
        if (
            entry.outcome == "changed"
            and entry.to_version == current
            and entry.from_version
            and entry.from_version != current
        ):
            return entry.from_version
    kept = [
        c
        for c in state.containers
        if not c.running and c.tag and c.tag != current and not c.name.endswith("-failed")
    ]
    if kept:
        return max(kept, key=lambda c: c.commit_count).tag
    return None

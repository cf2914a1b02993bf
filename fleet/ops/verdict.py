"""One host's audit verdict, a pure function of its facts (:func:`audit_host`).

Which container is "the framework" on a host: the running framework container (the one
with the highest commit count when several run, which is itself drift); when none runs,
the most recently stopped one that is not a kept version (``<name>-<tag>``) or a failed
one (``<name>-<tag>-failed``).

Is the host's image the controller's build? (:func:`compare_build`)
    The identity of an image is the digest of its config JSON (layers, labels, env,
    command): the classic store's image ID, and the ID ``list_versions`` gives on the
    controller (a classic-store engine). On the containerd store a host's image ID is the
    digest of a *manifest* (fleet's transfer writes its own), which never equals a config
    digest; the config digest is read from that manifest in the host's content store
    (``ctr``), so both stores are compared exactly, by config digest:

    - ``same``: the host's image ID or config digest is the controller's current build of
      that tag;
    - ``superseded``: it is a build the controller made, whose tag has since moved on to
      a newer build (an untagged image on the controller);
    - ``labels``: the digests cannot be compared (the content store was not readable, no
      ``ctr`` or no root; or the controller's own engine names images by manifest), but
      the image's identity labels equal the controller's build of that tag: commit
      (``org.opencontainers.image.revision``), build date (to the second), dirty flag and
      run command. Two builds of one commit differ in their build date, so only two
      dirty builds of the same commit within the same second would be confused;
    - ``different``: the controller built that tag, but not this image (a rebuild, a
      build from another machine, an image with borrowed labels);
    - ``unknown``: the controller never built that tag.

Drift (each a :class:`Reason` with a ``code``; a host with none is ``ok``):

    ``no_engine``       Docker does not answer on the host
    ``no_framework``    no framework container on the host
    ``not_running``     framework containers exist, none runs
    ``several_running`` more than one framework container runs
    ``unhealthy``       Docker's health check says unhealthy, or it restarts in a loop
    ``unknown_version`` the controller never built the running version
    ``other_build``     the running image is not the controller's build of its tag
    ``dirty``           the running image was built from a dirty work tree
    ``run_command``     the image's run command is missing or refused, so the container
                        cannot be compared with it
    ``config``          the container's configuration differs from its image's run
                        command after the host's ``fleet_run_overrides``
                        (:func:`config_differences` says field by field)
    ``version``         it runs another version than ``--expect``

The container is compared with ``runspec.run_spec_for(host, image, REPOSITORY:TAG)``, field
by field, as Docker records it (``docker inspect``), with Docker's defaults for what the
run command leaves out: image (the reference, or the image's ID), name, command
(``Config.Cmd``, or the image's when the spec has none), entrypoint (the image's),
restart policy (``no``), network mode (``default``/``bridge``), hostname (when set),
volumes (``HostConfig.Binds`` plus anonymous volumes the image does not declare),
runtime (``runc``), GPUs, shm size (64 MiB), ulimits, environment *additions* (the
container's variables that the image does not set to the same value), published ports,
privileged, added capabilities, devices, security options, and the pid/ipc/userns modes.
A daemon configured with another default runtime or default ulimits shows as drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet.errors import HostError
from fleet.hosts.model import Host
from fleet.images.labels import (
    LABEL_BRANCH,
    LABEL_BUILD_DATE,
    LABEL_DOCKER_CMD,
    LABEL_REVISION,
    LABEL_SHORT_COMMIT,
    LABEL_VERSION,
    ImageVersion,
)
from fleet.images.runspec import run_spec_for
from fleet.ops import containers
from fleet.ops.containers import FrameworkContainer, FrameworkImage, HostFramework
from fleet.ops.records import HistoryEntry, LockDocument, last_switch

if TYPE_CHECKING:
    pass

from fleet.ops.drift import ConfigDifference, config_differences

STATUS_OK = "ok"


STATUS_DRIFT = "drift"


STATUS_UNREACHABLE = "unreachable"


STATUS_ERROR = "error"


@dataclass(frozen=True)
class Reason:
    """Why a host drifted: a stable ``code`` for scripts and a message for people."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Framework:
    """The framework container of a host, described by its image's labels."""

    container: str
    container_id: str
    state: str
    health: str
    exit_code: int
    since: str
    restart_count: int
    tag: str
    version: str
    commit: str
    short_commit: str
    branch: str
    build_date: str
    dirty: bool
    image: str
    image_id: str
    config_digest: str

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting")

    def to_json(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "container_id": self.container_id,
            "state": self.state,
            "health": self.health or None,
            "exit_code": self.exit_code,
            "since": self.since,
            "restart_count": self.restart_count,
            "tag": self.tag,
            "version": self.version,
            "commit": self.commit,
            "short_commit": self.short_commit,
            "branch": self.branch or None,
            "build_date": self.build_date,
            "dirty": self.dirty,
            "image": self.image,
            "image_id": self.image_id,
            "config_digest": self.config_digest or None,
        }


@dataclass(frozen=True)
class AuditRow:
    """What one host runs, and how it differs from what it should run."""

    host: str
    status: str
    reasons: tuple[Reason, ...] = ()
    engine_version: str = ""
    store: str = ""
    framework: Framework | None = None
    controller_match: str | None = None
    controller_image_id: str | None = None
    config_diff: tuple[ConfigDifference, ...] = ()
    expected: str | None = None
    containers: tuple[tuple[str, str, str], ...] = ()  # (name, tag, state)
    other_versions: tuple[str, ...] = ()
    rollback_to: str | None = None
    lock: LockDocument | None = None
    history: tuple[HistoryEntry, ...] = ()
    reachable: bool = True
    # GPU jobs in the running framework container (pid, memory, age): a deploy skips it.
    busy: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def tag(self) -> str | None:
        """The running version, None when nothing runs (or the host was not reached)."""
        if self.framework is None or not self.framework.running:
            return None
        return self.framework.tag or "?"

    @property
    def last_deploy(self) -> HistoryEntry | None:
        """The last switch in the history (a lock's take-over or release is no deploy)."""
        return last_switch(self.history)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)

    def reason_text(self) -> str:
        return "; ".join(r.message for r in self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "status": self.status,
            "reasons": [r.to_json() for r in self.reasons],
            "engine": (
                {"version": self.engine_version, "store": self.store}
                if self.engine_version
                else None
            ),
            "framework": self.framework.to_json() if self.framework else None,
            "controller": {"match": self.controller_match, "image_id": self.controller_image_id},
            "config_diff": [d.to_json() for d in self.config_diff],
            "expected": self.expected,
            "containers": [
                {"name": name, "tag": tag, "state": state} for name, tag, state in self.containers
            ],
            "other_versions": list(self.other_versions),
            "rollback_to": self.rollback_to,
            "lock": self.lock.to_json() if self.lock is not None else None,
            "history": [entry.to_json() for entry in self.history],
            "last_deploy": self.last_deploy.to_json() if self.last_deploy else None,
            "gpu_busy": list(self.busy),
        }


# -- the pure part ------------------------------------------------------------------------
def audit_host(
    facts: HostFramework,
    controller_versions: Sequence[ImageVersion],
    expected: str | None,
    host: Host,
    *,
    repository: str | None = None,
) -> AuditRow:
    """The audit row of one host, from what it told (``facts``) and what the controller built.

    ``expected`` is a tag (see :func:`resolve_expected`) or None; ``host`` gives the name
    and the settings (``fleet_run_overrides``, ``fleet_run_allow``) that the run command is
    compared under. ``repository`` names the framework image (default: the controller's).
    Each check adds its reasons; any reason makes the host drift.
    """
    if not facts.engine_ok:
        return AuditRow(
            host.name,
            STATUS_DRIFT,
            (Reason("no_engine", f"Docker does not answer: {_first_line(facts.engine_error)}"),),
            expected=expected,
            lock=facts.lock,
            history=facts.history,
        )
    repository = repository or next((v.repository for v in controller_versions), "")
    primary = _primary(facts)
    reasons = _check_presence(facts, primary)
    framework = None
    match: str | None = None
    controller_id: str | None = None
    differences: tuple[ConfigDifference, ...] = ()
    if primary is not None:
        image = facts.image_by_id(primary.image_id)
        framework = _framework(primary, image)
        if framework.running:
            reasons += _check_health(facts, primary, framework)
            build_reasons, match, controller_id = _check_build(
                primary, image, framework, controller_versions
            )
            reasons += build_reasons
            command_reasons, differences = _check_run_command(
                host, primary, image, framework.tag, repository
            )
            reasons += command_reasons
        else:
            reasons.append(_stopped(primary, framework))
    running_tag = framework.tag if framework is not None and framework.running else None
    running = framework is not None and framework.running
    if expected is not None and running and framework is not None and framework.tag != expected:
        reasons.append(Reason("version", f"runs {framework.tag or '?'}, expected {expected}"))
    return AuditRow(
        host=host.name,
        status=STATUS_DRIFT if reasons else STATUS_OK,
        reasons=tuple(reasons),
        engine_version=facts.engine_version,
        store=facts.store,
        framework=framework,
        controller_match=match,
        controller_image_id=controller_id,
        config_diff=differences,
        expected=expected,
        containers=tuple((c.name, c.tag, c.status) for c in facts.containers),
        other_versions=tuple(
            dict.fromkeys(i.tag for i in facts.images if i.tag and i.tag != running_tag)
        ),
        rollback_to=containers.previous_version(facts) if running_tag else None,
        lock=facts.lock,
        history=facts.history,
        busy=tuple(str(p) for p in facts.busy),
    )


def _check_presence(facts: HostFramework, primary: FrameworkContainer | None) -> list[Reason]:
    """A host without a framework container, or with only stopped ones."""
    if primary is not None:
        return []
    if facts.containers:
        kept = ", ".join(f"{c.name} ({c.status})" for c in facts.containers)
        return [Reason("not_running", f"no framework container runs; kept: {kept}")]
    return [Reason("no_framework", "no framework container on the host")]


def _stopped(primary: FrameworkContainer, framework: Framework) -> Reason:
    when = f" since {framework.since}" if framework.since else ""
    return Reason(
        "not_running",
        f"{primary.name} ({framework.tag or '?'}) is {framework.state}"
        f" (exit code {framework.exit_code}){when}",
    )


def _check_health(
    facts: HostFramework, primary: FrameworkContainer, framework: Framework
) -> list[Reason]:
    """Other framework containers running beside it; unhealthy or restarting."""
    reasons = []
    several = [c for c in facts.running if c.id != primary.id]
    if several:
        names = ", ".join(f"{c.name} ({c.tag or '?'})" for c in several)
        reasons.append(Reason("several_running", f"more framework containers run besides: {names}"))
    if framework.health == "unhealthy" or framework.state == "restarting":
        reasons.append(
            Reason(
                "unhealthy",
                f"{primary.name} is {framework.health or framework.state} "
                f"({framework.restart_count} restarts)",
            )
        )
    return reasons


def _check_build(
    primary: FrameworkContainer,
    image: FrameworkImage | None,
    framework: Framework,
    controller_versions: Sequence[ImageVersion],
) -> tuple[list[Reason], str | None, str | None]:
    """Whether the controller built what runs: (reasons, match, the controller's image id)."""
    tag = framework.tag
    labels = image.labels if image is not None else primary.labels
    match, version = compare_build(
        primary.image_id, framework.config_digest, labels, controller_versions
    )
    reasons = []
    if match == "unknown":
        reasons.append(
            Reason("unknown_version", f"the controller never built {tag or 'this image'}")
        )
    elif match in ("different", "superseded"):
        current = next((v for v in controller_versions if v.tag == tag and v.tagged), version)
        reasons.append(_other_build(tag, framework, primary.image_id, match, current))
    if framework.dirty:
        reasons.append(
            Reason("dirty", f"{tag} was built from a dirty work tree (uncommitted changes)")
        )
    return reasons, match, version.image_id if version is not None else None


def _check_run_command(
    host: Host,
    primary: FrameworkContainer,
    image: FrameworkImage | None,
    tag: str | None,
    repository: str,
) -> tuple[list[Reason], tuple[ConfigDifference, ...]]:
    """Whether the container runs as its image's run command says: (reasons, differences)."""
    if image is None:
        return [
            Reason(
                "run_command",
                f"the image of {primary.name} ({_short(primary.image_id)}) is no longer "
                "on the host; its run command cannot be read",
            )
        ], ()
    reference = f"{repository or primary.image.rpartition(':')[0]}:{tag}"
    try:
        spec = run_spec_for(host, image, reference)
    except HostError as exc:
        return [Reason("run_command", exc.reason)], ()
    differences = tuple(config_differences(primary, image, spec, reference))
    if not differences:
        return [], ()
    described = ", ".join(str(d) for d in differences)
    return [
        Reason("config", f"the container differs from its image's run command: {described}")
    ], differences


def unreachable_row(host: str, reason: str, expected: str | None = None) -> AuditRow:
    return AuditRow(
        host,
        STATUS_UNREACHABLE,
        (Reason("unreachable", reason),),
        expected=expected,
        reachable=False,
    )


def error_row(host: str, reason: str, expected: str | None = None) -> AuditRow:
    return AuditRow(host, STATUS_ERROR, (Reason("error", reason),), expected=expected)


def _primary(facts: HostFramework) -> FrameworkContainer | None:
    running = facts.running
    if running:
        return running[0]
    current = [c for c in facts.containers if not _kept(c)]
    if not current:
        return None
    return max(current, key=lambda c: (c.finished_at, c.commit_count))


def _kept(container: FrameworkContainer) -> bool:
    """A version kept for rollback by deploy (``<name>-<tag>``) or a failed one."""
    if container.tag and container.name.endswith(f"-{container.tag}"):
        return True
    return container.name.endswith("-failed")


def _framework(container: FrameworkContainer, image: FrameworkImage | None) -> Framework:
    labels = image.labels if image is not None else container.labels
    dirty = labels.get("io.fleet.dirty") == "true"
    running = container.running
    return Framework(
        container=container.name,
        container_id=container.id,
        state=container.status,
        health=container.health,
        exit_code=container.exit_code,
        since=_second(container.started_at if running else container.finished_at),
        restart_count=container.restart_count,
        tag=labels.get("io.fleet.tag", ""),
        version=labels.get(LABEL_VERSION, ""),
        commit=labels.get(LABEL_REVISION, ""),
        short_commit=labels.get(LABEL_SHORT_COMMIT, ""),
        branch=labels.get(LABEL_BRANCH, ""),
        build_date=labels.get(LABEL_BUILD_DATE, ""),
        dirty=dirty,
        image=container.image,
        image_id=container.image_id,
        config_digest=image.config_digest if image is not None else "",
    )


def _other_build(
    tag: str,
    framework: Framework,
    image_id: str,
    match: str,
    version: ImageVersion | None,
) -> Reason:
    """The host runs an image of ``tag`` that is not the controller's: which, and which commit.

    ``version`` is the controller's current build of ``tag`` (the tagged one).
    """
    here = _short(framework.config_digest or image_id)
    ours = framework.commit
    if version is not None and ours and version.commit and ours != version.commit:
        # Another commit under the same tag: a branch or a rebase reached the same count.
        return Reason(
            "other_commit",
            f"the image of {tag} here ({here}) is commit {ours[:12]}"
            f"{_on_branch(framework.branch)}, the controller's ({_short(version.image_id)}) "
            f"is commit {version.commit[:12]}{_on_branch(version.branch)}",
        )
    theirs = "an older build of it, since rebuilt" if match == "superseded" else ""
    if version is not None and not theirs:
        theirs = _short(version.image_id)
    return Reason(
        "other_build", f"the image of {tag} here ({here}) is not the controller's build ({theirs})"
    )


def _on_branch(branch: str | None) -> str:
    return f" on {branch}" if branch else ""


def compare_build(
    image_id: str,
    config_digest: str,
    labels: Mapping[str, str],
    versions: Sequence[ImageVersion],
) -> tuple[str, ImageVersion | None]:
    """How a host's image relates to the controller's builds (see the module docstring)."""
    identities = {image_id, config_digest} - {""}
    for version in versions:
        if {version.image_id, version.config_digest} & identities:
            return ("same" if version.tagged else "superseded"), version
    tag = labels.get("io.fleet.tag", "")
    same_tag = [v for v in versions if v.tag == tag]
    if not tag or not same_tag:
        return "unknown", None
    current = next((v for v in same_tag if v.tagged), same_tag[0])
    for version in same_tag:
        if _same_labels(labels, version):
            return ("labels" if version.tagged else "superseded"), version
    return "different", current


def _same_labels(labels: Mapping[str, str], version: ImageVersion) -> bool:
    return (
        bool(version.commit)
        and labels.get(LABEL_REVISION, "") == version.commit
        and labels.get(LABEL_BUILD_DATE, "") == version.build_date
        and (labels.get("io.fleet.dirty") == "true") == version.dirty
        and labels.get(LABEL_DOCKER_CMD, "") == version.docker_cmd
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _second(timestamp: str) -> str:
    """Docker's nanosecond timestamps to the second; its zero time to ""."""
    if not timestamp or timestamp.startswith("0001-"):
        return ""
    head, _, _ = timestamp.partition(".")
    return head.rstrip("Z") + "Z"


def _short(image_id: str | None) -> str:
    return (image_id or "none").removeprefix("sha256:")[:12]

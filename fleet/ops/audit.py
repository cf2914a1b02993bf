"""Audit: which framework version each host runs, since when, and whether it drifted.

What a host runs is read from the host itself, in one round trip and without the deploy
lock (:func:`fleet.ops.containers.gather`: containers, images, lock, history, image store):
an audit never writes anything to a host. :func:`audit_host` is a pure function of those
facts, the controller's builds (:func:`fleet.images.build.list_versions`), the expected version
and the host's settings; it returns one :class:`AuditRow`.

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

JSON (``fleet audit --json``): the document every fleet command prints (``schema``,
``command``: "audit", ``seconds``, ``summary``, ``exit_code``, ``hosts``), where each
host's ``outcome`` is ``ok`` (no drift), ``failed`` (drifted, or the audit could not run
there: ``details.status`` tells) or ``unreachable``, and its ``details`` is its row::

    {"host": "gpu07",
     "status": "ok" | "drift" | "unreachable" | "error",
     "reasons": [{"code": "config", "message": "..."}],
     "engine": {"version": "26.1.5", "store": "classic" | "containerd" | ""} | null,
     "framework": null | {
        "container": "cauchy_service", "container_id": "...", "state": "running",
        "health": "healthy" | "unhealthy" | "starting" | null, "exit_code": 0,
        "since": "2026-11-28T04:26:28Z", "restart_count": 0,
        "tag": "0.2.7", "version": "v0.2-7-gabc1234", "commit": "<40 hex>",
        "short_commit": "abc1234", "branch": "main" | null, "build_date": "...",
        "dirty": false, "image": "cauchy:0.2.7", "image_id": "sha256:...",
        "config_digest": "sha256:..." | null},
     "controller": {"match": "same" | "superseded" | "labels" | "different" | "unknown"
                    | null, "image_id": "sha256:..." | null},
     "config_diff": [{"field": "restart", "expected": "unless-stopped", "actual": "always"}],
     "expected": "0.2.7" | null,
     "containers": [{"name": "cauchy_service-0.2.6", "tag": "0.2.6", "state": "exited"}],
     "other_versions": ["0.2.6"],        # other versions' images on the host, newest first
     "rollback_to": "0.2.6" | null,      # what 'fleet rollback' would start
     "lock": {...} | null,               # a deploy in progress (the lock file's content)
     "history": [{...}],                 # the last N history lines (--history N; 1)
     "last_deploy": {...} | null,        # the last history line
     "gpu_busy": ["pid 4242, 3072 MiB, for 41m07s"]}  # GPU jobs in the framework container

and a top-level ``audit`` object::

    {"repository": "cauchy", "expected": "0.2.7" | null,
     "controller_versions": ["0.2.7", "0.2.6"],   # newest first
     "versions": {"0.2.7": 3, "0.2.6": 1, "none": 1},   # reachable hosts per running tag
     "ok": ["gpu01"], "drifted": ["gpu02"], "unreachable": ["gpu03"]}

Exit codes: 0 every host as expected, 2 some host drifted (or could not be audited),
3 some host unreachable (wins over 2).
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from fleet import units
from fleet.errors import EXIT_INTERRUPTED, AuditInterrupted, HostError, Interrupted, UsageError
from fleet.hosts.model import Host
from fleet.images.labels import (
    LABEL_BRANCH,
    LABEL_BUILD_DATE,
    LABEL_DOCKER_CMD,
    LABEL_REVISION,
    LABEL_SHORT_COMMIT,
    LABEL_VERSION,
    ImageVersion,
    framework_filter,
    image_version,
    newest_first,
    normalized_name,
)
from fleet.images.runspec import run_spec_for
from fleet.ops import containers
from fleet.ops.containers import FrameworkContainer, FrameworkImage, HostFramework
from fleet.ops.history import is_switch
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, Runner

if TYPE_CHECKING:
    from fleet.images.runspec import RunSpec

LATEST = "latest"
STATUS_OK = "ok"
STATUS_DRIFT = "drift"
STATUS_UNREACHABLE = "unreachable"
STATUS_ERROR = "error"

_DEFAULT_SHM = 64 << 20


@dataclass(frozen=True)
class Reason:
    """Why a host drifted: a stable ``code`` for scripts and a message for people."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class ConfigDifference:
    """One field where a container differs from its image's run command."""

    field: str
    expected: Any
    actual: Any

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "expected": self.expected, "actual": self.actual}

    def __str__(self) -> str:
        return f"{self.field} {_show(self.actual)} (expected {_show(self.expected)})"


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
    lock: Mapping[str, Any] | None = None
    history: tuple[Mapping[str, Any], ...] = ()
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
    def last_deploy(self) -> Mapping[str, Any] | None:
        """The last switch in the history (a lock's take-over or release is no deploy)."""
        return next((e for e in reversed(self.history) if is_switch(e)), None)

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
            "lock": dict(self.lock) if self.lock is not None else None,
            "history": [dict(entry) for entry in self.history],
            "last_deploy": dict(self.last_deploy) if self.last_deploy else None,
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


# -- the container against its run command --------------------------------------------------
def config_differences(
    container: FrameworkContainer, image: FrameworkImage, spec: RunSpec, reference: str
) -> list[ConfigDifference]:
    """Where ``container`` differs from ``spec``, the run command it should have been run with."""
    config = container.config
    host_config = container.host_config
    image_config = image.config
    found: list[ConfigDifference] = []

    def check(name: str, expected: Any, actual: Any) -> None:
        if expected != actual:
            found.append(ConfigDifference(name, expected, actual))

    actual_image = str(config.get("Image", ""))
    same_image = actual_image in (reference, image.id, image.id.removeprefix("sha256:")) or (
        normalized_name(actual_image) == normalized_name(reference)
    )
    check("image", reference, reference if same_image else actual_image)
    if spec.name is not None:
        check("name", spec.name, container.name)
    command = [*spec.command, *(["--port", str(spec.port)] if spec.port is not None else [])]
    check("command", command or _strings(image_config.get("Cmd")), _strings(config.get("Cmd")))
    check(
        "entrypoint",
        _strings(image_config.get("Entrypoint")),
        _strings(config.get("Entrypoint")),
    )
    check("restart", spec.restart or "no", _restart(host_config.get("RestartPolicy")))
    check("network", _network(spec.network), _network(str(host_config.get("NetworkMode") or "")))
    if spec.hostname is not None:
        check("hostname", spec.hostname, str(config.get("Hostname", "")))
    check("volumes", sorted(spec.volumes), _volumes(config, host_config, image_config))
    check("runtime", spec.runtime or "runc", str(host_config.get("Runtime") or "runc"))
    check("gpus", spec.gpus, _gpus(host_config.get("DeviceRequests")))
    check(
        "shm_size",
        _bytes(spec.shm_size) if spec.shm_size is not None else _DEFAULT_SHM,
        int(host_config.get("ShmSize") or _DEFAULT_SHM),
    )
    check("ulimits", _spec_ulimits(spec), _ulimits(host_config.get("Ulimits")))
    check("env", _env_additions(spec.env, image_config), _env_additions(_env(config), image_config))
    check("publish", _spec_ports(spec.publish), _ports(host_config.get("PortBindings")))
    check("privileged", spec.privileged, bool(host_config.get("Privileged")))
    check("cap_add", _caps(spec.cap_add), _caps(_strings(host_config.get("CapAdd"))))
    check("devices", sorted(_spec_devices(spec.devices)), _devices(host_config.get("Devices")))
    check(
        "security_opt", sorted(spec.security_opt), sorted(_strings(host_config.get("SecurityOpt")))
    )
    check("pid", spec.pid or "", str(host_config.get("PidMode") or ""))
    check("userns", spec.userns or "", str(host_config.get("UsernsMode") or ""))
    ipc = str(host_config.get("IpcMode") or "")
    if spec.ipc is not None or ipc == "host" or ipc.startswith("container:"):
        check("ipc", spec.ipc or "private", ipc)
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(x) for x in value]
    return []


def _restart(policy: Any) -> str:
    if not isinstance(policy, Mapping):
        return "no"
    name = str(policy.get("Name") or "no")
    retries = int(policy.get("MaximumRetryCount") or 0)
    return f"{name}:{retries}" if name == "on-failure" and retries else name


def _network(mode: str | None) -> str:
    return "default" if mode in (None, "", "default", "bridge") else mode


def _volumes(
    config: Mapping[str, Any], host_config: Mapping[str, Any], image: Mapping[str, Any]
) -> list[str]:
    binds = _strings(host_config.get("Binds"))
    declared = image.get("Volumes") if isinstance(image.get("Volumes"), Mapping) else {}
    anonymous = config.get("Volumes") if isinstance(config.get("Volumes"), Mapping) else {}
    bound = {b.split(":")[1] for b in binds if b.count(":") >= 1}
    extra = [str(v) for v in anonymous or {} if v not in (declared or {}) and v not in bound]
    return sorted(binds + extra)


def _gpus(requests: Any) -> str | None:
    if not isinstance(requests, list):
        return None
    for request in requests:
        if not isinstance(request, Mapping):
            continue
        capabilities = request.get("Capabilities") or []
        if not any("gpu" in (c or []) for c in capabilities):
            continue
        ids = request.get("DeviceIDs") or []
        if ids:
            return "device=" + ",".join(str(i) for i in ids)
        count = int(request.get("Count") or 0)
        return "all" if count == -1 else str(count)
    return None


def _bytes(text: str) -> int | str:
    """Docker's RAMInBytes (binary units: 2g = 2 GiB); the text itself when it is none."""
    try:
        return units.parse_size(text)
    except ValueError:
        return text


def _ulimit_pair(value: str) -> tuple[int, int] | str:
    soft, _, hard = value.partition(":")
    try:
        return int(soft), int(hard or soft)
    except ValueError:
        return value


def _spec_ulimits(spec: RunSpec) -> dict[str, Any]:
    return {name: _ulimit_pair(value) for name, value in sorted(spec.ulimits)}


def _ulimits(value: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in value if isinstance(value, list) else []:
        if isinstance(item, Mapping) and item.get("Name"):
            found[str(item["Name"])] = (int(item.get("Soft") or 0), int(item.get("Hard") or 0))
    return dict(sorted(found.items()))


def _env(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for entry in _strings(config.get("Env")):
        key, _, value = entry.partition("=")
        pairs.append((key, value))
    return pairs


def _env_additions(pairs: Iterable[tuple[str, str]], image: Mapping[str, Any]) -> dict[str, str]:
    """The variables that are not the image's own (same name and value)."""
    own = dict(_env(image))
    return {k: v for k, v in sorted(pairs) if own.get(k) != v}


def _spec_ports(publish: Sequence[str]) -> list[str]:
    found: list[str] = []
    for mapping in publish:
        text, _, proto = mapping.partition("/")
        parts = text.rsplit(":", 2) if not text.startswith("[") else [text]
        if len(parts) == 1:
            address, host_port, port = "", "", parts[0]
        elif len(parts) == 2:
            address, (host_port, port) = "", parts
        else:
            address, host_port, port = parts
        found += _expand(address, host_port, port, proto or "tcp")
    return sorted(found)


def _expand(address: str, host_port: str, port: str, proto: str) -> list[str]:
    start, _, end = port.partition("-")
    if not end:
        return [f"{address}:{host_port}:{port}/{proto}"]
    host_start, _, _ = host_port.partition("-")
    ports = range(int(start), int(end) + 1)
    host_ports = (
        [str(int(host_start) + i) for i in range(len(ports))] if host_start else [""] * len(ports)
    )
    return [f"{address}:{h}:{p}/{proto}" for h, p in zip(host_ports, ports, strict=True)]


def _ports(bindings: Any) -> list[str]:
    found: list[str] = []
    for key, targets in (bindings or {}).items() if isinstance(bindings, Mapping) else []:
        port, _, proto = str(key).partition("/")
        for target in targets or [{}]:
            address = str(target.get("HostIp") or "") if isinstance(target, Mapping) else ""
            host_port = str(target.get("HostPort") or "") if isinstance(target, Mapping) else ""
            found.append(f"{address}:{host_port}:{port}/{proto or 'tcp'}")
    return sorted(found)


def _caps(values: Iterable[str]) -> list[str]:
    return sorted({v.upper().removeprefix("CAP_") for v in values})


def _spec_devices(devices: Iterable[str]) -> list[str]:
    found = []
    for device in devices:
        parts = device.split(":")
        host_path = parts[0]
        inside = parts[1] if len(parts) > 1 and parts[1].startswith("/") else host_path
        permissions = parts[-1] if len(parts) > 1 and not parts[-1].startswith("/") else "rwm"
        found.append(f"{host_path}:{inside}:{permissions}")
    return found


def _devices(value: Any) -> list[str]:
    found = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, Mapping):
            found.append(
                f"{item.get('PathOnHost', '')}:{item.get('PathInContainer', '')}:"
                f"{item.get('CgroupPermissions') or 'rwm'}"
            )
    return sorted(found)


# -- the expected version ---------------------------------------------------------------------
def resolve_expected(text: str | None, versions: Sequence[ImageVersion]) -> str | None:
    """The tag ``--expect`` names: a tag, ``IMAGE:TAG``, a git version, or ``latest``.

    ``latest`` is the newest tagged build on the controller, the one ``fleet deploy``
    deploys when it is given no version.
    """
    if text is None:
        return None
    wanted = text.strip()
    known = ", ".join(v.tag for v in versions if v.tagged) or "none"
    if wanted == LATEST:
        for version in versions:
            if version.tagged:
                return version.tag
        raise UsageError(
            "--expect latest: the controller has no build of the framework",
            fix="run 'fleet build' first, or name the version: --expect 0.2.7",
        )
    tag = wanted.rpartition(":")[2] if ":" in wanted else wanted
    for version in versions:
        if tag == version.tag or wanted in (version.reference, version.version):
            return version.tag
    raise UsageError(
        f"--expect {wanted}: the controller never built that version (built: {known})",
        fix="name a version 'fleet images' lists, or --expect latest",
    )


# -- the fleet ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditOptions:
    """What an audit compares against."""

    repository: str
    controller_versions: tuple[ImageVersion, ...] = ()
    expected: str | None = None
    history: int = 1
    timeout: float | None = None


@dataclass(frozen=True)
class AuditReport:
    """Every host's row, with the run's result (outcomes and exit code) and its options."""

    result: FleetResult
    rows: tuple[AuditRow, ...]
    options: AuditOptions
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.interrupted else self.result.exit_code

    def versions(self) -> dict[str, int]:
        """How many reachable hosts run each version ("none": nothing runs)."""
        found = Counter(row.tag or "none" for row in self.rows if row.reachable)
        return dict(sorted(found.items(), key=lambda item: _tag_order(item[0])))

    @property
    def drifted(self) -> tuple[AuditRow, ...]:
        return tuple(r for r in self.rows if r.status in (STATUS_DRIFT, STATUS_ERROR))

    @property
    def unreachable(self) -> tuple[AuditRow, ...]:
        return tuple(r for r in self.rows if r.status == STATUS_UNREACHABLE)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document (see the module docstring)."""
        document = self.result.to_json()
        document["exit_code"] = self.exit_code
        document["audit"] = {
            "repository": self.options.repository,
            "expected": self.options.expected,
            "controller_versions": [v.tag for v in self.options.controller_versions if v.tagged],
            "versions": self.versions(),
            "ok": [r.host for r in self.rows if r.ok],
            "drifted": [r.host for r in self.drifted],
            "unreachable": [r.host for r in self.unreachable],
        }
        return document


def controller_options(
    repository: str,
    *,
    expect: str | None = None,
    history: int = 1,
    timeout: float | None = None,
) -> AuditOptions:
    """The options of an audit against this machine's builds of ``repository``.

    A local engine is asked over its socket directly (:mod:`fleet.images.engine`), another one
    through docker-py (0.2 s to import). ``fleet audit`` calls it on a thread of its own
    while the hosts answer (``audit(..., controller=)``).
    """
    versions = local_versions(repository)
    return AuditOptions(
        repository=repository,
        controller_versions=tuple(versions),
        expected=resolve_expected(expect, versions),
        history=history,
        timeout=timeout,
    )


def local_versions(repository: str) -> list[ImageVersion]:
    """This machine's builds of ``repository``, newest first (see :func:`controller_options`)."""
    from fleet.images import engine
    from fleet.images.store import named_by_config

    summaries = engine.get_json("/images/json", {"filters": framework_filter(repository)})
    info = engine.get_json("/info")
    if summaries is None or not isinstance(info, dict):
        # docker-py is paid for only when a project's settings are read.
        from fleet.images import daemon

        client = daemon.connect()
        return named_by_config(daemon.list_versions(client, repository), client.info())
    return named_by_config(
        newest_first([image_version(repository, summary) for summary in summaries]), info
    )


def audit(
    runner: Runner,
    hosts: Sequence[Host],
    options: AuditOptions,
    *,
    controller: Future[AuditOptions] | None = None,
) -> AuditReport:
    """Audit every host (``runner.forks`` at a time); a host's trouble is a row, not a raise.

    The task asks each host once (:func:`fleet.ops.containers.gather`) and writes nothing: no
    lock is taken, no history line is written. ``controller``, when given, is the options
    still being made (the controller's builds, the expected version: see
    :func:`controller_options`); ``options`` then only says what to ask the hosts
    (repository, history, timeout), and each host's row waits for the rest. What the
    future raises is the audit's error.
    """
    rows: dict[str, AuditRow] = {}

    def complete() -> AuditOptions:
        return controller.result() if controller is not None else options

    def task(ctx: HostContext) -> HostResult:
        facts = containers.gather(
            ctx.transport,
            options.repository,
            history=max(1, options.history),
            timeout=options.timeout,
        )
        final = complete()
        row = audit_host(
            facts,
            final.controller_versions,
            final.expected,
            ctx.host,
            repository=final.repository,
        )
        rows[ctx.name] = row
        if row.ok:
            return ctx.result(Outcome.OK, _summary(row), details=row.to_json())
        return ctx.result(Outcome.FAILED, row.reason_text(), details=row.to_json())

    try:
        result = runner.run("audit", hosts, task)
    except Interrupted as exc:
        done = controller is None or (controller.done() and controller.exception() is None)
        raise AuditInterrupted(
            report_of(exc.partial, complete() if done else options, rows, interrupted=True)
        ) from None
    return report_of(result, complete(), rows)


def report_of(
    result: FleetResult,
    options: AuditOptions,
    rows: Mapping[str, AuditRow],
    *,
    interrupted: bool = False,
) -> AuditReport:
    """The report of a run: each host's row, or one made of how the host failed."""
    ordered: list[AuditRow] = []
    results: list[HostResult] = []
    for ran in result.results:
        row = rows.get(ran.host)
        if row is None or ran.outcome is Outcome.UNREACHABLE:
            reason = ran.reason or str(ran.outcome)
            if ran.outcome is Outcome.UNREACHABLE:
                row = unreachable_row(ran.host, reason, options.expected)
            else:
                row = error_row(ran.host, reason, options.expected)
            ran = replace(ran, details=row.to_json())  # noqa: PLW2901
        ordered.append(row)
        results.append(ran)
    return AuditReport(
        FleetResult(result.command, tuple(results), result.seconds),
        tuple(ordered),
        options,
        interrupted,
    )


# -- CSV ----------------------------------------------------------------------------------
CSV_COLUMNS = (
    "host",
    "status",
    "reasons",
    "tag",
    "version",
    "commit",
    "branch",
    "build_date",
    "dirty",
    "state",
    "health",
    "since",
    "restart_count",
    "image_id",
    "controller_match",
    "expected",
    "other_versions",
    "rollback_to",
    "last_deploy_time",
    "last_deploy_by",
    "last_deploy_action",
    "last_deploy_to",
    "last_deploy_outcome",
    "config_diff",
    "message",
)


def csv_record(row: AuditRow) -> dict[str, str]:
    """One spreadsheet row (every value text; lists joined with spaces)."""
    framework = row.framework
    last = row.last_deploy or {}
    values: dict[str, Any] = {
        "host": row.host,
        "status": row.status,
        "reasons": " ".join(row.codes),
        "expected": row.expected or "",
        "controller_match": row.controller_match or "",
        "other_versions": " ".join(row.other_versions),
        "rollback_to": row.rollback_to or "",
        "last_deploy_time": last.get("time", ""),
        "last_deploy_by": last.get("by", ""),
        "last_deploy_action": last.get("action", ""),
        "last_deploy_to": last.get("to", ""),
        "last_deploy_outcome": last.get("outcome", ""),
        "config_diff": " ".join(d.field for d in row.config_diff),
        "message": row.reason_text(),
    }
    if framework is not None:
        values |= {
            "tag": framework.tag,
            "version": framework.version,
            "commit": framework.commit,
            "branch": framework.branch,
            "build_date": framework.build_date,
            "dirty": "true" if framework.dirty else "false",
            "state": framework.state,
            "health": framework.health,
            "since": framework.since,
            "restart_count": framework.restart_count,
            "image_id": framework.image_id,
        }
    return {column: _csv_text(values.get(column, "")) for column in CSV_COLUMNS}


def _csv_text(value: Any) -> str:
    text = "" if value is None else str(value)
    # A cell starting with = + - @ is a formula to a spreadsheet: host data must stay data.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


# -- small helpers ------------------------------------------------------------------------
def _summary(row: AuditRow) -> str:
    if row.framework is None:
        return "no framework"
    return f"runs {row.framework.tag or '?'}"


def _tag_order(tag: str) -> tuple[tuple[int, int, str], ...]:
    """0.2.9 before 0.2.10, and "none" (nothing runs) last."""
    if tag == "none":
        return ((2, 0, ""),)
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in tag.split("."))


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


def _show(value: Any) -> str:
    if isinstance(value, list):
        return shlex.join(str(v) for v in value) if value else "none"
    if isinstance(value, dict):
        if not value:
            return "none"
        return ",".join(f"{k}={_show_pair(v)}" for k, v in value.items())
    if value is None or value == "":
        return "none"
    return str(value)


def _show_pair(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2:
        return str(value[0]) if value[0] == value[1] else f"{value[0]}:{value[1]}"
    return str(value)


__all__ = [
    "AuditInterrupted",
    "AuditOptions",
    "AuditReport",
    "AuditRow",
    "ConfigDifference",
    "Framework",
    "Reason",
    "audit",
    "audit_host",
    "compare_build",
    "config_differences",
    "controller_options",
    "csv_record",
    "resolve_expected",
]

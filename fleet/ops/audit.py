"""Audit: which framework version each host runs, since when, and whether it drifted.

What a host runs is read from the host itself, in one round trip and without the deploy
lock (:func:`fleet.ops.containers.gather`: containers, images, lock, history, image store):
an audit never writes anything to a host. :func:`fleet.ops.verdict.audit_host` is a pure
function of those facts, the controller's builds (:func:`fleet.images.daemon.list_versions`),
the expected version and the host's settings; it returns one ``AuditRow``.

The verdict of one host, and what drift means, is :mod:`fleet.ops.verdict`.

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

from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet.errors import EXIT_INTERRUPTED, AuditInterrupted, Interrupted, UsageError
from fleet.hosts.model import Host
from fleet.images.labels import ImageVersion, framework_filter, image_version, newest_first
from fleet.ops import containers
from fleet.ops.verdict import (
    STATUS_DRIFT,
    STATUS_ERROR,
    STATUS_UNREACHABLE,
    AuditRow,
    audit_host,
    error_row,
    unreachable_row,
)
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, Runner

if TYPE_CHECKING:
    pass

LATEST = "latest"


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
            return ctx.result(Outcome.OK, _summary(row), payload=row)
        return ctx.result(Outcome.FAILED, row.reason_text(), payload=row)

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
            ran = ran.with_payload(row)  # noqa: PLW2901
        ordered.append(row)
        results.append(ran)
    return AuditReport(
        FleetResult(result.command, tuple(results), result.seconds),
        tuple(ordered),
        options,
        interrupted,
    )


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


__all__ = [
    "AuditOptions",
    "AuditReport",
    "audit",
    "controller_options",
    "report_of",
    "resolve_expected",
]

"""Deploy and roll back the framework on hosts: the labeled run command, gated.

Per host, a deploy is: take the host's deploy lock; read what runs (one round trip); if
the target version already runs healthy, nothing else (``ok``); otherwise stop the other
framework versions (they share the host network's port) and keep them, renamed with their
version, for rollback; start the target with the run command from *its own image's
label* (untrusted: parsed, only ``docker run`` of that image, dangerous flags refused,
per-group/host overrides win); wait until it is healthy. If it is not: stop it, start the
previous version again, and report ``failed`` with "rolled back to VERSION" and the new
container's last log lines. Every deploy, rollback and failure appends one JSON line to
the host's history. Nothing is stopped until the new image is verified on the host (the
transfer of ``fleet push`` runs first), so a failing host keeps what it ran.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fleet.errors import FleetError, HostError, Interrupted, RunSpecError, UsageError, tail_lines
from fleet.hosts.model import Host
from fleet.images.runspec import HealthCheck, RunPolicy, RunSpec, run_spec_for
from fleet.images.spec import Shippable
from fleet.ops import containers, gpu, lock
from fleet.ops.containers import FrameworkContainer, FrameworkImage, HostFramework, previous_version
from fleet.ops.health import Health, wait_healthy
from fleet.ops.history import last_switched_to, record, switch_entry
from fleet.ops.mounts import check_container, check_mounts
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, Runner
from fleet.ship.plan import PushOptions
from fleet.ship.push import push
from fleet.ship.state import engine_fix
from fleet.ssh.base import Transport

_LOG_LINES = 20


# -- options ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DeployOptions:
    """How a rollout runs."""

    repository: str
    serial: str | None = None
    max_fail_percent: float | None = None
    check: bool = False
    wait_lock: float = 0.0
    lock_ttl: float = lock.DEFAULT_TTL
    controller: str = field(default_factory=lock.controller_identity)
    # How the image travels (SSH stream or registry, compression, limits) and how long a
    # host may take to answer: the push step's options, whose dry run is this run's.
    shipping: PushOptions = field(default_factory=PushOptions)
    # GPU jobs in the framework's container: wait this long for them to end (seconds),
    # then skip the host; or interrupt them (force), which the host's history records.
    wait_idle: float = 0.0
    force: bool = False

    @property
    def state_timeout(self) -> float | None:
        """How long a host may take to say what it holds and runs."""
        return self.shipping.state_timeout

    def push_options(self) -> PushOptions:
        """The shipping step's options."""
        return replace(self.shipping, check=self.check)


def batches(hosts: Sequence[Host], serial: str | None) -> list[list[Host]]:
    """Split hosts into rollout batches: ``N`` hosts or ``N%`` of them at a time."""
    if not serial:
        return [list(hosts)] if hosts else []
    text = serial.strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 < percent <= 100:
                raise ValueError
            size = max(1, math.floor(len(hosts) * percent / 100))
        else:
            size = int(text)
            if size < 1:
                raise ValueError
    except ValueError:
        raise UsageError(
            f"--serial {serial!r}: expected a number of hosts (2) or a share (25%)"
        ) from None
    return [list(hosts[i : i + size]) for i in range(0, len(hosts), size)]


# -- one host ---------------------------------------------------------------------------
def run_docker(transport: Transport, *argv: str) -> None:
    transport.run(["docker", *argv], timeout=120)


def _kept_name(name: str, container: FrameworkContainer, suffix: str = "") -> str:
    tag = container.tag or container.id[:12]
    return f"{name}-{tag}{suffix}"


@dataclass(frozen=True)
class Switch:
    """What a switch did on one host: its result's payload (``fleet deploy --json`` details,
    after the shipment's when the image was pushed in the same run)."""

    version_before: str | None
    version_after: str
    health: str | None = None
    would_stop: tuple[str, ...] | None = None  # a dry run's containers to stop
    would_start: str | None = None
    rolled_back: bool | None = None  # a failed switch: was the previous version restored
    unrecorded: Mapping[str, str] = field(default_factory=dict)  # why no history line
    recorded_late: bool = False
    shipped: Mapping[str, Any] = field(default_factory=dict)  # the push's details

    def to_json(self) -> dict[str, Any]:
        own: dict[str, Any] = {
            "version_before": self.version_before,
            "version_after": self.version_after,
            "health": self.health,
            "would_stop": list(self.would_stop) if self.would_stop is not None else None,
            "would_start": self.would_start,
            "rolled_back": self.rolled_back,
        }
        document = {**self.shipped, **{k: v for k, v in own.items() if v is not None}}
        document |= self.unrecorded
        if self.recorded_late:
            document["recorded_late"] = True
        return document


@dataclass(frozen=True)
class Target:
    """The version to run on a host."""

    reference: str
    tag: str
    image_id: str


# How often a host with GPU jobs is asked again under --wait-idle.
_IDLE_POLL = 5.0


@dataclass
class _Switch:
    """One host's switch to ``target``: what was decided before anything is stopped."""

    ctx: HostContext
    state: HostFramework
    target: Target
    image: FrameworkImage
    spec: RunSpec
    policy: RunPolicy
    check: HealthCheck
    name: str
    # A container of the framework's name that fleet did not start: (id, was running).
    unmanaged: tuple[str, bool] | None
    # Container id -> its name on the host, as the switch renames and removes them.
    names: dict[str, str] = field(default_factory=dict)
    # Containers renamed aside to keep them for rollback: id -> kept name.
    renamed: dict[str, str] = field(default_factory=dict)

    @property
    def previous(self) -> FrameworkContainer | None:
        """The version that ran under the framework's name (else any running one)."""
        running = self.state.running
        return next((c for c in running if c.name == self.name), running[0] if running else None)

    def remove_named(self, wanted: str) -> None:
        for ident, current_name in list(self.names.items()):
            if current_name == wanted:
                run_docker(self.ctx.transport, "rm", "-f", ident)
                del self.names[ident]


def switch(
    ctx: HostContext, state: HostFramework, target: Target, options: DeployOptions, action: str
) -> HostResult:
    """Make ``target`` the running framework version on one host (lock held by caller)."""
    plan = _plan_switch(ctx, state, target, options)
    running = state.running
    before = ", ".join(sorted({c.tag or c.image for c in running})) or "none"
    if _already_runs(plan):
        done = Switch(target.tag, target.tag)
        if not options.check and not last_switched_to(state.history, target.tag):
            # A run that started it ended (killed, its host lost) before its history line:
            # the switch happened, and gets its line now, said to be late.
            entry = switch_entry(action, options.controller, None, target, time.monotonic())
            entry.update(outcome="changed", recorded_late=True, seconds=None)
            done = replace(done, unrecorded=record(ctx.transport, entry), recorded_late=True)
        return ctx.result(Outcome.OK, f"{target.tag} already runs", payload=done)
    check_mounts(ctx.transport, ctx.name, plan.spec, plan.policy)
    skipped, interrupted = _gpu_gate(plan, options)
    if skipped is not None:
        return skipped
    if options.check:
        return ctx.result(
            Outcome.CHANGED,
            f"would {action}: {before} -> {target.tag}",
            payload=Switch(
                before,
                target.tag,
                would_stop=tuple(c.name for c in running),
                would_start=plan.name,
            ),
        )
    started = time.monotonic()
    previous = plan.previous
    _stop_and_keep(plan)
    health, error = _start_gated(plan)
    entry = switch_entry(
        action, options.controller, previous.tag if previous else None, target, started, interrupted
    )
    if health.healthy:
        unrecorded = record(ctx.transport, {**entry, "outcome": "changed"})
        note = "; not in the host's history (see details)" if unrecorded else ""
        return ctx.result(
            Outcome.CHANGED,
            f"{before} -> {target.tag}{note}",
            payload=Switch(before, target.tag, health=health.detail, unrecorded=unrecorded),
        )
    logs = ctx.transport.run(["docker", "logs", "--tail", str(_LOG_LINES), plan.name], check=False)
    restored = _restore_previous(plan, previous)
    unrecorded = record(
        ctx.transport,
        {
            **entry,
            "outcome": "failed",
            "reason": health.detail,
            "restored": previous.tag if previous else None,
        },
    )
    evidence = tail_lines((logs.stdout + logs.stderr).strip(), _LOG_LINES)
    reason = f"{target.tag} {error or 'failed its health check'}: {health.detail}; {restored}"
    if evidence:
        reason += f"\n  last log lines of {target.tag}:\n{evidence}"
    return ctx.result(
        Outcome.FAILED,
        reason,
        payload=Switch(
            before,
            previous.tag if previous else "none",
            rolled_back=previous is not None,
            unrecorded=unrecorded,
        ),
    )


def _gpu_gate(
    plan: _Switch, options: DeployOptions
) -> tuple[HostResult | None, list[gpu.GPUProcess]]:
    """A skipped result while GPU jobs run in a container the switch would stop; else None
    and the jobs a forced switch interrupts.

    With ``wait_idle`` the host is polled until its jobs end or that time has passed.
    """
    ids = [c.id for c in plan.state.running]
    if plan.unmanaged is not None and plan.unmanaged[1]:
        ids.append(plan.unmanaged[0])
    if not ids:
        return None, []
    deadline = time.monotonic() + options.wait_idle
    while True:
        found = gpu.processes(plan.ctx.transport, options.state_timeout)
        if found.error and not options.force:
            # A driver that does not answer cannot say that no job runs: never guess.
            return plan.ctx.result(
                Outcome.SKIPPED,
                "cannot tell whether a GPU job runs in the framework's container: "
                f"nvidia-smi failed: {found.error}",
                fix="check the host's NVIDIA driver ('nvidia-smi' there); to switch anyway, "
                "--force (recorded in the host's history)",
            ), []
        busy = found.in_containers(ids)
        if not busy or options.force:
            return None, busy
        left = deadline - time.monotonic()
        if left <= 0:
            break
        plan.ctx.progress(f"waiting for {len(busy)} GPU job(s) to end ({left:.0f}s left)")
        time.sleep(min(_IDLE_POLL, left))
    waited = f" after waiting {options.wait_idle:g}s" if options.wait_idle else ""
    result = plan.ctx.result(
        Outcome.SKIPPED,
        gpu.busy_reason(busy) + waited,
        details={"gpu_processes": [dataclasses.asdict(p) for p in busy]},
        fix="let the job finish, wait for it with --wait-idle DURATION, or interrupt it "
        "with --force (recorded in the host's history)",
    )
    return result, busy


def _plan_switch(
    ctx: HostContext, state: HostFramework, target: Target, options: DeployOptions
) -> _Switch:
    """The run command, name and policies of the switch; refusals before anything stops."""
    image = (
        state.image_by_id(target.image_id) if target.image_id else state.image_by_tag(target.tag)
    )
    if image is None:
        raise HostError(
            ctx.name, f"image {target.reference} is not on the host", fix="fleet push it first"
        )
    spec = run_spec_for(ctx.host, image, target.reference)
    policy = RunPolicy.for_host(ctx.host.vars)  # read by run_spec_for already: valid
    if spec.name is None:
        spec = _named(ctx.name, spec, options.repository.rpartition("/")[2])
    name = spec.name or options.repository
    # Refused before anything is stopped: the old version keeps running.
    unmanaged = _unmanaged(ctx.transport, name, {c.id: c.name for c in state.containers})
    if unmanaged is not None and policy.name != name:
        raise HostError(
            ctx.name,
            f"a container named {name!r} that fleet did not start is on the host, and the "
            f"run command of {target.reference} would replace it; the inventory names no "
            "framework container, so fleet leaves it alone",
            fix=f"if {name!r} is the framework's own hand-started container, set fleet_run.name "
            f"(or fleet_run_overrides.name) to {name} in the inventory and deploy again; "
            "otherwise give the framework its own name (fleet_run.name) and rebuild the image",
        )
    return _Switch(
        ctx,
        state,
        target,
        image,
        spec,
        policy,
        HealthCheck.from_settings(ctx.host.vars),
        name,
        unmanaged,
        names={c.id: c.name for c in state.containers},
    )


def _already_runs(plan: _Switch) -> bool:
    """The target alone runs under the framework's name, and answers its health check."""
    running, target = plan.state.running, plan.target
    current = [
        c
        for c in running
        if c.tag == target.tag and c.image_id == plan.image.id and c.name == plan.name
    ]
    if not (current and len(running) == 1):
        return False
    quick = replace(plan.check, timeout=min(plan.check.timeout, 5.0))
    return wait_healthy(plan.ctx.transport, plan.name, plan.spec, quick).healthy


def _stop_and_keep(plan: _Switch) -> None:
    """Stop every running version and keep each under its version's name, for rollback."""
    transport, name = plan.ctx.transport, plan.name
    # A container of the inventory's name that fleet did not start (the lab's old hand-run
    # script): stopped and kept under another name, like an old version, and restored on
    # failure.
    if plan.unmanaged is not None:
        ident, was_running = plan.unmanaged
        plan.ctx.progress(f"keeping the unmanaged container {name} as {name}-unmanaged")
        if was_running:
            run_docker(transport, "stop", ident)
        plan.remove_named(f"{name}-unmanaged")
        run_docker(transport, "rename", ident, f"{name}-unmanaged")
    # Stop every other version first: they share the host network's port. A kept version
    # must stay stopped: with --restart always, Docker would start it again with the next
    # engine restart or reboot, beside the new one, on its port, with whatever its bind
    # sources name by then. Its policy comes back from its label if it is ever restored.
    for container in plan.state.running:
        plan.ctx.progress(f"stopping {container.name} ({container.tag})")
        run_docker(transport, "update", "--restart", "no", container.id)
        run_docker(transport, "stop", container.id)
    # Keep them for rollback, under their version's name; the name is the new one's.
    for container in plan.state.containers:
        if container.name == name:
            kept_name = _kept_name(name, container)
            plan.remove_named(kept_name)
            run_docker(transport, "rename", container.id, kept_name)
            plan.names[container.id] = plan.renamed[container.id] = kept_name
    # A kept container of the target version is replaced by a fresh one from the label.
    previous = plan.previous
    for ident, current_name in list(plan.names.items()):
        if current_name == f"{name}-{plan.target.tag}" and (
            previous is None or ident != previous.id
        ):
            run_docker(transport, "rm", "-f", ident)
            del plan.names[ident]


def _start_gated(plan: _Switch) -> tuple[Health, str]:
    """Start the target from its run command and wait for its health gate: (health, error)."""
    plan.ctx.progress(f"starting {plan.target.tag}")
    try:
        # Again just before the start: the old version, stopped now, cannot plant a symlink.
        check_mounts(plan.ctx.transport, plan.ctx.name, plan.spec, plan.policy)
        plan.ctx.transport.run(plan.spec.to_argv(plan.target.reference), timeout=120)
        health = wait_healthy(plan.ctx.transport, plan.name, plan.spec, plan.check)
    except HostError as exc:
        return Health(False, exc.reason), exc.reason
    if health.healthy and (plan.spec.runtime == "nvidia" or plan.spec.gpus is not None):
        # Healthy but blind to its GPUs: a failed gate like any other (rolled back).
        seen, detail = gpu.sees_its_gpus(plan.ctx.transport, plan.name, plan.spec.gpus)
        health = Health(seen, f"{health.detail}; {detail}")
        if not seen:
            return health, "does not see its GPUs"
    return health, ""


def _restore_previous(plan: _Switch, previous: FrameworkContainer | None) -> str:
    """Keep the failed target aside and bring back what ran before; what was restored."""
    transport, name = plan.ctx.transport, plan.name
    run_docker_quiet(transport, "stop", name)
    failed_name = f"{name}-{plan.target.tag}-failed"
    run_docker_quiet(transport, "rm", "-f", failed_name)
    run_docker_quiet(transport, "rename", name, failed_name)
    if previous is None and plan.unmanaged is not None:
        ident, was_running = plan.unmanaged
        run_docker_quiet(transport, "rename", ident, name)
        if not was_running:
            return "put the unmanaged container back"
        back = transport.run(["docker", "start", ident], check=False)
        if back.ok:
            return "restarted the unmanaged container"
        return f"could not restart the unmanaged container: {back.stderr.strip()}"
    if previous is None:
        return "nothing ran before"
    if previous.id in plan.renamed:
        run_docker_quiet(transport, "rename", previous.id, name)
    spec = spec_for_container(plan.ctx, plan.state, previous, plan.spec)
    try:
        # Docker resolves its bind sources again now: checked as a fresh deploy would be.
        check_container(transport, plan.ctx.host, previous.id, plan.policy)
    except HostError as exc:
        return f"did not restart {previous.tag}: {exc.reason}"
    run_docker_quiet(transport, "update", "--restart", spec.restart or "no", previous.id)
    back = transport.run(["docker", "start", previous.id], check=False)
    if back.ok:
        restored_health = wait_healthy(transport, previous.id, spec, plan.check)
    else:
        restored_health = Health(False, back.stderr.strip())
    restored = f"rolled back to {previous.tag}"
    if not restored_health.healthy:
        restored += f" (which is not healthy either: {restored_health.detail})"
    return restored


def _named(host: str, spec: RunSpec, name: str) -> RunSpec:
    """``spec`` with the container name ``name`` (when neither label nor inventory names one)."""
    try:
        return spec.with_overrides({"name": name})
    except RunSpecError as exc:
        raise HostError(
            host,
            f"cannot name the container after the repository: {exc.message}",
            fix="set fleet_run.name in the inventory",
        ) from exc


def _unmanaged(
    transport: Transport, name: str, known: Mapping[str, str]
) -> tuple[str, bool] | None:
    """A container named ``name`` that is not one of the framework's: (id, running)."""
    ran = transport.run(
        [
            "docker",
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.Id}} {{.State.Running}}",
            name,
        ],
        check=False,
    )
    ident, _, running = ran.stdout.strip().partition(" ")
    if not ran.ok or not ident or ident in known:
        return None
    return ident, running == "true"


def spec_for_container(
    ctx: HostContext, state: HostFramework, container: FrameworkContainer, fallback: RunSpec
) -> RunSpec:
    """The run spec of a kept container's version (for its health check)."""
    image = state.image_by_tag(container.tag)
    if image is None:
        return fallback
    try:
        return run_spec_for(ctx.host, image, f"{image.tags[0] if image.tags else container.image}")
    except FleetError:
        return fallback


def run_docker_quiet(transport: Transport, *argv: str) -> None:
    transport.run(["docker", *argv], check=False, timeout=120)


def locked(
    ctx: HostContext, what: str, options: DeployOptions, body: Callable[[HostContext], HostResult]
) -> HostResult:
    """``body`` under the host's deploy lock (a dry run takes no lock); every command it
    runs on the host first checks that the lease is still held."""
    if options.check:
        return body(ctx)
    lease = lock.acquire(
        ctx, what, controller=options.controller, wait=options.wait_lock, ttl=options.lock_ttl
    ).start()
    try:
        return body(ctx.guarded(lease.guard))
    finally:
        lease.release()


def gather_state(ctx: HostContext, options: DeployOptions) -> HostFramework:
    state = containers.gather(ctx.transport, options.repository, timeout=options.state_timeout)
    if not state.engine_ok:
        raise HostError(
            ctx.name,
            f"Docker engine not usable: {state.engine_error}",
            fix=engine_fix(state.engine_error),
        )
    return state


def idle_first(runner: Runner, hosts: Sequence[Host], options: DeployOptions) -> list[Host]:
    """``hosts`` with those whose framework runs a GPU job last (a rollout in batches then
    updates idle hosts while the jobs go on; in inventory order otherwise).

    One round trip per host; a host that cannot say counts as idle: its own switch asks
    again, and skips it if it is busy.
    """

    def probe(ctx: HostContext) -> HostResult:
        # The framework's state carries the GPU processes too: one program, one round trip.
        return ctx.result(Outcome.OK, details={"gpu_jobs": len(gather_state(ctx, options).busy)})

    found = runner.run("deploy: which hosts are busy", hosts, probe)
    busy = {r.host for r in found.results if r.details.get("gpu_jobs")}
    return sorted(hosts, key=lambda h: h.name in busy)


# -- the fleet --------------------------------------------------------------------------
def deploy(
    runner: Runner, hosts: Sequence[Host], image: Shippable, options: DeployOptions
) -> FleetResult:
    """Roll ``image`` out in batches: ship it, switch each host, stop when too many fail."""
    started = time.monotonic()
    results: dict[str, HostResult] = {}
    try:
        _rollout(runner, hosts, image, options, results)
    except Interrupted as exc:
        results.update({r.host: r for r in exc.partial.results})
        for host in hosts:
            results.setdefault(
                host.name,
                HostResult(host.name, Outcome.SKIPPED, "interrupted (Ctrl-C) before it started"),
            )
        raise Interrupted(
            FleetResult.of("deploy", (results[h.name] for h in hosts), time.monotonic() - started)
        ) from None
    return FleetResult.of("deploy", (results[h.name] for h in hosts), time.monotonic() - started)


def _rollout(
    runner: Runner,
    hosts: Sequence[Host],
    image: Shippable,
    options: DeployOptions,
    results: dict[str, HostResult],
) -> None:
    spec = image.spec
    tag = spec.ref.rpartition(":")[2]
    stop_reason = ""
    if options.serial and not options.force:
        with runner.phases():
            hosts = idle_first(runner, hosts, options)
    for index, batch in enumerate(batches(hosts, options.serial), start=1):
        if stop_reason:
            for host in batch:
                results[host.name] = HostResult(host.name, Outcome.SKIPPED, stop_reason)
            runner.settle(results[h.name] for h in batch)
            continue
        with runner.phases():
            pushed = push(runner, batch, image, options.push_options())
        ready = [h for h in batch if pushed_ok(pushed, h.name)]
        for row in pushed.results:
            if not row.succeeded:
                results[row.host] = row
        runner.settle(row for row in pushed.results if not row.succeeded)
        id_by_host = {r.host: str(r.details.get("image_id", "")) for r in pushed.results}

        def task(ctx: HostContext, id_by_host: dict[str, str] = id_by_host) -> HostResult:
            def body(ctx: HostContext) -> HostResult:
                if ctx.cancelled:
                    return ctx.result(
                        Outcome.SKIPPED, "interrupted (Ctrl-C) before the switch; nothing changed"
                    )
                state = gather_state(ctx, options)
                here = Target(spec.ref, tag, "" if options.check else id_by_host.get(ctx.name, ""))
                if options.check and state.image_by_tag(tag) is None:
                    return ctx.result(
                        Outcome.CHANGED,
                        f"would ship and start {tag}",
                        payload=Switch(None, tag),
                    )
                return switch(ctx, state, here, options, "deploy")

            return locked(ctx, f"deploy {tag}", options, body)

        switched = runner.run("deploy", ready, task)
        for row in switched.results:
            push_row = next(r for r in pushed.results if r.host == row.host)
            done = row.typed(Switch)
            merged = (
                row.with_payload(replace(done, shipped=push_row.details))
                if done is not None
                else replace(row, details={**push_row.details, **row.details})
            )
            results[row.host] = replace(merged, seconds=row.seconds + push_row.seconds)
        failed = sum(1 for h in batch if not results[h.name].succeeded)
        if (
            options.max_fail_percent is not None
            and batch
            and failed * 100 / len(batch) > options.max_fail_percent
        ):
            stop_reason = (
                f"rollout stopped after batch {index}: {failed}/{len(batch)} hosts failed, "
                f"more than --max-fail {options.max_fail_percent:g}%; this host was left untouched"
            )


def pushed_ok(result: FleetResult, host: str) -> bool:
    row = next((r for r in result.results if r.host == host), None)
    return row is not None and row.succeeded


def rollback(
    runner: Runner, hosts: Sequence[Host], to: str | None, options: DeployOptions
) -> FleetResult:
    """Back to the previous version (from each host's history) or to ``to``."""

    def task(ctx: HostContext) -> HostResult:
        def body(ctx: HostContext) -> HostResult:
            state = gather_state(ctx, options)
            version = to or previous_version(state)
            if version is None:
                return ctx.result(Outcome.SKIPPED, "no previous version recorded on this host")
            image = state.image_by_tag(version)
            if image is None:
                raise HostError(
                    ctx.name,
                    f"version {version} is not on the host",
                    fix="fleet deploy it instead (it ships the image)",
                )
            reference = next(
                (t for t in image.tags if t.endswith(f":{version}")),
                f"{options.repository}:{version}",
            )
            return switch(ctx, state, Target(reference, version, image.id), options, "rollback")

        return locked(ctx, f"rollback to {to or 'previous'}", options, body)

    return runner.run("rollback", hosts, task)

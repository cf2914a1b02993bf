"""Provisioning hosts: plan, apply the needed changes, converge, ship the base image."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import CommandError, UsageError
from fleet.hosts.model import Host
from fleet.images import daemon
from fleet.images.project import Project, load_project
from fleet.images.spec import Shippable
from fleet.ops.provision.cron import label_diff
from fleet.ops.provision.facts import ProvisionFacts, gather
from fleet.ops.provision.plan import Change, install_change, install_plan, plan
from fleet.ops.provision.preflight import missing_docker_users, preflight
from fleet.ops.provision.settings import SCRIPT_DIR, ProvisionSettings
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, Runner
from fleet.ship.codec import Compression
from fleet.ship.plan import PushOptions
from fleet.ship.push import push

# The base image as the controller has it: what push ships.
BaseImage = Shippable


@dataclass(frozen=True)
class ProvisionOptions:
    """How to provision: dry run, diffs, whether to ship the base image, timeouts."""

    check: bool = False
    diff: bool = False
    ship_base: bool = True
    compress: Compression = "auto"
    timeout: float | None = None


def resolve_base_images(
    settings: Mapping[str, ProvisionSettings], project: str | Path = "."
) -> tuple[dict[str, ProvisionSettings], dict[str, BaseImage]]:
    """Each host's base image, found on the controller, before any host is touched.

    A host without ``base_image`` gets the project's base (``fleet_image`` in ``project``).
    Returns the settings with every ``base_image`` filled in, and the images by name; a
    missing image is a :class:`UsageError` naming ``fleet build``.
    """
    resolved = dict(settings)
    named_by: dict[str, list[str]] = {}
    project_settings: Project | None = None
    for name, host_settings in settings.items():
        ref = host_settings.base_image
        if ref is None:
            project_settings = project_settings or load_project(project)
            ref = project_settings.base_reference
            resolved[name] = dataclasses.replace(host_settings, base_image=ref)
            source = project_settings.settings_path or project_settings.root
            named_by.setdefault(ref, []).append(
                f"the project's base image, fleet_image in {source}"
            )
        else:
            named_by.setdefault(ref, []).append(f"fleet_provision.base_image of {name}")
    if not named_by:
        return resolved, {}
    client = daemon.connect()
    found: dict[str, BaseImage] = {}
    for ref, sources in named_by.items():
        if not daemon.has_image(client, ref):
            raise UsageError(
                f"the base image {ref} ({', '.join(dict.fromkeys(sources))}) is not on this "
                "machine: there is nothing to ship",
                fix="build it with 'fleet build' (it builds the base, layers 1-2, first), set "
                "fleet_provision.base_image to an image you have, or pass --skip-base",
            )
        found[ref] = daemon.shippable(client, ref)
    return resolved, found


_SUMMARY = {
    "dir_created": ("created {n} dir{s}", "create {n} dir{s}"),
    "dir_owner_fixed": ("fixed owner of {n} dir{s}", "fix owner of {n} dir{s}"),
    "dir_mode_fixed": ("fixed mode of {n} dir{s}", "fix mode of {n} dir{s}"),
    "script_dir_created": (f"created {SCRIPT_DIR}", f"create {SCRIPT_DIR}"),
    "script_dir_fixed": (f"fixed {SCRIPT_DIR}'s mode", f"fix {SCRIPT_DIR}'s mode"),
    "script_installed": ("installed aicron.sh", "install aicron.sh"),
    "script_updated": ("updated aicron.sh", "update aicron.sh"),
    "script_mode_fixed": ("fixed aicron.sh's mode", "fix aicron.sh's mode"),
    "copy_installed": ("wrote its readable copy", "write its readable copy"),
    "copy_updated": ("rewrote its readable copy", "rewrite its readable copy"),
    "cron_block_added": ("added the cron block", "add the cron block"),
    "cron_block_updated": ("updated the cron block", "update the cron block"),
    "cron_mode_fixed": ("fixed the cron file's mode", "fix the cron file's mode"),
    "service_started": ("started the weights service", "start the weights service"),
    "engine_configured": ("configured the engine (daemon.json)", "configure the engine"),
    "engine_reloaded": ("reloaded the engine", "reload the engine"),
    "packages_installed": ("installed packages", "install packages"),
    "docker_user_added": (
        "added {n} user{s} to the docker group",
        "add {n} user{s} to the docker group",
    ),
    "base_shipped": ("shipped the base image", "ship the base image"),
}


def summarize(kinds: Iterable[str], check: bool) -> str:
    """One line naming what changed (or would), in plan order."""
    counts = Counter(kinds)
    if not counts:
        return "nothing to change"
    phrases = []
    for kind, n in counts.items():
        done, would = _SUMMARY.get(kind, (kind, kind))
        phrases.append((would if check else done).format(n=n, s="" if n == 1 else "s"))
    return ("would " if check else "") + ", ".join(phrases)


def _engine_details(facts: ProvisionFacts) -> dict[str, Any]:
    host = facts.host
    return {
        "engine": host.engine_version or "down",
        "store": host.image_store,
        "docker_root": host.docker_root,
        "runtimes": list(host.runtimes),
        "gpus": len(host.gpus),
        "user": facts.user,
        "disk": {
            "docker_free": host.disk_docker.free if host.disk_docker else None,
            "data_free": facts.data_disk.free if facts.data_disk else None,
        },
    }


def provision_host(
    ctx: HostContext, settings: ProvisionSettings, options: ProvisionOptions
) -> HostResult:
    """Provision one host (everything but the base image); its result."""
    ctx.progress("facts")
    facts = gather(ctx.transport, settings, options.timeout)
    installed, facts, ended = _install_first(ctx, settings, facts, options)
    if ended is not None:
        return ended
    verdict = preflight(settings, facts)
    details: dict[str, Any] = {
        **_engine_details(facts),
        "warnings": [*install_plan(settings, facts).skipped, *verdict.warnings],
        "changes": [c.to_json() for c in installed],
    }
    if verdict.failures:
        return HostResult(
            ctx.name,
            Outcome.FAILED,
            "\n".join(p.message for p in verdict.failures),
            # The recap prints "fix: " before the first; one "fix:" line per problem.
            "\n  fix: ".join(dict.fromkeys(p.fix for p in verdict.failures)),
            details={**details, "problems": [p.to_json() for p in verdict.failures]},
        )
    pending = plan(settings, facts)
    changes = [*installed, *pending]
    details["changes"] = [c.to_json() for c in changes]
    if options.diff:
        details["diff"] = label_diff("".join(c.diff for c in changes), ctx.name)
    kinds = [c.kind for c in changes]
    if options.check or not pending:
        outcome = Outcome.CHANGED if changes else Outcome.OK
        return ctx.result(outcome, summarize(kinds, options.check), details=details)
    failed = _apply(ctx, pending, options)
    if failed is not None:
        done, change, exc = failed
        details["changes"] = [c.to_json() for c in [*installed, *pending[:done]]]
        fix = "look at the evidence above, fix the host, and rerun"
        return _change_failed(ctx, change, exc, details, fix)
    ctx.progress("verifying")
    left = plan(settings, gather(ctx.transport, settings, options.timeout))
    if left:
        return HostResult(
            ctx.name,
            Outcome.FAILED,
            "the host did not converge; still needed after applying: "
            + "; ".join(c.what for c in left),
            "look at the host (the listed items), then rerun",
            details=details,
        )
    return ctx.result(Outcome.CHANGED, summarize(kinds, False), details=details)


def _apply(
    ctx: HostContext, changes: Sequence[Change], options: ProvisionOptions
) -> tuple[int, Change, CommandError] | None:
    """Run each change's commands in order; the first that failed (its index, the change,
    the error), or None."""
    for done, change in enumerate(changes):
        ctx.progress(change.what)
        try:
            for command in change.commands:
                timeout = options.timeout
                if command.timeout is not None:
                    timeout = max(timeout or 0, command.timeout)
                ctx.transport.run(command.argv, stdin=command.stdin, timeout=timeout)
        except CommandError as exc:
            if command.label:  # a long program is shown by what it does, not its text
                exc = CommandError(
                    ctx.name, command.label, exc.returncode, exc.stdout, exc.stderr, fix=exc.fix
                )
            return done, change, exc
    return None


def _change_failed(
    ctx: HostContext, change: Change, exc: CommandError, details: dict[str, Any], fix: str
) -> HostResult:
    """A host whose ``change`` failed: the change and the command's evidence, and the
    command's own fix or ``fix``."""
    return HostResult(
        ctx.name,
        Outcome.FAILED,
        f"{change.what}: {exc.reason}",
        exc.fix or fix,
        details={**details, "failed_change": change.to_json()},
    )


def _install_first(
    ctx: HostContext,
    settings: ProvisionSettings,
    facts: ProvisionFacts,
    options: ProvisionOptions,
) -> tuple[list[Change], ProvisionFacts, HostResult | None]:
    """What the host lacks of ``fleet_provision.install``, installed before anything else
    (the rest needs the engine): the install made (or, under --check, planned), the facts
    after it, and the host's result when it ends here."""
    wanted = install_plan(settings, facts)
    if not wanted.packages:
        return [], facts, None
    if wanted.refused:
        fix = "install them yourself, or take them out of fleet_provision.install"
        return [], facts, ctx.result(Outcome.FAILED, wanted.refused, fix=fix)
    # What would fail the host after the install fails it before.
    missing = missing_docker_users(settings, facts)
    if missing:
        return [], facts, ctx.result(Outcome.FAILED, missing[0].message, fix=missing[0].fix)
    change = install_change(settings, wanted)
    if change is None:
        return [], facts, None
    if options.check:
        if facts.host.engine_ok:
            return [change], facts, None
        # Nothing else can be planned before the engine runs.
        return (
            [change],
            facts,
            ctx.result(
                Outcome.CHANGED,
                f"would {change.what}; the rest is planned once the engine runs",
                details={**_engine_details(facts), "changes": [change.to_json()]},
            ),
        )
    failed = _apply(ctx, [change], options)
    if failed is not None:
        fix = (
            "look at apt's words above, fix the host (network, disk, the dpkg lock's holder), "
            "and rerun"
        )
        return [], facts, _change_failed(ctx, change, failed[2], _engine_details(facts), fix)
    return [change], gather(ctx.transport, settings, options.timeout), None


def with_base(result: HostResult, pushed: HostResult, ref: str, check: bool) -> HostResult:
    """A host's provision result with its base-image shipping merged in."""
    base = {"ref": ref, **pushed.details}
    details = {**result.details, "base_image": base}
    seconds = result.seconds + pushed.seconds
    if not pushed.succeeded:
        return HostResult(
            result.host,
            pushed.outcome,
            f"base image {ref}: {pushed.reason}",
            pushed.fix,
            seconds,
            details,
        )
    if pushed.outcome is not Outcome.CHANGED:
        return dataclasses.replace(result, details=details, seconds=seconds)
    entry = {
        "kind": "base_shipped",
        "target": ref,
        "what": f"ship base image {ref}: {pushed.reason}",
        "why": "missing on the host" if not base.get("layers_present") else "layers missing",
        "commands": ["docker load (only the missing layers)"],
    }
    changes = [*details.get("changes", []), entry]
    details["changes"] = changes
    return HostResult(
        result.host,
        Outcome.CHANGED,
        summarize((c["kind"] for c in changes), check),
        None,
        seconds,
        details,
    )


def provision(
    runner: Runner,
    hosts: Sequence[Host],
    settings: Mapping[str, ProvisionSettings],
    bases: Mapping[str, BaseImage],
    options: ProvisionOptions = ProvisionOptions(),
) -> FleetResult:
    """Provision every host; one result per host, in host order.

    First each host on its own (facts, preflight, plan, changes, verification); then the
    hosts that succeeded get their base image (``settings[host].base_image``, which must be
    a key of ``bases``; None ships nothing), grouped by image and disk reserve (the reserve
    is ``min_free.docker``: left free after loading), through :func:`push`.
    """
    started = time.monotonic()
    with runner.phases():
        first = runner.run(
            "provision", hosts, lambda ctx: provision_host(ctx, settings[ctx.name], options)
        )
    results = {r.host: r for r in first.results}
    groups: dict[tuple[str, int], list[Host]] = {}
    if options.ship_base:
        for host in hosts:
            ref = settings[host.name].base_image
            if ref is not None and results[host.name].succeeded:
                key = (ref, settings[host.name].min_free_docker)
                groups.setdefault(key, []).append(host)
    shipping = {h.name for members in groups.values() for h in members}
    runner.settle(results[h.name] for h in hosts if h.name not in shipping)
    for (ref, reserve), members in groups.items():
        push_options = PushOptions(
            compress=options.compress,
            check=options.check,
            min_free_bytes=reserve,
            state_timeout=options.timeout,
        )
        with runner.phases():
            pushed = push(runner, members, bases[ref], push_options)
        for row in pushed.results:
            results[row.host] = with_base(results[row.host], row, ref, options.check)
        runner.settle(results[h.name] for h in members)
    command = "provision --check" if options.check else "provision"
    return FleetResult.of(command, (results[h.name] for h in hosts), time.monotonic() - started)

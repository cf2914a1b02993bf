"""Prune: remove framework images and stopped containers beyond the newest versions, never
the running one nor the one a rollback would start.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleet.errors import UsageError
from fleet.hosts.model import Host
from fleet.ops.containers import previous_version
from fleet.ops.deploy import DeployOptions, gather_state, locked, run_docker, run_docker_quiet
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, Runner
from fleet.ssh.base import Transport


def prune(runner: Runner, hosts: Sequence[Host], keep: int, options: DeployOptions) -> FleetResult:
    """Remove framework images and stopped containers beyond the ``keep`` newest versions."""
    if keep < 1:
        raise UsageError("--keep must be at least 1")

    def task(ctx: HostContext) -> HostResult:
        def body(ctx: HostContext) -> HostResult:
            state = gather_state(ctx, options)
            protected = {c.tag for c in state.running}
            rollback_to = previous_version(state)
            if rollback_to:
                protected.add(rollback_to)
            newest = [i.tag for i in state.images if i.tag][:keep]
            keep_tags = protected | set(newest)
            doomed_containers = [
                c
                for c in state.containers
                if not c.running and (c.tag not in keep_tags or c.name.endswith("-failed"))
            ]
            doomed_images = [
                i
                for i in state.images
                if i.tag not in keep_tags
                and not any(
                    c.image_id == i.id for c in state.containers if c not in doomed_containers
                )
            ]
            if not doomed_containers and not doomed_images:
                return ctx.result(
                    Outcome.OK, f"nothing to prune (keeping {', '.join(sorted(keep_tags)) or '-'})"
                )
            names = [c.name for c in doomed_containers] + [
                i.tags[0] if i.tags else i.id[:19] for i in doomed_images
            ]
            if options.check:
                return ctx.result(
                    Outcome.CHANGED,
                    f"would remove {', '.join(names)}",
                    details={"would_remove": names},
                )
            before = _free(ctx.transport)
            for container in doomed_containers:
                run_docker(ctx.transport, "rm", container.id)
            for image in doomed_images:
                run_docker_quiet(ctx.transport, "image", "rm", *(image.tags or (image.id,)))
            freed = max(0, _free(ctx.transport) - before)
            return ctx.result(
                Outcome.CHANGED,
                f"removed {', '.join(names)}; freed {freed} bytes",
                details={"removed": names, "bytes_freed": freed, "kept": sorted(keep_tags)},
            )

        return locked(ctx, "prune", options, body)

    return runner.run("prune", hosts, task)


def _free(transport: Transport) -> int:
    ran = transport.run(
        ["sh", "-c", 'df -PB1 "$(docker info --format "{{.DockerRootDir}}")" | tail -n 1'],
        check=False,
    )
    words = ran.stdout.split()
    return int(words[3]) if len(words) >= 4 and words[3].isdigit() else 0

"""``--via registry``: the image is pushed once to a registry, and every host pulls it.

The registry is an existing one, or the controller's own, tunnelled to each host's
loopback (see :mod:`fleet.ship.registry`). Every host pulls by the pushed manifest's
digest, keeping what it has; the pulled image is verified before it is tagged. Planning,
disk checks, verification and results are those of the SSH path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fleet.errors import HostError, RegistryError, tail_lines
from fleet.hosts.model import Host
from fleet.images import daemon
from fleet.images.spec import ImageSpec
from fleet.programs import program
from fleet.results import HostResult, Outcome
from fleet.runner import HostContext, Runner
from fleet.ship import registry
from fleet.ship.bandwidth import Limits, Throttle
from fleet.ship.plan import Plan, PushOptions
from fleet.ship.state import evidence, is_current, state_parts, target_state, verify
from fleet.ssh.base import CommandResult, Transport
from fleet.ssh.base import fix_for as _fix_for

# A pull by digest, then the pulled image as the host has it, so that it is verified before
# it gets its real name, in the same round trip. On the containerd store the pull skips a
# layer whose snapshot exists (one loaded over SSH, say) without its registry blob, and
# Docker then neither lists nor saves the image: ctr fetches the blobs the content store
# lacks, and only those, while the registry is reachable.
# "$3": the tunnelled registry's address on the host, or empty for a registry the host
# reaches with its own credentials. The tunnel's credential comes on stdin, never in argv
# (which other users of the host see) nor in the user's docker config: it lives in a
# private directory (docker's --config, ctr's --hosts-dir) that is removed on exit, and is
# worthless once the tunnel has closed.
PULL_SCRIPT = program("image_pull.sh")


def pull_all(
    runner: Runner,
    todo: Sequence[Host],
    spec: ImageSpec,
    plans: Mapping[str, Plan],
    options: PushOptions,
    limits: Limits,
    publisher: registry.Publisher | None,
) -> list[HostResult]:
    """The registry path: publish once, then every host pulls (``forks`` at a time)."""
    if publisher is None:
        publisher = registry.EnginePublisher(daemon.connect(), options.registry)
    try:
        with publisher.serve() as location:
            published = location.name_for(spec.ref)
            digest = registry.checked_digest(publisher.publish(spec.ref, published), published)

            def task(ctx: HostContext) -> HostResult:
                decided = plans[ctx.name]
                return pull(ctx, spec, location, digest, decided, options, limits.for_host())

            return list(runner.run("push", todo, task).results)
    except RegistryError as exc:
        failed = [
            HostResult(h.name, Outcome.FAILED, f"not pulled: {exc.message}", exc.fix) for h in todo
        ]
        runner.settle(failed)
        return failed


def pull(
    ctx: HostContext,
    spec: ImageSpec,
    location: registry.Location,
    digest: str,
    decided: Plan,
    options: PushOptions,
    throttle: Throttle | None = None,
) -> HostResult:
    """One host pulls the published manifest by its digest, verifies it, then names it.

    What a tag in the registry names is never trusted: the host pulls ``NAME@digest``,
    the image that arrived is checked against ``spec`` (config, layers, listed) and only
    then tagged ``spec.ref``; a mismatch fails the host with the evidence and tags
    nothing. With the controller's registry, the host reaches it through its own end of
    a tunnel (``127.0.0.1:PORT`` on the host, a :class:`registry.Relay` on the controller,
    which asks for its own credential), closed as soon as the pull is done. The pull's
    name is removed whatever happens.
    """
    transport = ctx.transport
    relay, host_port = _open_tunnel(ctx, location, spec, throttle)
    name = location.name_for(spec.ref, host_port, digest)
    failed = True
    try:
        ctx.progress("pulling")
        try:
            ran = transport.run(
                [
                    "sh",
                    "-c",
                    PULL_SCRIPT,
                    "fleet-pull",
                    name,
                    decided.store,
                    f"127.0.0.1:{host_port}" if host_port is not None else "",
                ],
                stdin=f"{relay.credential.basic}\n".encode() if relay is not None else None,
                timeout=options.load_timeout,
                check=False,
            )
        finally:
            if host_port is not None:
                assert isinstance(transport, registry.Forwarding)
                transport.cancel_forward(host_port)
            if relay is not None:
                relay.close()
        _check_pulled(ctx, spec, name, ran)
        transport.run(["docker", "tag", name, spec.ref], timeout=options.state_timeout)
        failed = False
    finally:
        leftover = _remove_tag(transport, name, options.state_timeout)
    if leftover is not None and not failed:
        raise HostError(
            ctx.name,
            f"pulled, but the temporary name {name} could not be removed: {leftover}",
            fix=f"run 'docker rmi {name}' on the host",
        )
    image_id = verify(transport, spec, options.state_timeout)
    layers = len(decided.send)
    details: dict[str, Any] = {
        "via": "registry",
        "registry": location.description,
        "store": decided.store,
        "layers_total": len(spec.diff_ids),
        "layers_present": len(spec.diff_ids) - layers,
        "layers_pulled": layers,
        "bytes_pulled": relay.bytes_out if relay is not None else None,
        "image_id": image_id,
    }
    return ctx.result(
        Outcome.CHANGED,
        f"pulled {layers}/{len(spec.diff_ids)} layers from {location.description}",
        details=details,
    )


def _open_tunnel(
    ctx: HostContext,
    location: registry.Location,
    spec: ImageSpec,
    throttle: Throttle | None,
) -> tuple[registry.Relay | None, int | None]:
    """The host's end of a tunnel to the controller's registry: (relay, host port)."""
    if location.tunnel is None:
        return None, None
    transport = ctx.transport
    if not isinstance(transport, registry.Forwarding):
        raise HostError(
            ctx.name,
            "this connection cannot forward a port to the controller's registry",
            fix="use --via ssh, or --registry URL for a registry the host reaches",
        )
    relay = registry.Relay(location.tunnel, location.repository(spec.ref), throttle)
    try:
        return relay, transport.forward_remote(0, ("127.0.0.1", relay.port))
    except BaseException:
        relay.close()
        raise


def _check_pulled(ctx: HostContext, spec: ImageSpec, name: str, ran: CommandResult) -> None:
    """The pull succeeded and brought ``spec`` itself; otherwise the host fails, untagged."""
    if not ran.ok:
        said = tail_lines(ran.stderr or ran.stdout)
        raise HostError(
            ctx.name,
            f"docker pull {name} failed (exit {ran.exit_code}):\n{said}",
            fix=_fix_for(ran.stderr)
            or "check that the host reaches the registry and may pull from it, then rerun",
        )
    parts = state_parts(ran.stdout)
    pulled = target_state(parts)
    if is_current(spec, pulled):
        return
    reason = f"pulled {name}, but it is not {spec.ref}: {evidence(spec, pulled)}"
    fix = "rerun; if it fails again, the registry holds another image under that digest"
    if parts.get("fetch_rc", ["0"])[:1] != ["0"]:
        said = "\n".join(parts.get("fetch", [])[-5:])
        reason += f"; fetching the missing blobs with ctr failed:\n{said}"
        fix = "use --via ssh for this host (a registry ctr cannot reach or log in to)"
    raise HostError(ctx.name, f"{reason}\nnothing was tagged", fix=fix)


def _remove_tag(transport: Transport, name: str, timeout: float | None) -> str | None:
    """Untag ``name`` on the host; None when it is gone (or was never there), else why not."""
    try:
        ran = transport.run(["docker", "rmi", name], timeout=timeout, check=False)
    except HostError as exc:
        return exc.reason
    if ran.ok or "no such image" in (ran.stderr + ran.stdout).lower():
        return None
    return (ran.stderr or ran.stdout).strip() or f"exit {ran.exit_code}"

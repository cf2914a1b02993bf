"""Ship an image to hosts, sending each host only the layers it lacks.

First every host says what it has (:mod:`fleet.ship.state`, one round trip each) and gets
its plan (:mod:`fleet.ship.plan`). Over SSH, hosts go in waves of at most ``forks``: one
producer per compression in use (:mod:`fleet.ship.stream`) feeds every host of the wave,
and each host's stream goes into its ``docker load``, whose output verifies the image in
the same round trip. ``--via registry`` replaces the stream (:mod:`fleet.ship.pull`).

``--max-rate``: token buckets (:mod:`fleet.ship.bandwidth`), one for the whole run and one
per host, on the bytes that leave the controller for the hosts (compressed, before SSH
framing); on the tunnelled registry path, on what the registry sends each host.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fleet.errors import CommandError, HostError, tail_lines
from fleet.hosts.model import Host
from fleet.images.spec import ImageSpec, Shippable
from fleet.programs import program
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import HostContext, Runner
from fleet.ship import registry
from fleet.ship.bandwidth import Limits
from fleet.ship.codec import WireCompression
from fleet.ship.plan import (
    LOAD_TIMEOUT,
    Plan,
    PushOptions,
    archived_bytes,
    as_stored,
    check_cuda,
    check_options,
    disk_needed,
    plan,
    pull_plan,
    wire_compression,
)
from fleet.ship.pull import pull_all
from fleet.ship.state import engine_fix, held_compressed, read_state, verify
from fleet.ship.stream import Broadcast, Sink
from fleet.units import format_size

_STALL_DEFAULT = 180.0
# docker load, then the target as it now is: the verification costs no extra round trip.
LOAD_SCRIPT = program("image_load.sh")


@dataclass(frozen=True)
class Shipment:
    """What a host's transfer did: its result's payload (``fleet push --json`` details)."""

    store: str
    layers_total: int
    layers_sent: int
    bytes_sent: int
    image_id: str
    # How the layers were read and sent.
    source: str  # the controller's store, or docker save
    missing_bytes: int | None  # None when the image was not read
    compress: WireCompression
    layers_held_compressed: int
    layers_as_stored: int
    source_why: str = ""  # why docker save was read rather than the store

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "store": self.store,
            "layers_total": self.layers_total,
            "layers_present": self.layers_total - self.layers_sent,
            "layers_sent": self.layers_sent,
            "bytes_sent": self.bytes_sent,
            "image_id": self.image_id,
            "missing_bytes": self.missing_bytes,
            "source": self.source,
            "compress": self.compress,
            "layers_held_compressed": self.layers_held_compressed,
            "layers_as_stored": self.layers_as_stored,
        }
        if self.source_why:
            document["source_why"] = self.source_why
        return document


def load(
    ctx: HostContext,
    sink: Sink,
    plan: Plan,
    ref: str,
    timeout: float = LOAD_TIMEOUT,
    stall: float | None = None,
) -> str:
    """Stream a sink into ``docker load`` on the host; a host that stops taking data fails.

    Returns what the host then says of ``ref`` (for :func:`verify`), in the same round trip.
    """
    try:
        ran = ctx.transport.stream(
            ["sh", "-c", LOAD_SCRIPT, "fleet-load", ref, plan.store],
            sink.chunks(),
            timeout=timeout,
            stall_timeout=stall,
        )
    except CommandError as exc:
        said = tail_lines(exc.stderr or exc.stdout)
        full = "no space left on device" in (exc.stderr + exc.stdout).lower()
        raise HostError(
            ctx.name,
            f"docker load of {ref} failed (exit {exc.returncode})"
            f"{': the disk at the Docker root is full' if full else ''}:\n{said}",
            fix="free space on the host (fleet prune, docker system prune) or grow its disk, "
            "then rerun"
            if full
            else exc.fix or "rerun: nothing was tagged, the missing layers are sent again",
        ) from exc
    finally:
        sink.close()
    return ran.stdout


def result_for(ctx: HostContext, shipment: Shipment) -> HostResult:
    outcome = Outcome.CHANGED if shipment.layers_sent or shipment.bytes_sent else Outcome.OK
    reason = (
        f"sent {shipment.layers_sent}/{shipment.layers_total} layers, {shipment.bytes_sent} bytes"
        if outcome is Outcome.CHANGED
        else "image already present"
    )
    if shipment.source_why:
        reason = f"{reason}; read with docker save: {shipment.source_why}"
    return ctx.result(outcome, reason, payload=shipment)


def push(
    runner: Runner,
    hosts: Sequence[Host],
    image: Shippable,
    options: PushOptions = PushOptions(),
    publisher: registry.Publisher | None = None,
) -> FleetResult:
    """Ship ``image`` to every host that lacks it; one result per host, in host order.

    First every host says what it has (one round trip each). Over SSH: in waves of at
    most ``runner.forks`` hosts, one pass over ``docker save`` (per compression) feeds
    every host of the wave its missing layers. Via a registry: the image is published
    once, then every host pulls it. Either way each host's image is verified.
    ``publisher``: how the registry path publishes (default: the controller's engine).
    """
    check_options(options)
    spec = image.spec
    started = time.monotonic()
    plans: dict[str, tuple[Plan, WireCompression]] = {}
    lock = threading.Lock()

    def inspect(ctx: HostContext) -> HostResult:
        result, decided, compress = _inspect(ctx, image, options)
        if decided is not None:
            with lock:
                plans[ctx.name] = (decided, compress)
        return result

    with runner.phases():
        inspected = runner.run("push: inspect", hosts, inspect)
    results = {r.host: r for r in inspected.results}
    command = "push --check" if options.check else "push"
    # Hosts that have the image, or failed to say what they lack, are done.
    runner.settle(r for r in inspected.results if options.check or r.host not in plans)
    if options.check:
        return FleetResult.of(command, inspected.results, time.monotonic() - started)
    todo = [h for h in hosts if h.name in plans]
    limits = Limits(options.max_rate, options.max_rate_per_host)
    decided = {name: plan for name, (plan, _) in plans.items()}
    if not todo:
        shipped: list[HostResult] = []
    elif options.via == "registry":
        shipped = pull_all(runner, todo, spec, decided, options, limits, publisher)
    else:
        compress_of = {name: compress for name, (_, compress) in plans.items()}
        shipped = _send_all(runner, todo, image, decided, compress_of, options, limits)
    for row in shipped:
        results[row.host] = _merge_seconds(results[row.host], row)
    return FleetResult.of(command, (results[h.name] for h in hosts), time.monotonic() - started)


def _inspect(
    ctx: HostContext, image: Shippable, options: PushOptions
) -> tuple[HostResult, Plan | None, WireCompression]:
    """What one host has and needs: (its result, the plan when it lacks layers, compression)."""
    spec, sizes = image.spec, image.sizes
    pulling = options.via == "registry"
    verb = "pull" if pulling else "send"
    state = read_state(ctx.transport, spec.ref, options.state_timeout)
    if not state.engine_ok:
        raise HostError(
            ctx.name,
            f"Docker engine not usable: {state.engine_error}",
            fix=engine_fix(state.engine_error),
        )
    check_cuda(ctx.name, spec, state)
    if pulling:
        decided = pull_plan(ctx.name, spec, state)
    else:
        reuse = held_compressed(ctx.transport, spec, state, options.state_timeout)
        decided = plan(ctx.name, spec, state, reuse)
        decided = replace(
            decided, stored=as_stored(image.blobs, decided.send, state.engine_version)
        )
    needed = disk_needed(sizes, decided.send, decided.store, decided.stored)
    details: dict[str, Any] = {
        "store": decided.store,
        "layers_total": len(spec.diff_ids),
        "layers_present": len(spec.diff_ids) - len(decided.send),
        f"layers_to_{verb}": len(decided.send),
        "layers_held_compressed": len(decided.reuse),
        "layers_as_stored": len(decided.stored),
        f"bytes_to_{verb}": sum(sizes[i] for i in decided.send if i < len(sizes)),
        "disk_needed": needed.total,
    }
    compress = wire_compression(options.compress, state)
    if not pulling:
        details["compress"] = compress
    if decided.up_to_date:
        details["image_id"] = state.target_id
        return ctx.result(Outcome.OK, "image already present", details=details), None, compress
    if state.free_bytes is not None and state.free_bytes - needed.total < options.min_free_bytes:
        reserve = (
            f" plus a reserve of {format_size(options.min_free_bytes)}"
            if options.min_free_bytes
            else ""
        )
        raise HostError(
            ctx.name,
            f"not enough disk at the Docker root ({decided.store} store): needs "
            f"{needed.describe()}{reserve}, has {format_size(state.free_bytes)} free",
            fix="free space on the host (fleet prune, docker system prune) or grow its disk",
        )
    note = decided.reason or f"would {verb} {len(decided.send)}/{len(spec.diff_ids)} layers"
    if pulling:
        note += f" from {options.registry or 'the controller (tunnelled)'}"
    if options.compress == "zstd" and compress != options.compress:
        note += f" ({options.compress} not loadable by Docker {state.engine_version}: {compress})"
    outcome = Outcome.CHANGED if options.check else Outcome.OK
    return ctx.result(outcome, note, details=details), decided, compress


def _send_all(
    runner: Runner,
    todo: Sequence[Host],
    image: Shippable,
    plans: Mapping[str, Plan],
    compress_of: Mapping[str, WireCompression],
    options: PushOptions,
    limits: Limits,
) -> list[HostResult]:
    """The SSH path: waves of hosts, one producer per compression in use."""
    spec = image.spec
    sinks = {
        h.name: Sink(
            h.name,
            plans[h.name].send,
            limits.for_host(),
            plans[h.name].reuse,
            plans[h.name].stored,
            oci=plans[h.name].store == "containerd",
        )
        for h in todo
    }
    # Each knows every host it will feed: what its first wave reads serves the later ones.
    broadcasts = {
        c: Broadcast(
            spec, image.save, c, image.local, [s for s in sinks.values() if s.host in group]
        )
        for c, group in _by_compression(compress_of).items()
    }
    shipped: list[HostResult] = []
    for first in range(0, len(todo), runner.forks):
        wave = todo[first : first + runner.forks]
        more = first + runner.forks < len(todo)
        producers = []
        for compress, broadcast in broadcasts.items():
            group = [sinks[h.name] for h in wave if compress_of[h.name] == compress]
            if group:
                producer = threading.Thread(
                    target=broadcast.run, args=(group,), kwargs={"replay": more}, daemon=True
                )
                producer.start()
                producers.append(producer)

        def ship(ctx: HostContext) -> HostResult:
            sink = sinks[ctx.name]
            broadcast = broadcasts[compress_of[ctx.name]]
            decided = plans[ctx.name]
            # Progress in archive bytes (tars, or blobs as stored) against the layers' sizes.
            total = archived_bytes(image.sizes, decided.send, decided.stored)
            ctx.progress("send", 0, total)
            sink.on_progress = lambda done: ctx.progress("send", done, max(total, done))
            sink.on_end = lambda: ctx.progress("load")
            try:
                loaded = load(ctx, sink, decided, spec.ref, options.load_timeout, _STALL_DEFAULT)
            except HostError:
                if broadcast.error is not None:
                    raise HostError(
                        ctx.name, f"reading the image on the controller failed: {broadcast.error}"
                    ) from broadcast.error
                raise
            if broadcast.error is not None:
                raise HostError(
                    ctx.name, f"reading the image on the controller failed: {broadcast.error}"
                )
            ctx.progress("verify")
            image_id = verify(ctx.transport, spec, options.state_timeout, loaded)
            return result_for(ctx, _shipment(spec, decided, sink, broadcast, image_id))

        shipped += runner.run("push", wave, ship).results
        for producer in producers:
            producer.join(timeout=60)
    return shipped


def _by_compression(
    compress_of: Mapping[str, WireCompression],
) -> dict[WireCompression, set[str]]:
    """The hosts of each compression in use."""
    groups: dict[WireCompression, set[str]] = {}
    for host, compress in sorted(compress_of.items()):
        groups.setdefault(compress, set()).add(host)
    return groups


def _shipment(
    spec: ImageSpec, decided: Plan, sink: Sink, broadcast: Broadcast, image_id: str
) -> Shipment:
    """What a host was sent, and how its layers were read and sent."""
    sizes = broadcast.layer_sizes  # empty when the image was not read
    as_sent = {i: decided.stored[i] for i in sink.stored}  # none after a docker save
    return Shipment(
        store=decided.store,
        layers_total=len(spec.diff_ids),
        layers_sent=len(decided.send),
        bytes_sent=sink.bytes,
        image_id=image_id,
        missing_bytes=archived_bytes(sizes, decided.send, as_sent) if sizes else None,
        source=broadcast.source,
        compress=broadcast.compress,
        layers_held_compressed=len(decided.reuse),
        layers_as_stored=len(sink.stored),
        source_why=broadcast.source_why or "",
    )


def _merge_seconds(inspected: HostResult, shipped: HostResult) -> HostResult:
    return replace(shipped, seconds=inspected.seconds + shipped.seconds)

"""Which layers each host gets, in which compression, and the checks made before a byte ships.

Per host, from what it reported (:mod:`fleet.ship.state`):

- classic store: layer *i* may be left out when the chain ID of layers ``0..i`` is among
  the chains of the host's images (Docker 20.10's ``docker load`` skips every layer whose
  chain exists without opening its file);
- containerd store: layer *i* may be left out only when the host's content store lists a
  blob whose digest is the layer's diff ID (``ctr content ls``): its ``docker load``
  accepts a missing blob only then. A layer it holds only as a registry's compressed blob
  (labelled with the diff ID it unpacks to) is left out too: that host's manifest names the
  blob itself (:func:`fleet.ship.state.held_compressed`). When the content store cannot
  be asked (no ``ctr``, no root), every layer is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from fleet.errors import HostError, UsageError
from fleet.images.labels import cuda_tuple
from fleet.images.spec import ImageSpec
from fleet.images.store import Descriptor
from fleet.ship import registry
from fleet.ship.codec import Compression, WireCompression, zstd_program
from fleet.ship.state import HostImageState, is_current
from fleet.units import format_size

LOAD_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Plan:
    """Which layers one host gets, and why."""

    host: str
    store: str
    up_to_date: bool
    send: frozenset[int]
    reason: str = ""
    # Layers the host holds only as a registry's compressed blob: its manifest names those.
    reuse: Mapping[int, Descriptor] = field(default_factory=dict)
    # Layers of ``send`` that go as the controller's compressed blob, as it is stored.
    stored: Mapping[int, Descriptor] = field(default_factory=dict)


def plan(
    host: str,
    spec: ImageSpec,
    state: HostImageState,
    reuse: Mapping[int, Descriptor] | None = None,
) -> Plan:
    """The layers ``host`` lacks (a pure function of what it reported).

    ``reuse``: on a containerd store, layers it holds only compressed (see
    :func:`fleet.ship.state.held_compressed`): not sent, named by their blob instead.
    """
    if is_current(spec, state):
        return Plan(host, state.store, True, frozenset())
    if state.store == "containerd":
        if state.content is None:
            return Plan(
                host,
                state.store,
                False,
                frozenset(range(len(spec.diff_ids))),
                f"content store not readable ({state.content_error}); sending every layer",
            )
        held = dict(reuse or {})
        send = frozenset(
            i for i, d in enumerate(spec.diff_ids) if d not in state.content and i not in held
        )
        return Plan(host, state.store, False, send, reuse=held)
    chains = spec.chain_ids
    send = frozenset(i for i, c in enumerate(chains) if c not in state.chains)
    return Plan(host, state.store, False, send)


def pull_plan(host: str, spec: ImageSpec, state: HostImageState) -> Plan:
    """The layers a pull from a registry unpacks: those whose chain the host lacks.

    On both stores (measured on the lab: Docker 26.1's containerd store skips the
    download of a layer whose snapshot exists, even when its content store holds the
    layer only uncompressed, as ``docker load`` left it). :func:`pull` then fetches such
    layers' registry blobs too, so on that store the bytes pulled (counted by the relay)
    can exceed these layers: the plan is a lower bound there.
    """
    if is_current(spec, state):
        return Plan(host, state.store, True, frozenset())
    send = frozenset(i for i, c in enumerate(spec.chain_ids) if c not in state.chains)
    return Plan(host, state.store, False, send)


def as_stored(
    blobs: Sequence[Descriptor | None], send: Iterable[int], engine_version: str
) -> dict[int, Descriptor]:
    """The layers of ``send`` a host gets as the controller's stored blob, by index.

    A blob the content store keeps compressed goes as it is (no unpacking, no
    recompression; checked against its digest as it is read) to every engine whose
    ``docker load`` takes its compression: gzip all of them (each layer file of the
    archive is decompressed by both stores' loads), zstd those of :func:`zstd_loads`.
    """
    chosen: dict[int, Descriptor] = {}
    for index in send:
        blob = blobs[index] if index < len(blobs) else None
        if blob is None:
            continue
        if blob.media_type.endswith("zstd") and not zstd_loads(engine_version):
            continue
        chosen[index] = blob
    return chosen


def zstd_loads(engine_version: str) -> bool:
    """Whether an engine's ``docker load`` takes zstd input: Docker 23 and later.

    Measured on the lab: 20.10 fails ("archive/tar: invalid tar header"), 26.1 loads it
    (concatenated frames too). zstd reached ``docker load`` in moby#41759, first
    released in 23.0. An unknown version gets gzip.
    """
    major = engine_version.split(".", 1)[0]
    return major.isdigit() and int(major) >= 23


def wire_compression(requested: Compression, state: HostImageState) -> WireCompression:
    """What a host gets: zstd falls back to gzip for engines that cannot load it.

    ``auto`` (the default): zstd where the host's engine loads it and the controller has
    the ``zstd`` program, gzip elsewhere. zstd compresses on every core of the controller
    and decompresses several times faster than gzip on the host, whose ``docker load``
    shares its cores with the unpacking (figures in the README).
    """
    if requested == "auto":
        requested = "zstd" if zstd_program() is not None else "gzip"
    if requested == "zstd" and not zstd_loads(state.engine_version):
        return "gzip"
    return requested


@dataclass(frozen=True)
class DiskNeed:
    """What a load holds at the Docker root at its peak: each missing layer twice."""

    store: str
    unpacked: int  # the layers unpacked (overlay2 diffs, or containerd's snapshots)
    staged: int  # classic: the archive spooled under <root>/tmp; containerd: the blobs

    @property
    def total(self) -> int:
        return self.staged + self.unpacked

    def describe(self) -> str:
        staged = (
            "the load's spool under <root>/tmp"
            if self.store == "classic"
            else "the content store's blobs"
        )
        return (
            f"{format_size(self.total)} ({format_size(self.staged)} {staged} + "
            f"{format_size(self.unpacked)} unpacked)"
        )


def disk_needed(
    spec_sizes: Sequence[int],
    send: Iterable[int],
    store: str,
    stored: Mapping[int, Descriptor] | None = None,
) -> DiskNeed:
    """What loading the missing layers needs at the Docker root, on the host's store.

    Both stores hold each missing layer twice at the peak, differently: the classic
    store's ``docker load`` spools the archive (whatever compression crossed the wire
    undone) under ``<root>/tmp`` and unpacks from there, freeing the spool afterwards; the
    containerd store keeps each layer's blob in its content store for good, beside the
    unpacked snapshot. A layer sent as its ``stored`` blob is staged compressed, as the
    blob's size; the others as their tar.
    """
    missing = [i for i in send if i < len(spec_sizes)]
    return DiskNeed(
        store,
        unpacked=sum(spec_sizes[i] for i in missing),
        staged=archived_bytes(spec_sizes, missing, stored or {}),
    )


def archived_bytes(
    sizes: Sequence[int], send: Iterable[int], stored: Mapping[int, Descriptor]
) -> int:
    """The bytes of the layers ``send`` in a host's archive: tars at ``sizes``, the layers
    sent as ``stored`` blobs at the blobs' sizes (0 for a layer whose size is unknown)."""
    return sum(stored[i].size if i in stored else sizes[i] if i < len(sizes) else 0 for i in send)


Via = Literal["ssh", "registry"]
VIAS: tuple[Via, ...] = ("ssh", "registry")


def via_of(text: str) -> Via:
    """``text`` as a way to ship; UsageError (exit 5) naming the choices otherwise."""
    for known in VIAS:
        if text == known:
            return known
    raise UsageError(f"--via {text!r}: choose one of {', '.join(VIAS)}")


@dataclass(frozen=True)
class PushOptions:
    """How to push: path, compression, bandwidth, dry run, and the limits of one host.

    ``via``: ``ssh`` streams each host its missing layers; ``registry`` publishes once and
    every host pulls (``registry``: an existing registry's address, or None for the
    controller's own, tunnelled). ``max_rate``/``max_rate_per_host``: bytes per second
    over all hosts / for each host (see the module docstring for what they cap).
    """

    compress: Compression = "auto"
    check: bool = False
    min_free_bytes: int = 0
    load_timeout: float = LOAD_TIMEOUT
    state_timeout: float | None = None
    via: Via = "ssh"
    registry: str | None = None
    max_rate: float | None = None
    max_rate_per_host: float | None = None


def check_options(options: PushOptions) -> None:
    """Refuse options that cannot work together, before any host is touched."""
    if options.registry is not None and options.via != "registry":
        raise UsageError("--registry URL goes with --via registry", fix="add --via registry")
    if options.registry is not None:
        registry.parse_address(options.registry)
    limited = options.max_rate is not None or options.max_rate_per_host is not None
    if limited and options.via == "registry" and options.registry is not None:
        raise UsageError(
            "--max-rate cannot limit hosts that pull from a registry themselves",
            fix="limit the registry's bandwidth there, or use --via ssh, or --via registry "
            "without --registry (the controller's tunnelled registry)",
        )
    for name, rate in (
        ("--max-rate", options.max_rate),
        ("--max-rate-per-host", options.max_rate_per_host),
    ):
        if rate is not None and rate <= 0:
            raise UsageError(f"{name} must be more than 0 bytes per second")
    if options.via == "ssh" and options.compress == "zstd" and zstd_program() is None:
        raise UsageError(
            "--compress zstd needs the zstd program on the controller",
            fix="apt-get install zstd, or use --compress gzip",
        )


def check_cuda(host: str, spec: ImageSpec, state: HostImageState) -> None:
    """Refuse a host whose driver supports an older CUDA than the image needs.

    Before a byte is shipped: such an image would not start its CUDA work there. A host
    without a driver (no nvidia-smi) is provision's concern, not this check's.
    """
    if not spec.cuda or not state.cuda:
        return
    if cuda_tuple(state.cuda) >= cuda_tuple(spec.cuda):
        return
    raise HostError(
        host,
        f"{spec.ref} needs CUDA {spec.cuda}, but the host's driver {state.driver} supports "
        f"CUDA {state.cuda} at most; nothing was shipped",
        fix=f"upgrade the host's NVIDIA driver to one that supports CUDA {spec.cuda} (see "
        "NVIDIA's CUDA compatibility table), or deploy a version built on an older CUDA base",
    )

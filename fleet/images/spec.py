"""What is shipped: an image's name, config digest and layers (:class:`ImageSpec`), and
how the controller reads it (:class:`Shippable`).

No docker-py here: shipping and deploying name these types without loading it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fleet.images.store import ContentStore, Descriptor, LocalLayers


@dataclass(frozen=True)
class ImageSpec:
    """What is shipped: a name, its config digest (the image ID) and its layers."""

    ref: str
    config_digest: str
    diff_ids: tuple[str, ...]
    # The CUDA version it needs of a host's driver ("" when it states none).
    cuda: str = ""

    @property
    def chain_ids(self) -> tuple[str, ...]:
        return chain_ids(self.diff_ids)


def chain_ids(diff_ids: Sequence[str]) -> tuple[str, ...]:
    """The chain ID of each layer prefix, as the classic store names its layers."""
    chains: list[str] = []
    for diff in diff_ids:
        if not chains:
            chains.append(diff)
        else:
            digest = hashlib.sha256(f"{chains[-1]} {diff}".encode()).hexdigest()
            chains.append(f"sha256:{digest}")
    return tuple(chains)


@dataclass(frozen=True)
class Shippable:
    """An image on the controller as :func:`fleet.ship.push.push` ships it."""

    spec: ImageSpec
    sizes: tuple[int, ...]
    save: Callable[[], Iterable[bytes]]
    local: LocalLayers | ContentStore | None = None
    # Per layer, its blob as the controller's content store keeps it compressed (None:
    # only its tar can be sent); empty on a classic store.
    blobs: tuple[Descriptor | None, ...] = ()

"""The controller's Docker engine through docker-py: the one module of fleet that imports it
(the lab's own use aside).

Every function takes a ``docker.DockerClient`` (local, or a build host's relayed socket) and
translates docker-py's errors into :class:`fleet.errors.EngineError` where they are caught.
"""

from __future__ import annotations

import contextlib
import functools
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import docker
import docker.errors

from fleet.errors import EngineError
from fleet.hostoutput import store_of
from fleet.images.labels import (
    ImageVersion,
    framework_filter,
    image_version,
    newest_first,
    required_cuda,
)
from fleet.images.spec import ImageSpec, Shippable, chain_ids
from fleet.images.store import ContentStore, LocalLayers


def connect() -> Any:
    """A ``docker.DockerClient`` for the engine of the environment (DOCKER_HOST or local)."""
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(
            f"cannot reach the Docker engine: {exc}",
            fix="start it (scripts/start-engine.sh), or point DOCKER_HOST at a running engine",
        ) from exc
    return client


def connect_url(base_url: str, *, where: str, fix: str) -> Any:
    """A ``docker.DockerClient`` for the engine at ``base_url`` (e.g. a relayed socket).

    ``where`` names the engine in errors (a build host), ``fix`` says what to do when it
    does not answer.
    """
    try:
        client = docker.DockerClient(base_url=base_url)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"cannot reach the Docker engine of {where}: {exc}", fix=fix) from exc
    return client


def engine_info(client: Any) -> dict[str, Any] | None:
    """The engine's ``docker info``, or None when it does not answer."""
    try:
        info: dict[str, Any] = client.info()
    except (docker.errors.DockerException, OSError):
        return None
    return info


def local_layers(client: Any) -> LocalLayers | None:
    """The engine's classic overlay2 store, when this process can read it."""
    info = engine_info(client)
    return LocalLayers.at(info) if info is not None else None


def image_store(client: Any) -> str:
    """``containerd`` when the engine keeps images in containerd's store, else ``classic``."""
    try:
        info = client.info()
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"cannot read the engine's info: {exc}") from exc
    return store_of(info.get("DriverStatus"))


def layer_chains(client: Any) -> frozenset[str]:
    """The chain IDs of every image's layers: what a classic store's ``docker load`` skips.

    Intermediate images count (their layers are in the store too); an image removed
    between the listing and its inspection (another user's prune) is skipped.
    """
    try:
        ids = client.api.images(all=True, quiet=True)
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"cannot list the engine's images: {exc}") from exc
    chains: set[str] = set()
    for image_id in ids:
        try:
            attrs = client.api.inspect_image(image_id)
        except docker.errors.NotFound:
            continue
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineError(f"cannot inspect the image {image_id}: {exc}") from exc
        chains.update(chain_ids((attrs.get("RootFS") or {}).get("Layers") or []))
    return frozenset(chains)


def find_image(client: Any, reference: str) -> ImageSpec | None:
    """The image named ``reference`` (a name or an ID) as a spec, or None when it is absent."""
    image = inspect_image(client, reference)
    if image is None:
        return None
    return ImageSpec(reference, image.id, image.layers, image.cuda)


def image_parent(client: Any, reference: str) -> str:
    """The image's parent in this engine: set by a local build, empty after a load."""
    image = inspect_image(client, reference)
    return image.parent if image is not None else ""


def tag_image(client: Any, image_id: str, reference: str) -> None:
    """Name ``image_id`` ``reference`` (``docker tag``)."""
    repository, _, tag = reference.rpartition(":")
    try:
        client.api.tag(image_id, repository, tag, force=True)
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"docker tag {image_id[:19]} {reference} failed: {exc}") from exc


def load_stream(client: Any, chunks: Iterable[bytes]) -> list[str]:
    """``docker load`` of a tarball given as a stream; the engine's messages.

    The engine may answer 200 and report the failure inside the stream, or not at all
    (seen on the lab's Docker 20.10 engines): callers verify the image afterwards.
    """
    messages: list[str] = []
    try:
        for item in client.api.load_image(chunks):
            if not isinstance(item, dict):
                continue
            if "error" in item:
                detail = item.get("errorDetail") or {}
                raise EngineError(
                    f"docker load failed: {detail.get('message') or item['error']}",
                    fix="check the engine's free disk (docker system df) and rerun",
                )
            if item.get("stream"):
                messages.append(str(item["stream"]).strip())
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"docker load failed: {exc}") from exc
    return messages


@dataclass(frozen=True)
class EngineImage:
    """An image as the engine inspects it: the fields fleet reads, typed."""

    id: str
    labels: Mapping[str, str]
    layers: tuple[str, ...]  # diff IDs, bottom first
    size: int | None
    parent: str  # set by a local build, empty after a load
    env: tuple[str, ...]

    @property
    def cuda(self) -> str:
        """The CUDA version it needs of a host's driver ("" when it states none)."""
        return required_cuda(self.env, self.labels)


def inspect_image(client: Any, reference: str) -> EngineImage | None:
    """The image named ``reference`` (a name or an ID), or None when the engine has none."""
    try:
        attrs = client.api.inspect_image(reference)
    except docker.errors.ImageNotFound:
        return None
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(
            f"cannot inspect the image {reference}: {exc}",
            fix="check that the Docker engine is running and answers (docker info)",
        ) from exc
    config = attrs.get("Config") or {}
    size = attrs.get("Size")
    return EngineImage(
        id=str(attrs.get("Id", "")),
        labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
        layers=tuple(str(x) for x in (attrs.get("RootFS") or {}).get("Layers") or ()),
        size=int(size) if isinstance(size, int) else None,
        parent=str(attrs.get("Parent") or ""),
        env=tuple(str(x) for x in config.get("Env") or ()),
    )


def list_versions(client: Any, repository: str) -> list[ImageVersion]:
    """The framework images of ``repository`` in the engine, newest first.

    Newest means the highest commit count, then the latest build date. Images whose tag
    moved on to a newer build (``tagged`` False) are listed too, like ``docker images``
    lists dangling images. One API call: the image summaries carry the labels.
    """
    try:
        found = client.api.images(filters=framework_filter(repository))
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(
            f"cannot list the images of {repository}: {exc}",
            fix="check that the Docker engine is running and answers (docker info)",
        ) from exc
    return newest_first([image_version(repository, summary) for summary in found])


def has_image(client: Any, reference: str) -> bool:
    """Whether the engine has an image of that name."""
    return inspect_image(client, reference) is not None


def image_spec(client: Any, reference: str, store: ContentStore | None = None) -> ImageSpec:
    """What ``fleet push`` ships: the image's name, config digest and layers.

    On the classic store the image's ID is its config digest; on the containerd store it is
    its manifest's, and ``store`` (the engine's content store) tells the config's.
    """
    image = inspect_image(client, reference)
    if image is None:
        raise _no_image(reference)
    config_digest = image.id
    if store is not None:
        try:
            config_digest = store.resolve(config_digest, chain_ids(image.layers))
        except (OSError, ValueError) as exc:
            raise EngineError(
                f"cannot read {reference} in the engine's content store: {exc}"
            ) from exc
    return ImageSpec(reference, config_digest, image.layers, image.cuda)


def layer_sizes(client: Any, reference: str, count: int) -> list[int]:
    """Estimated unpacked size of each of the image's ``count`` layers, bottom first.

    From the image's history, which lists empty steps (ENV, LABEL) too, with size 0. Only
    an estimate for disk checks: the exact tar sizes are known once the layers stream.
    """
    try:
        history = client.api.history(reference)
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"cannot read the history of {reference}: {exc}") from exc
    sizes = [int(entry.get("Size") or 0) for entry in reversed(history)]
    non_empty = [s for s in sizes if s > 0]
    if len(non_empty) >= count:
        return non_empty[-count:] if count else []
    return [*([0] * (count - len(non_empty))), *non_empty]


def shippable(client: Any, reference: str) -> Shippable:
    """Everything push needs of ``reference``: its layers, their sizes, how to read them."""
    info = engine_info(client)
    try:
        store = ContentStore.at(info) if info is not None else None
    except OSError as exc:
        # The image's ID is not its config's there: the config is found in its blobs,
        # which docker save gives as the store keeps them (the slow way: every layer).
        store = _saved_copy(client, reference, str(exc))
    spec = image_spec(client, reference, store)
    return Shippable(
        spec=spec,
        sizes=tuple(layer_sizes(client, reference, len(spec.diff_ids))),
        save=functools.partial(save_stream, client, reference),
        local=store if store is not None else LocalLayers.at(info) if info is not None else None,
        blobs=tuple(store.stored(c) for c in spec.chain_ids) if store is not None else (),
    )


def _no_image(reference: str) -> EngineError:
    return EngineError(
        f"no image {reference} on the controller",
        fix="build it first ('fleet build'), or name an existing IMAGE:TAG ('fleet images')",
    )


def _saved_copy(client: Any, reference: str, why: str) -> ContentStore:
    if inspect_image(client, reference) is None:
        raise _no_image(reference)
    try:
        return ContentStore.saved(save_stream(client, reference), why)
    except (OSError, tarfile.TarError) as exc:
        raise EngineError(
            f"cannot ship {reference}: {why}; and copying it with docker save failed: {exc}",
            fix="free space under $TMPDIR for a copy of the image, or run fleet as a user "
            "who may read the engine's containerd directory (FLEET_ENGINE_ROOT names the "
            "engine's root as this machine sees it)",
        ) from exc


def save_stream(client: Any, reference: str, where: str = "the controller") -> Iterator[bytes]:
    """``docker save REFERENCE`` as a stream of chunks, never held whole."""
    try:
        yield from client.api.get_image(reference, chunk_size=1 << 20)
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(f"docker save {reference} failed on {where}: {exc}") from exc


class BuildRefused(Exception):
    """The engine refused a build (a bad Dockerfile, a missing base): its explanation."""

    def __init__(self, explanation: str) -> None:
        super().__init__(explanation)
        self.explanation = explanation


def build_chunks(
    client: Any,
    context: IO[bytes],
    *,
    dockerfile: str,
    reference: str,
    build_args: Mapping[str, str],
    labels: Mapping[str, str],
    nocache: bool,
) -> Iterator[Mapping[str, Any]]:
    """``docker build`` of a gzipped context tar: the engine's decoded progress messages.

    Never pulls (the base comes from the lab's or the operator's engine). The engine's own
    refusal raises :class:`BuildRefused`; a broken engine, :class:`EngineError`.
    """
    try:
        yield from client.api.build(
            fileobj=context,
            custom_context=True,
            encoding="gzip",
            dockerfile=dockerfile,
            tag=reference,
            buildargs=dict(build_args),
            labels=dict(labels) or None,
            nocache=nocache,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
    except docker.errors.APIError as exc:
        raise BuildRefused(str(exc.explanation or exc)) from exc
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineError(
            f"the Docker engine failed while building {reference}: {exc}",
            fix="check that the engine is running and has disk space (docker info)",
        ) from exc


class PushRefused(Exception):
    """A push the engine or the registry refused: its reason, as they said it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def push_as(client: Any, reference: str, name: str) -> str:
    """Push ``reference`` as ``name`` (``docker tag`` then ``docker push``); its digest.

    A tag this function created is removed again; one that existed before is left alone.
    The registry's refusal (reported inside the stream) and the engine's raise
    :class:`PushRefused`.
    """
    repository, _, tag = name.rpartition(":")
    try:
        existed = inspect_image(client, name) is not None
        client.api.tag(reference, repository, tag, force=True)
        try:
            digest = ""
            errors: list[str] = []
            for line in client.api.push(repository, tag=tag, stream=True, decode=True):
                if not isinstance(line, dict):
                    continue
                if line.get("error"):
                    errors.append(str(line.get("error")))
                aux = line.get("aux")
                if isinstance(aux, dict) and aux.get("Digest"):
                    digest = str(aux["Digest"])
            if errors:
                raise PushRefused(errors[-1])
            return digest
        finally:
            if not existed:
                with contextlib.suppress(docker.errors.DockerException, OSError):
                    client.api.remove_image(name, noprune=True)
    except (docker.errors.DockerException, OSError, EngineError) as exc:
        raise PushRefused(str(exc)) from exc

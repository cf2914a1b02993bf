"""What a host's engine holds of one image, asked in one round trip, and its check after a load.

The state program says the engine's version, its image store, the chains of the host's
images (classic store), the blobs of its content store (containerd store, by ``ctr``), the
free disk at the Docker root, the driver's CUDA version and the target image as the host
has it. After a load the same target lines verify the image: ``docker load`` can report
success for an image that is not usable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from fleet.errors import HostError
from fleet.hostoutput import (
    Fact,
    Store,
    engine_answered,
    engine_error,
    gathered,
    parses_host_output,
    sections,
    store_in,
)
from fleet.images.spec import ImageSpec, chain_ids
from fleet.images.store import Descriptor
from fleet.programs import program
from fleet.ssh.base import DOCKER_GROUP_FIX, ENGINE_START_FIX, Transport

# One round trip; "$1" is the image reference, passed as an argument, never interpolated.
# The target image as the host has it; shared by the state script and the load. ``$store``
# says whether the containerd content store holds its manifest (whose config is the ID).
_TARGET_SCRIPT = program("image_target.sh")
# Every docker CLI call costs a Go process start on the host (tens of ms of CPU): on hosts
# that share cores, as a lab's or a busy GPU server's do, that is most of a thin push.
# So one 'docker info' says engine, store and root, and ctr runs on containerd stores only.
STATE_SCRIPT = program("image_state.sh")


@dataclass(frozen=True)
class HostImageState:
    """What a host's engine holds, as far as shipping one image is concerned."""

    engine_ok: bool
    engine_error: str = ""
    engine_version: str = ""
    store: Store = "classic"
    target_id: str = ""
    target_layers: tuple[str, ...] = ()
    target_listed: bool = False
    target_config: str = ""
    chains: frozenset[str] = frozenset()
    content: frozenset[str] | None = None
    content_error: str = ""
    # containerd store: blobs held only compressed (a registry pull's), by the diff ID
    # their labels name, and the manifests that list each such blob as a layer.
    compressed: Mapping[str, str] = field(default_factory=dict)
    manifests_of: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    free_bytes: int | None = None
    # The driver's version and the CUDA it supports, from nvidia-smi ("" without a driver).
    driver: str = ""
    cuda: str = ""


# The layer media types a containerd store may hold (OCI's and Docker's).
LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
)
CONTENT_GET_SCRIPT = program("content_get.sh")


def state_parts(text: str) -> dict[str, list[str]]:
    """The sections of what the state programs print, each line trimmed, blanks dropped."""
    return sections(text, keep_blank=False, strip=True)


@parses_host_output("the host's image state")
def parse_state(text: str) -> HostImageState:
    """A host's image state from the output of :data:`STATE_SCRIPT`."""
    parts = state_parts(gathered(text, "the host's image state"))
    version = engine_answered(parts)
    if version is None:
        return HostImageState(False, engine_error(parts))
    store = store_in(parts.get("store", [])) or "classic"
    chains: set[str] = set()
    for line in parts.get("layers", []):
        try:
            layers = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(layers, list):
            chains.update(chain_ids([str(x) for x in layers]))
    content: frozenset[str] | None = None
    content_error = ""
    content_lines = parts.get("content", [])
    compressed: dict[str, str] = {}
    manifests_of: dict[str, list[str]] = {}
    if parts.get("content_rc", ["1"])[:1] == ["0"]:
        content = frozenset(_content_listing(content_lines, compressed, manifests_of))
    else:
        content_error = " ".join(content_lines[-2:]) or "ctr failed"
    free: int | None = None
    df_words = (parts.get("df") or [""])[-1].split()
    if len(df_words) >= 4 and df_words[3].isdigit():
        free = int(df_words[3])
    return replace(
        target_state(parts),
        engine_version=version,
        store=store,
        chains=frozenset(chains),
        content=content,
        content_error=content_error,
        compressed=compressed,
        manifests_of={k: tuple(v) for k, v in manifests_of.items()},
        free_bytes=free,
        driver=_driver(parts.get("cuda", []))[0],
        cuda=_driver(parts.get("cuda", []))[1],
    )


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _content_listing(
    lines: Sequence[str], compressed: dict[str, str], manifests_of: dict[str, list[str]]
) -> list[str]:
    """The digests of ``ctr content ls`` (with or without its columns); fills in which
    blobs are compressed layers (label ``containerd.io/uncompressed``) and which manifests
    list them (labels ``containerd.io/gc.ref.content.l.N``)."""
    digests = []
    for line in lines:
        digest, _, rest = line.partition("\t")
        if not _DIGEST.fullmatch(digest):
            continue
        digests.append(digest)
        for label in rest.rpartition("\t")[2].split(","):
            key, _, value = label.partition("=")
            if not _DIGEST.fullmatch(value):
                continue
            if key == "containerd.io/uncompressed" and value != digest:
                compressed[value] = digest
            elif key.startswith("containerd.io/gc.ref.content.l."):
                manifests_of.setdefault(value, []).append(digest)
    return digests


def _driver(lines: list[str]) -> tuple[str, str]:
    """(driver, CUDA) from the state program's ``@@cuda`` line; ("", "") when unknown."""
    words = (lines[:1] or [""])[0].split()
    if len(words) == 2 and all(w.replace(".", "").isdigit() for w in words):
        return words[0], words[1]
    return "", ""


def target_state(parts: Mapping[str, list[str]]) -> HostImageState:
    """The target image's part of a state: its ID, layers, listing and manifest's config."""
    target_id = ""
    target_layers: tuple[str, ...] = ()
    for line in parts.get("target", [])[:1]:
        ident, _, layers_json = line.partition(" ")
        try:
            target_layers = tuple(str(x) for x in json.loads(layers_json) or ())
            target_id = ident
        except json.JSONDecodeError:
            pass
    target_config = ""
    manifest_lines = parts.get("target_manifest", [])
    # One line when fleet wrote the manifest; indented over many when a registry did.
    for candidate in [*manifest_lines[:1], "".join(manifest_lines)]:
        try:
            manifest = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(manifest, dict) and isinstance(manifest.get("config"), dict):
            target_config = str(manifest["config"].get("digest", ""))
            break
    return HostImageState(
        engine_ok=True,
        target_id=target_id,
        target_layers=target_layers,
        target_listed=bool(parts.get("listed")),
        target_config=target_config,
    )


STATE: Fact[HostImageState] = Fact(
    "the host's image state", STATE_SCRIPT, parse_state, "fleet-state"
)


def read_state(transport: Transport, ref: str, timeout: float | None = None) -> HostImageState:
    """Ask a host what it holds (one round trip)."""
    return STATE.gather(transport, ref, timeout=timeout)


def verify(
    transport: Transport, spec: ImageSpec, timeout: float | None = None, loaded: str | None = None
) -> str:
    """Check the host's image after a load; its ID, or HostError with the evidence.

    ``loaded``: what :func:`load` printed, which already says how the target is now;
    without it the host is asked.
    """
    if loaded is not None:
        state = target_state(state_parts(loaded))
    else:
        state = read_state(transport, spec.ref, timeout)
    if is_current(spec, state):
        return state.target_id
    raise HostError(
        transport.host,
        f"image {spec.ref} did not verify after loading: {evidence(spec, state)}",
        fix="rerun: the missing layers are sent again",
    )


def evidence(spec: ImageSpec, state: HostImageState) -> str:
    """How the host's image differs from ``spec``."""
    return (
        f"expected config {spec.config_digest[:19]} with {len(spec.diff_ids)} layers; "
        f"host has ID {state.target_id[:19] or 'none'} with {len(state.target_layers)} layers"
        f"{'' if state.target_listed else ', not listed by docker image ls'}"
    )


def engine_fix(error: str) -> str:
    """The fix for an engine that does not answer, from what ``docker info`` said (its
    fixes are those of :func:`fleet.ssh.base.fix_for`, read more broadly: every error here
    is the engine's, so a bare "permission denied" is the socket's and "not found" docker's)."""
    text = error.lower()
    if "permission denied" in text:
        return DOCKER_GROUP_FIX
    if "command not found" in text or ("not found" in text and "docker" in text):
        return "install Docker on the host (fleet provision checks this)"
    return f"{ENGINE_START_FIX} and check 'docker info' there"


def held_compressed(
    transport: Transport, spec: ImageSpec, state: HostImageState, timeout: float | None = None
) -> dict[int, Descriptor]:
    """The layers a containerd host holds only as a registry's compressed blob, by index.

    Its ``docker load`` takes a manifest that names such a blob (its unpacked snapshot is
    there too), so those layers need not travel again. The blobs' exact descriptors come
    from the host's own manifests that list them (one round trip, only when there are
    such layers); a layer whose descriptor cannot be read is simply sent.
    """
    if state.store != "containerd" or state.content is None:
        return {}
    wanted = {
        i: state.compressed[d]
        for i, d in enumerate(spec.diff_ids)
        if d not in state.content and d in state.compressed
    }
    manifests = sorted(
        {state.manifests_of[b][0] for b in wanted.values() if state.manifests_of.get(b)}
    )
    if not manifests:
        return {}
    ran = transport.run(
        ["sh", "-c", CONTENT_GET_SCRIPT, "fleet-content", *manifests], timeout=timeout, check=False
    )
    found = _descriptors(gathered(ran.stdout, "the host's manifests"))
    return {i: found[blob] for i, blob in wanted.items() if blob in found}


def _descriptors(text: str) -> dict[str, Descriptor]:
    """Layer descriptors from the manifests :data:`CONTENT_GET_SCRIPT` printed, checked."""
    found: dict[str, Descriptor] = {}
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            layers = json.loads(line).get("layers")
        except (json.JSONDecodeError, AttributeError):
            continue
        for layer in layers if isinstance(layers, list) else []:
            if not isinstance(layer, dict):
                continue
            media, digest, size = layer.get("mediaType"), layer.get("digest"), layer.get("size")
            if (
                media in LAYER_TYPES
                and isinstance(digest, str)
                and _DIGEST.fullmatch(digest)
                and isinstance(size, int)
                and not isinstance(size, bool)
                and size >= 0
            ):
                found[digest] = Descriptor(media, digest, size)
    return found


def is_current(spec: ImageSpec, state: HostImageState) -> bool:
    """Whether the host already has exactly this image under its name.

    The classic store's image ID is the config digest; the containerd store's is the
    digest of a manifest, whose config the host's content store tells.
    """
    if not state.target_listed or state.target_layers != spec.diff_ids:
        return False
    return spec.config_digest in (state.target_id, state.target_config)

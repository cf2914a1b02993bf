"""The apt repositories provisioning adds (``nvidia_repository``, ``docker_repository``):
their settings read and checked, each key read from the file the inventory names (exit 4).
fleet never fetches a key: the operator checks its fingerprint once and names the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import ProvisionSettingsError
from fleet.hosts.safe_yaml import type_name
from fleet.ops.provision.packages import DOCKER_DEFAULT_URL, NVIDIA_DEFAULT_URL, AptRepository

_URL = re.compile(r"(https?|file)://[^\s\[\]]+|file:/[^\s\[\]]+")


@dataclass(frozen=True)
class Source:
    """What an apt repository setting defaults to, and how to get its key."""

    setting: str
    name: str
    url: str
    suite: str
    components: tuple[str, ...]
    wanted_by: str
    how: str


NVIDIA = Source(
    "nvidia_repository",
    "nvidia-container-toolkit",
    NVIDIA_DEFAULT_URL,
    "/",
    (),
    "install lists nvidia_toolkit",
    "get NVIDIA's key once (curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey "
    "> nvidia-container-toolkit.asc), check its fingerprint against NVIDIA's install guide, "
    "and name the file: nvidia_repository: {key: path/to/nvidia-container-toolkit.asc}",
)


DOCKER = Source(
    "docker_repository",
    "docker",
    DOCKER_DEFAULT_URL,
    "{codename}",
    ("stable",),
    "engine_package is docker-ce",
    "get Docker's key once (curl -fsSL https://download.docker.com/linux/debian/gpg > "
    "docker.asc), check its fingerprint against Docker's install guide, and name the file: "
    "docker_repository: {key: path/to/docker.asc}",
)


def read(entry: tuple[Any, str], wanted: bool, of: Source) -> AptRepository | None:
    """``{url, key}``: where packages come from (the URL may name ``{distribution}`` and
    ``{codename}``, the host's own)."""
    value, where = entry
    how = of.how
    if value is None:
        if wanted:
            raise ProvisionSettingsError(
                f"{where}: {of.wanted_by}, but no signing key is given: fleet never fetches "
                "a repository's key unchecked",
                fix=how,
            )
        return None
    if not isinstance(value, Mapping):
        raise ProvisionSettingsError(
            f"{where}: expected {{url, key}}, got {type_name(value)}", fix=how
        )
    unknown = sorted(set(map(str, value)) - {"url", "key"})
    if unknown:
        raise ProvisionSettingsError(f"{where}.{unknown[0]}: unknown setting", fix="use url, key")
    url = str(value.get("url") or of.url)
    plain = url.replace("{distribution}", "x").replace("{codename}", "x")
    if "{" in plain or "}" in plain or not _URL.fullmatch(plain):
        raise ProvisionSettingsError(
            f"{where}.url: {url!r} is not an http(s) or file URL", fix=f"e.g. {of.url}"
        )
    key_path = value.get("key")
    if not isinstance(key_path, str) or not key_path:
        raise ProvisionSettingsError(
            f"{where}.key: the repository's signing key is needed", fix=how
        )
    try:
        key = Path(key_path).expanduser().read_bytes()
    except OSError as exc:
        raise ProvisionSettingsError(
            f"{where}.key: cannot read {key_path}: {exc.strerror}", fix=how
        ) from None
    armored = key.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    # A binary OpenPGP public key packet starts with tag 6 (old or new format).
    if not armored and (not key or key[0] not in (0x98, 0x99, 0x9A, 0xC6)):
        raise ProvisionSettingsError(
            f"{where}.key: {key_path} is not an OpenPGP public key (armored or binary)", fix=how
        )
    return AptRepository(of.name, url, key, armored, of.suite, of.components)

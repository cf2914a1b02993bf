"""The apt repositories provisioning adds (``nvidia_repository``, ``docker_repository``):
their settings read and checked, each key read from the file the inventory names (exit 4).
fleet never fetches a key: the operator names the file, and with ``fingerprint`` the
fingerprint its publisher prints, which fleet checks the file's primary key against.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
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
    "and name the file and the fingerprint: nvidia_repository: {key: "
    "path/to/nvidia-container-toolkit.asc, fingerprint: ...}",
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
    "docker_repository: {key: path/to/docker.asc, fingerprint: ...}",
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
    unknown = sorted(set(map(str, value)) - {"url", "key", "fingerprint"})
    if unknown:
        raise ProvisionSettingsError(
            f"{where}.{unknown[0]}: unknown setting", fix="use url, key, fingerprint"
        )
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
    if value.get("fingerprint") is not None:
        _check_fingerprint(key, value["fingerprint"], f"{where}.fingerprint", key_path)
    return AptRepository(of.name, url, key, armored, of.suite, of.components)


_HEX_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")


def _check_fingerprint(key: bytes, given: Any, where: str, key_path: str) -> None:
    """The key file's primary key is the one whose fingerprint the inventory gives."""
    wanted = re.sub(r"\s+", "", str(given)).upper()
    if not _HEX_FINGERPRINT.fullmatch(wanted):
        raise ProvisionSettingsError(
            f"{where}: {given!r} is not an OpenPGP fingerprint (40 or 64 hex digits)",
            fix="copy it from the publisher's install guide, spaces allowed",
        )
    try:
        found = fingerprint(key)
    except ValueError as exc:
        raise ProvisionSettingsError(
            f"{where}: cannot read the key in {key_path}: {exc}",
            fix="name the key file the publisher serves (armored or binary)",
        ) from None
    if found != wanted:
        raise ProvisionSettingsError(
            f"{where}: the key in {key_path} has fingerprint {found}, not {wanted}: it is "
            "not the key you checked",
            fix="get the publisher's key again and compare its fingerprint before using it",
        )


def fingerprint(key: bytes) -> str:
    """The fingerprint of the first (primary) public key in an OpenPGP key file, in
    uppercase hex: SHA-1 for version 4 keys, SHA-256 for versions 5 and 6 (RFC 9580)."""
    data = _dearmored(key) if key.lstrip().startswith(b"-----BEGIN PGP") else key
    tag, body = _first_packet(data)
    if tag != 6 or not body:
        raise ValueError("it does not start with a public key packet")
    if body[0] == 4:
        framed = b"\x99" + len(body).to_bytes(2, "big") + body
        return hashlib.sha1(framed, usedforsecurity=False).hexdigest().upper()
    if body[0] in (5, 6):
        prefix = b"\x9a" if body[0] == 5 else b"\x9b"
        return hashlib.sha256(prefix + len(body).to_bytes(4, "big") + body).hexdigest().upper()
    raise ValueError(f"a version {body[0]} key, which fleet does not read")


def _dearmored(text: bytes) -> bytes:
    """The bytes in ASCII armor: its base64 lines, after the armor headers (``Comment:
    ...``) and before the checksum line."""
    lines = text.decode("ascii", "replace").splitlines()
    begin = next((i for i, line in enumerate(lines) if line.startswith("-----BEGIN PGP")), -1)
    body: list[str] = []
    for line in lines[begin + 1 :]:
        if line.startswith(("=", "-----END")):
            break
        if body or (line.strip() and not _ARMOR_HEADER.match(line)):
            body.append(line.strip())
    try:
        return base64.b64decode("".join(body), validate=True)
    except binascii.Error:
        raise ValueError("its armor is not base64") from None


_ARMOR_HEADER = re.compile(r"[A-Za-z][\w-]*: ")


def _first_packet(data: bytes) -> tuple[int, bytes]:
    """The first OpenPGP packet's tag and body (both header formats, RFC 9580 4.2)."""
    if not data or not data[0] & 0x80:
        raise ValueError("it is not OpenPGP data")
    head = data[0]
    if head & 0x40:  # the new format: the tag in 6 bits, then a variable length
        tag, first = head & 0x3F, data[1] if len(data) > 1 else 0
        if first < 192:
            start, length = 2, first
        elif first < 224:
            start, length = 3, ((first - 192) << 8) + (data[2] if len(data) > 2 else 0) + 192
        elif first == 255:
            start, length = 6, int.from_bytes(data[2:6], "big")
        else:
            raise ValueError("its first packet has a partial length, which keys never have")
    else:  # the old format: the tag in 4 bits, the length's size in 2
        tag, size = (head >> 2) & 0x0F, head & 0x03
        if size == 3:
            raise ValueError("its first packet has no length")
        start = 1 + (1, 2, 4)[size]
        length = int.from_bytes(data[1:start], "big")
    body = data[start : start + length]
    if len(body) != length:
        raise ValueError("it ends inside its first packet")
    return tag, body

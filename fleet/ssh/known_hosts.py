"""Host keys: the known_hosts files of a run, each host verified against its own files only.

Parsing known_hosts is slow (and quadratic in paramiko for large files), so each file is
parsed once per run and shared between threads; additions (accept-new) are written under
one lock, since concurrent writers of one file would overwrite each other's lines.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from fleet.errors import HostKeyError
from fleet.ssh.endpoint import USER_KNOWN_HOSTS, Endpoint


@dataclass(frozen=True)
class Markers:
    """What a known_hosts file says besides plain keys: revoked keys, CA lines seen."""

    revoked: frozenset[bytes] = frozenset()
    authorities: int = 0


def _load(keys: paramiko.HostKeys, path: Path) -> Markers:
    """Plain lines of ``path`` into ``keys``; ``@revoked`` keys and ``@cert-authority``
    lines apart. A line paramiko cannot read (paramiko raises on some, e.g. a marker) is
    skipped, as OpenSSH skips it."""
    revoked: set[bytes] = set()
    authorities = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        marker, _, rest = text.partition(" ") if text.startswith("@") else ("", "", text)
        entry = _entry(rest.strip())
        if marker == "@revoked" and entry is not None:
            revoked.add(entry.key.asbytes())  # revoked for every host, whatever it names
        elif marker == "@cert-authority":
            authorities += 1
        elif not marker and entry is not None:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    return Markers(frozenset(revoked), authorities)


def _entry(line: str) -> paramiko.hostkeys.HostKeyEntry | None:
    try:
        return paramiko.hostkeys.HostKeyEntry.from_line(line)
    except (paramiko.SSHException, paramiko.hostkeys.InvalidHostKey, ValueError, TypeError):
        return None


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class KnownHosts:
    """The known_hosts files of one run: each parsed once, shared, and written under a lock.

    Each host is verified against its own files only: its endpoint's
    ``known_hosts_files`` (which :func:`fleet.ssh.endpoint.resolve` ends with the user's
    ``~/.ssh/known_hosts``, as OpenSSH's default ``UserKnownHostsFile``), exactly the files
    the OpenSSH transport passes for it. So a key recorded in one host's file (a lab's, a
    group's ``fleet_known_hosts``) never vouches for a host that does not list that file,
    whatever else this run has read. ``files``: for an endpoint that names none (without
    them, ``~/.ssh/known_hosts``). A key is accepted when any of the host's files records
    it under the host's name; accept-new writes to the host's first file, as OpenSSH does.
    """

    def __init__(self, files: Iterable[str | Path] = (), *, accept_new: bool = False) -> None:
        self.accept_new = accept_new
        self._lock = threading.Lock()
        self._default = tuple(str(path) for path in files)
        self._parsed: dict[Path, paramiko.HostKeys] = {}
        self._markers: dict[Path, Markers] = {}
        self.accepted: list[tuple[str, str]] = []

    @property
    def parsed(self) -> list[Path]:
        """The files this run has read so far, each once."""
        with self._lock:
            return list(self._parsed)

    def files_for(self, endpoint: Endpoint) -> list[Path]:
        """The files ``endpoint`` is verified against, in order, without repeats."""
        named = endpoint.known_hosts_files or self._default or (USER_KNOWN_HOSTS,)
        return list(dict.fromkeys(Path(os.path.expanduser(p)).resolve() for p in named))

    def _keys(self, path: Path) -> paramiko.HostKeys:
        """``path`` parsed, the first time it is asked for (call with the lock held)."""
        keys = self._parsed.get(path)
        if keys is None:
            keys = paramiko.HostKeys()
            if path.is_file():
                self._markers[path] = _load(keys, path)
            self._parsed[path] = keys
        return keys

    def _marks(self, path: Path) -> Markers:
        self._keys(path)
        return self._markers.get(path, Markers())

    def verify(self, endpoint: Endpoint, key: paramiko.PKey) -> None:
        """Accept ``key`` for ``endpoint``, or raise :class:`HostKeyError` with evidence."""
        name = endpoint.known_hosts_name
        files = self.files_for(endpoint)
        with self._lock:
            recorded: list[tuple[Path, paramiko.PKey]] = []
            for path in files:
                found = self._keys(path).lookup(name)
                recorded += [(path, k) for k in (found or {}).values()]
            revoked = [p for p in files if key.asbytes() in self._marks(p).revoked]
            if revoked:
                raise HostKeyError(
                    endpoint.name,
                    f"host {name} offered {key.get_name()} {fingerprint(key)}, a key marked "
                    f"@revoked in {revoked[0]}; refusing to connect",
                    fix="the key was revoked on purpose: give the host a new key and record "
                    "that one",
                )
            if any(k == key for _, k in recorded):
                return
            authorities = [p for p in files if self._marks(p).authorities]
            if not recorded and authorities:
                raise HostKeyError(
                    endpoint.name,
                    f"no plain host key for {name} is recorded, and fleet does not verify "
                    f"host certificates (the @cert-authority lines of {authorities[0]}); "
                    "refusing to connect",
                    fix=f"record the host's own key (ssh-keyscan {shlex.quote(name)}, checked "
                    "against the host's fingerprint) in its known_hosts file",
                )
            same_type = [(p, k) for p, k in recorded if k.get_name() == key.get_name()]
            if same_type:
                path, expected = same_type[0]
                raise HostKeyError(
                    endpoint.name,
                    f"host key for {name} CHANGED: recorded {fingerprint(expected)} in {path}, "
                    f"offered {fingerprint(key)} ({key.get_name()}); refusing to connect",
                    fix=f"if the host was really reinstalled, remove its line with "
                    f"'ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(str(path))}' "
                    "and connect again",
                )
            if recorded:
                # A key of another type is recorded: a downgrade or an attack, never a new host.
                listed = ", ".join(f"{k.get_name()} {fingerprint(k)}" for _, k in recorded)
                raise HostKeyError(
                    endpoint.name,
                    f"host {name} offered a {key.get_name()} key {fingerprint(key)}, but only "
                    f"{listed} is recorded; refusing to connect",
                    fix=f"check the host; if it was reinstalled, 'ssh-keygen -R {shlex.quote(name)}'",
                )
            if not self.accept_new:
                raise HostKeyError(
                    endpoint.name,
                    f"unknown host key for {name}: {key.get_name()} {fingerprint(key)} "
                    f"(not in {', '.join(str(p) for p in files)})",
                    fix="verify the fingerprint, then rerun with --accept-new-host-keys "
                    "(records it, like OpenSSH's StrictHostKeyChecking=accept-new)",
                )
            target = files[0]
            self._keys(target).add(name, key.get_name(), key)
            self.accepted.append((name, fingerprint(key)))
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with target.open("a", encoding="ascii") as handle:
                handle.write(f"{name} {key.get_name()} {key.get_base64()}\n")

"""Where and as whom to reach a host: its :class:`Endpoint`, resolved from inventory variables.

Resolution follows OpenSSH under Ansible: inventory variables win over ``~/.ssh/config``,
which wins over the defaults. This module needs no SSH library (the CLI's read-only
commands import it without paramiko); ssh config entries come in through ``lookup``, a
function of a host name to its config entry (``paramiko.SSHConfig.lookup``, which
:func:`fleet.ssh.paramiko_client.endpoint_for` passes).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fleet.errors import UnreachableError

DEFAULT_CONNECT_TIMEOUT = 10.0
USER_KNOWN_HOSTS = "~/.ssh/known_hosts"

# A host name -> its ssh config entry (keys lower case, as paramiko.SSHConfig.lookup gives).
ConfigLookup = Callable[[str], Mapping[str, Any]]


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect: the resolved connection settings of one host."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_files: tuple[str, ...] = ()
    known_hosts_files: tuple[str, ...] = ()
    jump: Endpoint | None = None
    become: bool = False
    become_user: str | None = None
    # sudo's password: answered over the channel (fleet.ssh.become), never shown or compared.
    become_password: str | None = field(default=None, repr=False, compare=False)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    command_timeout: float | None = None

    @property
    def known_hosts_name(self) -> str:
        """The name this endpoint has in a known_hosts file, as OpenSSH writes it."""
        if self.port == 22:
            return self.address
        return f"[{self.address}]:{self.port}"


# Ansible's names for sudo's password, newest first.
BECOME_PASSWORD_VARS = ("ansible_become_password", "ansible_become_pass", "ansible_sudo_pass")


def command_line(endpoint: Endpoint, argv: Sequence[str]) -> str:
    """The remote command line for ``argv``: quoted, under ``sudo -n`` when becoming.

    With a become password the SSH client wraps ``argv`` itself (fleet.ssh.become).
    """
    if not argv:
        raise ValueError("empty command")
    words = list(argv)
    if endpoint.become:
        prefix = ["sudo", "-n", "-H"]
        if endpoint.become_user:
            prefix += ["-u", endpoint.become_user]
        words = [*prefix, "--", *words]
    return shlex.join(words)


@dataclass
class SSHOptions:
    """Options found in ``ansible_ssh_common_args`` that fleet honours."""

    proxy_jump: str | None = None
    known_hosts_files: list[str] = field(default_factory=list)
    identity_files: list[str] = field(default_factory=list)


def parse_ssh_args(args: str | None) -> SSHOptions:
    """Read ``-o Key=Value``, ``-J jump`` and ``-i file`` from ssh arguments (as Ansible passes)."""
    options = SSHOptions()
    if not args:
        return options
    words: Iterator[str] = iter(shlex.split(args))
    for word in words:
        value: str | None
        if word in ("-o", "-J", "-i"):
            value = next(words, None)
            flag = word
        elif word.startswith(("-o", "-J", "-i")) and len(word) > 2:
            flag, value = word[:2], word[2:]
        else:
            continue
        if value is None:
            break
        if flag == "-J":
            options.proxy_jump = value
        elif flag == "-i":
            options.identity_files.append(value)
        else:
            key, _, val = value.replace("=", " ", 1).partition(" ")
            key = key.strip().lower()
            val = val.strip()
            if key == "proxyjump":
                options.proxy_jump = val
            elif key == "userknownhostsfile":
                options.known_hosts_files.extend(val.split())
            elif key == "identityfile":
                options.identity_files.append(val)
    return options


def no_config(host: str) -> Mapping[str, Any]:
    """The ssh config entry of a host when there is no ssh config: nothing."""
    return {}


def _jump_endpoint(spec: str, lookup: ConfigLookup, base: Endpoint) -> Endpoint:
    """An endpoint for a ProxyJump spec ``[user@]host[:port]`` (the first hop of a chain)."""
    first = spec.split(",", maxsplit=1)[0].strip()
    user, _, hostport = first.rpartition("@")
    host, _, port = hostport.partition(":")
    looked = lookup(host)
    return Endpoint(
        name=f"jump {first}",
        address=str(looked.get("hostname", host)),
        port=int(port or looked.get("port") or 22),
        user=user or str(looked.get("user", base.user)),
        key_files=tuple(looked.get("identityfile", ())) or base.key_files,
        known_hosts_files=base.known_hosts_files,
        connect_timeout=base.connect_timeout,
    )


def resolve(
    name: str,
    hostvars: Mapping[str, Any],
    *,
    lookup: ConfigLookup = no_config,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    command_timeout: float | None = None,
    extra_known_hosts: Sequence[str] = (),
    become_password: str | None = None,
) -> Endpoint:
    """Resolve a host's connection settings as OpenSSH under Ansible would.

    Inventory variables win over the ssh config (``lookup``), which wins over the defaults.
    """
    target = str(hostvars.get("ansible_host") or name)
    looked = lookup(target)
    options = parse_ssh_args(
        " ".join(
            str(hostvars[k])
            for k in ("ansible_ssh_common_args", "ansible_ssh_extra_args")
            if hostvars.get(k)
        )
    )
    key_file = hostvars.get("ansible_ssh_private_key_file") or hostvars.get(
        "ansible_private_key_file"
    )
    key_files: tuple[str, ...] = (
        (str(key_file),)
        if key_file
        else tuple(options.identity_files) or tuple(looked.get("identityfile", ()))
    )
    known = list(extra_known_hosts)
    known += options.known_hosts_files
    known += [str(p) for p in str(looked.get("userknownhostsfile", "")).split() if p]
    if hostvars.get("fleet_known_hosts"):
        known.append(str(hostvars["fleet_known_hosts"]))
    known.append(USER_KNOWN_HOSTS)
    port_value = (
        hostvars.get("ansible_port") or hostvars.get("ansible_ssh_port") or looked.get("port", 22)
    )
    endpoint = Endpoint(
        name=name,
        address=str(looked.get("hostname", target)),
        port=_port(name, port_value),
        user=str(
            hostvars.get("ansible_user")
            or hostvars.get("ansible_ssh_user")
            or looked.get("user", "root")
        ),
        key_files=key_files,
        known_hosts_files=tuple(dict.fromkeys(known)),
        become=_truthy(hostvars.get("ansible_become", False)),
        become_user=(
            str(hostvars["ansible_become_user"]) if hostvars.get("ansible_become_user") else None
        ),
        # The inventory's password wins over -K's, as Ansible's connection variables do.
        become_password=next(
            (str(hostvars[k]) for k in BECOME_PASSWORD_VARS if hostvars.get(k) is not None),
            become_password,
        ),
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
    )
    jump = options.proxy_jump or looked.get("proxyjump")
    if jump and str(jump).lower() != "none":
        endpoint = replace(endpoint, jump=_jump_endpoint(str(jump), lookup, endpoint))
    return endpoint


def _port(host: str, value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if not 0 < port < 65536:
        raise UnreachableError(host, f"port {value!r} is not a TCP port", fix="fix ansible_port")
    return port


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y")
    return bool(value)

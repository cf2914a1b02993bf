"""What a framework container may reach on its host, checked on the host itself before it
starts: its bind sources resolved there (:func:`check_mounts`), and a kept container's
grants read back from the engine (:func:`check_container`).
"""

from __future__ import annotations

import json

from fleet.errors import HostError
from fleet.hosts.model import Host
from fleet.images.runspec import RunPolicy, RunSpec, bind_allowed, holds_host_system, path_within
from fleet.ssh.base import Transport

# What a container hands over at its start, from the host's engine: its binds and named
# volumes (HostConfig.Binds), mounts made with --mount, its runtime and privilege.
_CONTAINER_GRANTS = (
    "{{json .HostConfig.Binds}}\t{{json .HostConfig.Mounts}}\t{{.HostConfig.Runtime}}"
    "\t{{.HostConfig.Privileged}}"
)


def check_container(transport: Transport, host: Host, ident: str, policy: RunPolicy) -> None:
    """Refuse to start a kept container that a fresh deploy of its spec would refuse.

    Its binds must be whole allowed roots, its named volumes and runtime allowed, nothing
    mounted with ``--mount``, not privileged; then its bind sources are resolved on the
    host like a deploy's.
    """
    if "--volume" in policy.allow:
        return
    ran = transport.run(
        ["docker", "inspect", "--type", "container", "--format", _CONTAINER_GRANTS, ident],
        check=False,
    )
    fields = ran.stdout.rstrip("\n").split("\t")
    try:
        binds, mounts = (json.loads(fields[0]) or []), (json.loads(fields[1]) or [])
        runtime, privileged = fields[2], fields[3]
    except (ValueError, IndexError):
        raise HostError(
            host.name,
            f"cannot read the mounts of container {ident[:12]} "
            f"({ran.stderr.strip() or ran.stdout.strip()[:200]})",
        ) from None
    refused = [
        str(bind)
        for bind in binds
        if not isinstance(bind, str) or not _bind_granted(bind.partition(":")[0], policy)
    ]
    refused += ["--mount " + json.dumps(mount)[:200] for mount in mounts]
    if runtime not in policy.runtimes and runtime not in ("", "<no value>"):
        refused.append(f"--runtime {runtime}")
    if privileged == "true" and "--privileged" not in policy.allow:
        refused.append("--privileged")
    if refused:
        raise HostError(
            host.name,
            f"container {ident[:12]} would be started with {refused[0]}, which its host does "
            "not allow (a version kept from before fleet checked bind sources whole?)",
            fix="deploy a version whose run command mounts only whole allowed directories; "
            f"remove the old container with 'docker rm {ident[:12]}' on the host",
        )
    sources = tuple(bind.partition(":")[0] for bind in binds if bind.startswith("/"))
    check_mounts(transport, host.name, RunSpec(volumes=tuple(f"{s}:{s}" for s in sources)), policy)


def _bind_granted(source: str, policy: RunPolicy) -> bool:
    if source.startswith("/"):
        return bind_allowed(source, policy.paths)
    return source in policy.volumes


# Resolve each path's symlinks on the host (GNU readlink: missing components allowed,
# output NUL-terminated, so no path can be mistaken for another).
RESOLVE_ARGV = ("readlink", "-m", "-z", "--")


def check_mounts(transport: Transport, host: str, spec: RunSpec, policy: RunPolicy) -> None:
    """Refuse a bind mount that is not a whole allowed root, or whose root is, after its
    symlinks on the host, a host-system tree (``/data -> /``).

    The label's paths were checked as text; a root's own link is the admin's (a data root
    that is a symlink to a bigger disk), and lies where no container can write.
    """
    sources = tuple(dict.fromkeys(spec.bind_sources()))
    if not sources or "--volume" in policy.allow:
        return
    for source in sources:
        if not bind_allowed(source, policy.paths):
            raise HostError(
                host,
                f"the run command mounts {source}, which is not one of the directories a "
                f"container may mount whole ({', '.join(policy.paths)})",
                fix=f"mount a whole allowed directory, or add {source} to "
                "fleet_run_allow_paths in the inventory (outside the others)",
            )
    ran = transport.run([*RESOLVE_ARGV, *sources], check=False)
    resolved = ran.stdout.split("\0")
    if not ran.ok or len(resolved) != len(sources) + 1 or resolved[-1]:
        raise HostError(
            host,
            "cannot resolve the run command's host paths on the host "
            f"({' '.join(RESOLVE_ARGV)}: {ran.stderr.strip() or f'exit {ran.exit_code}'})",
            fix="fleet needs GNU coreutils' readlink on the host to check mounts",
        )
    for source, real in zip(sources, resolved[:-1], strict=True):
        if holds_host_system(real) or any(
            other != real and (path_within(real, (other,)) or path_within(other, (real,)))
            for other in resolved[:-1]
        ):
            raise HostError(
                host,
                f"the run command mounts {source}, which is {real} on the host (after its "
                "symlinks): a host-system tree, or one that holds or lies in another mount",
                fix=f"point {source} at a directory of its own (it is a symlink on the host); "
                "fleet_run_allow_paths names the directories a container may mount",
            )

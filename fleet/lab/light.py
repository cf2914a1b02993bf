"""A light lab for measuring fan-out: N SSH hosts at a few MB each, in one container.

Each host is a port of its own on 127.0.0.1, answered by one of several ``sshd`` processes
in one container on the host's network (an sshd binds at most 16 listen sockets, so 1,000
hosts are 63 sshd processes; no port is proxied by the engine). The hosts share one host
key, pinned in the lab's known_hosts per port, and the lab's client key.

They run no Docker engine: an engine stand-in (``fleet/data/lab/engine_standin.py``)
answers the Engine API on their socket with what a real lab engine answered while it ran
a framework version (``engine_standin.json``), and the controller's docker CLI is there to
talk to it. So audit, ps and facts read a running framework on every host, and what
fleet's controller and an SSH fan-out cost is measured, not what engines do (shipping at
scale stays on the real lab).
"""

from __future__ import annotations

import shutil
import socket
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fleet.errors import LabError, UsageError
from fleet.lab import nodes

LIGHT_LABEL = "io.fleet.lab.light"
PORTS_PER_SSHD = 16
MAX_HOSTS = 2000

_SSHD_CONFIG = """\
# fleet light lab: keys only, root with a key, many connections at once.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AddressFamily inet
ListenAddress 127.0.0.1
MaxStartups 1000:30:2000
MaxSessions 64
"""


def _free_range(count: int, start: int = 20000) -> int:
    """The first port of ``count`` consecutive free ports on 127.0.0.1."""
    port = start
    while port + count < 65000:
        for offset in range(count):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + offset))
                except OSError:
                    port += offset + 1
                    break
        else:
            return port
    raise LabError(f"no {count} consecutive free ports on 127.0.0.1")


def up(hosts: int, *, name: str = "fleet-light", inventory: Path | None = None) -> Path:
    """Start a light lab of ``hosts`` SSH hosts and write its inventory; the inventory."""
    if not 1 <= hosts <= MAX_HOSTS:
        raise UsageError(f"--light {hosts}: a light lab has 1 to {MAX_HOSTS} hosts")
    client = nodes.engine_client()
    down(name=name)
    directory = nodes.state_dir(name)
    key = nodes._ensure_key_pair(directory)
    image = nodes.ensure_node_image(client, nodes.BARE)
    first = _free_range(hosts)
    container: Any = client.containers.run(
        image,
        ["sleep", "infinity"],
        entrypoint=[],
        name=f"{name}-sshd",
        detach=True,
        network_mode="host",
        labels={LIGHT_LABEL: name},
    )
    nodes._put_file(container, "/etc/ssh/sshd_config.d/light.conf", _SSHD_CONFIG.encode(), 0o644)
    nodes._put_file(container, "/root/.ssh/authorized_keys", key.with_suffix(".pub").read_bytes())
    code, out = nodes._exec(container, "sh", "-c", "mkdir -p /run/sshd && ssh-keygen -A")
    if code != 0:
        raise LabError(f"light lab: ssh-keygen failed: {out}")
    ports = list(range(first, first + hosts))
    for index in range(0, hosts, PORTS_PER_SSHD):
        argv = ["/usr/sbin/sshd", "-D", "-e"]
        for port in ports[index : index + PORTS_PER_SSHD]:
            argv += ["-p", str(port)]
        container.exec_run(argv, detach=True)
    _wait_listening(ports[-1])
    _start_engine_standin(container)
    # Every light host a GPU server of 8 GPUs, with the lab's nvidia-smi (fleet top reads it).
    code, out = nodes._exec(container, "env", "FLEET_LAB_BARE=1", "python3", GPU_SETUP, "8")
    if code != 0:
        raise LabError(f"light lab: the GPU stand-in did not set up: {out}")
    code, public = nodes._exec(container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
    key_type, key_b64 = public.split()[:2]
    known_hosts = directory / "known_hosts"
    known_hosts.write_text("".join(f"[127.0.0.1]:{p} {key_type} {key_b64}\n" for p in ports))
    path = inventory or directory / "inventory.yml"
    width = len(str(hosts))
    document = {
        "all": {
            "children": {
                "light": {
                    "hosts": {
                        f"light{i + 1:0{width}d}": {"ansible_host": "127.0.0.1", "ansible_port": p}
                        for i, p in enumerate(ports)
                    },
                    "vars": {
                        "ansible_user": "root",
                        "ansible_ssh_private_key_file": str(key),
                        "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} "
                        "-o StrictHostKeyChecking=yes",
                        "fleet_known_hosts": str(known_hosts),
                        "fleet_lab_name": name,
                    },
                }
            }
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


STANDIN_DIR = "/usr/local/lib/fleet-lab"
GPU_SETUP = f"{STANDIN_DIR}/gpu-setup"


def _start_engine_standin(container: Any) -> None:
    """The engine stand-in on the container's docker socket, and the controller's docker
    CLI beside it; waits until the socket answers."""
    data = resources.files("fleet").joinpath("data", "lab")
    for name in ("engine_standin.py", "engine_standin.json"):
        body = data.joinpath(name).read_bytes()
        nodes._put_file(container, f"{STANDIN_DIR}/{name}", body, 0o644)
    cli = shutil.which("docker")
    if cli is None:
        raise LabError("the docker CLI is not installed here: the light lab's hosts get a copy")
    nodes._put_file(container, "/usr/bin/docker", Path(cli).read_bytes(), 0o755)
    program, recorded = (f"{STANDIN_DIR}/engine_standin.{ext}" for ext in ("py", "json"))
    container.exec_run(["python3", "-I", program, recorded], detach=True)
    deadline = time.monotonic() + 30
    while nodes._exec(container, "docker", "version", "--format", "{{.Server.Version}}")[0]:
        if time.monotonic() > deadline:
            raise LabError("light lab: the engine stand-in did not answer in 30 s")
        time.sleep(0.2)


def _wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise LabError(f"light lab: nothing listens on 127.0.0.1:{port} after {timeout:g} s")
        time.sleep(0.2)


def container_name(name: str = "fleet-light") -> str:
    """The container whose sshd processes are the light lab's hosts (its CPU is theirs)."""
    return f"{name}-sshd"


def down(*, name: str = "fleet-light") -> None:
    """Remove the light lab's container."""
    client = nodes.engine_client()
    for container in client.containers.list(all=True, filters={"label": f"{LIGHT_LABEL}={name}"}):
        container.remove(force=True)

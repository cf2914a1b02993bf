"""The local lab: real hosts (sshd + their own Docker engine + cron) as containers.

Every lab host is a container on the controller's engine that runs ``sshd``, ``dockerd``
(with its own image store on its own volume) and ``cron``, with its own ``/data`` and
crontab, like a real GPU server without the GPU. ``classic`` hosts run Docker 20.10
(Debian bookworm) with the classic image store; ``containerd`` hosts run Docker 26
(Debian trixie) with the containerd image store.

Nothing is pulled from a registry (there is none here): node images are bootstrapped from
Debian packages with ``mmdebstrap`` and ``docker import``, and tagged by a hash of their
recipe so they are built once and reused. Each host gets its own host keys on its first
start; the lab records them, read out of band through the controller's engine, in the
lab's own known_hosts, so host keys are verified like anywhere else.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import docker
import docker.errors
import yaml

from fleet.errors import EngineError, HostError, LabError, UsageError
from fleet.hostoutput import store_of
from fleet.lab import aptrepo
from fleet.ssh.endpoint import Endpoint
from fleet.ssh.known_hosts import KnownHosts
from fleet.ssh.paramiko_client import SSHTransport

ENGINES = ("classic", "containerd")
# A bare host: a fresh server as it leaves a reinstall (sshd and Debian's base system; no
# engine, no toolkit, no cron). python3 is there for the lab's GPU stand-in (nvidia-smi).
BARE = "bare"
LABEL = "io.fleet.lab"
LAYER1_IMAGE = "fleet-lab-layer1:bookworm"
DEFAULT_LAB = "fleet-lab"

_NODE_PACKAGES = (
    "openssh-server",
    "docker.io",
    "cron",
    "python3",
    "iproute2",
    "procps",
    "ca-certificates",
    "curl",
    "sudo",
)
# The lab's simulated host tools (fleet/data/lab), installed in every node under these names;
# a host becomes a GPU server at start when it is given GPUs (gpu-setup).
_GPU_TOOLS = {
    "nvidia_container_runtime.py": "nvidia-container-runtime",
    "nvidia_smi.py": "nvidia-smi",
    "fleet_gpu_job.py": "fleet-gpu-job",
    "gpu_setup.py": "gpu-setup",
    # The engine's init script (installed as /etc/init.d/docker): what restarts it.
    "docker_init.sh": "docker-init",
}

# Per host, on its first start: fresh host keys (never shared between hosts). On every
# start: stale pid files of the previous run removed (a restarted host is a rebooted
# server), cron and dockerd in the background, sshd in the foreground.
_ENTRYPOINT = """\
#!/bin/sh
set -e
if [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then
    ssh-keygen -A >/dev/null
fi
mkdir -p /run/sshd /data /var/log
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid /var/run/crond.pid
python3 /usr/local/lib/fleet-lab/gpu-setup "${FLEET_LAB_GPUS:-0}"
# What the host has installed starts at boot (a bare host has neither until provisioned).
if command -v cron >/dev/null; then cron; fi
if command -v dockerd >/dev/null; then nohup dockerd >>/var/log/dockerd.log 2>&1 & fi
exec /usr/sbin/sshd -D -e
"""

_SSHD_CONFIG = """\
# fleet lab host: keys only, root allowed with a key (like a lab's GPU servers).
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
MaxSessions 64
MaxStartups 64:30:128
"""

_DOCKERFILE = """\
FROM {rootfs}
COPY entrypoint /usr/local/sbin/fleet-lab-entrypoint
COPY sshd.conf /etc/ssh/sshd_config.d/fleet-lab.conf
{daemon_json}COPY gpu/ /usr/local/lib/fleet-lab/
RUN chmod 0755 /usr/local/sbin/fleet-lab-entrypoint /usr/local/lib/fleet-lab/* \\
 && mv /usr/local/lib/fleet-lab/docker-init /etc/init.d/docker \\
 && rm -f /etc/ssh/ssh_host_* \\
 && mkdir -p /root/.ssh /data && chmod 0700 /root/.ssh
EXPOSE 22
ENTRYPOINT ["/usr/local/sbin/fleet-lab-entrypoint"]
"""


@dataclass(frozen=True)
class NodeRecipe:
    """What a lab node image is made of; its hash is the image's tag."""

    engine: str
    suite: str
    packages: tuple[str, ...]
    daemon_json: str

    @property
    def digest(self) -> str:
        text = json.dumps(
            [
                self.suite,
                self.packages,
                self.daemon_json,
                _ENTRYPOINT,
                _SSHD_CONFIG,
                _DOCKERFILE,
                [_gpu_tool(name) for name in sorted(_GPU_TOOLS)],
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def rootfs(self) -> str:
        """The Debian root filesystem's image: rebuilt only when the packages change."""
        text = json.dumps([self.suite, self.packages])
        return f"fleet-lab-rootfs:{self.engine}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    @property
    def image(self) -> str:
        return f"fleet-lab-node:{self.engine}-{self.digest}"


_BARE_PACKAGES = ("openssh-server", "python3", "procps", "iproute2")


def _gpu_tool(name: str) -> str:
    return resources.files("fleet").joinpath("data", "lab", name).read_text(encoding="utf-8")


def recipe(engine: str) -> NodeRecipe:
    """The node recipe for an engine kind."""
    if engine == "classic":
        return NodeRecipe(
            "classic", "bookworm", _NODE_PACKAGES, json.dumps({"log-driver": "json-file"})
        )
    if engine == "containerd":
        return NodeRecipe(
            "containerd",
            "trixie",
            (*_NODE_PACKAGES, "docker-cli"),
            json.dumps({"features": {"containerd-snapshotter": True}, "log-driver": "json-file"}),
        )
    if engine == BARE:
        return NodeRecipe(BARE, "bookworm", _BARE_PACKAGES, "")
    raise UsageError(f"unknown engine {engine!r}", fix="use classic, containerd or mixed")


@dataclass(frozen=True)
class LabHost:
    """One lab host as the controller's engine sees it."""

    name: str
    container: str
    engine: str
    address: str
    port: int
    state: str
    engine_version: str = ""
    image_store: str = ""
    gpus: int = 0


@dataclass(frozen=True)
class Lab:
    """A running lab: its hosts and the files that reach them."""

    name: str
    hosts: tuple[LabHost, ...]
    key_file: Path
    known_hosts: Path
    inventory: Path | None
    # The lab's signed apt repository (bare hosts install the NVIDIA toolkit from it).
    apt_url: str = ""
    apt_key: Path | None = None
    apt_fingerprint: str = ""


Log = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def engine_client() -> docker.DockerClient:
    """The controller's Docker engine, or an error naming how to start it."""
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineError(
            f"the controller's Docker engine is not answering: {exc}",
            fix="install and start it: 'scripts/setup.sh' (apt-get install docker.io; dockerd &)",
        ) from exc
    return client


def _image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def _mmdebstrap(suite: str, packages: tuple[str, ...], out: Path, log: Log) -> None:
    if shutil.which("mmdebstrap") is None:
        raise LabError(
            "mmdebstrap is not installed: lab images are bootstrapped from Debian packages",
            fix="apt-get install mmdebstrap (scripts/setup.sh does it)",
        )
    log(f"bootstrapping a Debian {suite} root filesystem ({', '.join(packages)})")
    argv = [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        # Docs and man pages are dead weight in a lab host.
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        suite,
        str(out),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise LabError(f"mmdebstrap {suite} failed (exit {proc.returncode}):\n{tail}")


def _import_rootfs(client: docker.DockerClient, tarball: Path, ref: str) -> None:
    repository, _, tag = ref.partition(":")
    with tarball.open("rb") as handle:
        client.api.import_image_from_data(handle, repository=repository, tag=tag)
    if not _image_exists(client, ref):
        raise LabError(f"docker import of {tarball} did not produce {ref}")


def ensure_layer1_image(client: docker.DockerClient, log: Log = _quiet) -> str:
    """The demo framework's layer 1 (Debian + python3), standing in for an upstream ML image."""
    if not _image_exists(client, LAYER1_IMAGE):
        with tempfile.TemporaryDirectory(prefix="fleet-layer1-") as tmp:
            out = Path(tmp) / "rootfs.tar"
            _mmdebstrap("bookworm", ("python3", "ca-certificates"), out, log)
            _import_rootfs(client, out, LAYER1_IMAGE)
    return LAYER1_IMAGE


def ensure_node_image(client: docker.DockerClient, engine: str, log: Log = _quiet) -> str:
    """The node image for ``engine``, built once per recipe."""
    node = recipe(engine)
    if _image_exists(client, node.image):
        return node.image
    rootfs = node.rootfs
    with tempfile.TemporaryDirectory(prefix="fleet-node-") as tmp:
        if not _image_exists(client, rootfs):
            out = Path(tmp) / "rootfs.tar"
            _mmdebstrap(node.suite, node.packages, out, log)
            _import_rootfs(client, out, rootfs)
            out.unlink()
        context = Path(tmp) / "context"
        context.mkdir()
        # A bare host has no engine, hence no configuration of one.
        daemon_json = "COPY daemon.json /etc/docker/daemon.json\n" if node.daemon_json else ""
        (context / "Dockerfile").write_text(
            _DOCKERFILE.format(rootfs=rootfs, daemon_json=daemon_json)
        )
        (context / "entrypoint").write_text(_ENTRYPOINT)
        (context / "sshd.conf").write_text(_SSHD_CONFIG)
        (context / "daemon.json").write_text(node.daemon_json + "\n")
        (context / "gpu").mkdir()
        for source, installed in _GPU_TOOLS.items():
            (context / "gpu" / installed).write_text(_gpu_tool(source))
        log(f"building node image {node.image}")
        try:
            client.images.build(path=str(context), tag=node.image, rm=True, labels={LABEL: "node"})
        except docker.errors.BuildError as exc:
            lines = "".join(str(c.get("stream", c.get("error", ""))) for c in exc.build_log)
            raise LabError(f"building {node.image} failed: {exc}\n{lines[-2000:]}") from exc
    return node.image


# -- isolation ----------------------------------------------------------------------
_CAPABILITIES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]


_ENGINE_KNOWN_CAPS = _CAPABILITIES.index("AUDIT_READ") + 1


def bounding_capabilities(status: str | None = None) -> list[str]:
    """The capability names in this process's bounding set (``CapBnd``)."""
    if status is None:
        status = Path("/proc/self/status").read_text()
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return [name for bit, name in enumerate(_CAPABILITIES) if mask >> bit & 1]
    return []


def isolation_options(status: str | None = None) -> dict[str, Any]:
    """docker-py run options that let a lab host run its own engine.

    ``--privileged`` where the machine allows it; where the bounding set lacks a
    capability (this workplace lacks CAP_SYS_RESOURCE), privileged fails, so every
    capability that *is* there is added and the confinement switched off one by one.
    """
    caps = bounding_capabilities(status)
    if len(caps) == len(_CAPABILITIES):
        return {"privileged": True}
    return {
        # Engines before 23 refuse capability names newer than AUDIT_READ.
        "cap_add": [c for c in caps if c in _CAPABILITIES[:_ENGINE_KNOWN_CAPS]],
        "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
        "unmask_system_paths": True,
        "device_cgroup_rules": ["a *:* rwm"],
        "volumes_extra": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
    }


# -- state on disk ------------------------------------------------------------------
def state_dir(name: str = DEFAULT_LAB) -> Path:
    """Where a lab keeps its key pair and known_hosts."""
    root = Path(os.environ.get("FLEET_LAB_DIR", Path.home() / ".cache" / "fleet" / "lab"))
    return root / name


def _ensure_key_pair(directory: Path) -> Path:
    key = directory / "id_ed25519"
    if not key.is_file():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-lab", "-f", str(key)],
            check=True,
            capture_output=True,
        )
    return key


def _put_file(container: Any, path: str, data: bytes, mode: int = 0o600) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(Path(path).name)
        info.size = len(data)
        info.mode = mode
        tar.addfile(info, io.BytesIO(data))
    container.put_archive(str(Path(path).parent), buffer.getvalue())


def _exec(container: Any, *argv: str) -> tuple[int, str]:
    code, output = container.exec_run(list(argv), demux=False)
    return int(code), (output or b"").decode("utf-8", "replace")


def _containers(client: docker.DockerClient, lab: str) -> list[Any]:
    found = client.containers.list(all=True, filters={"label": f"{LABEL}={lab}"})
    return sorted(found, key=lambda c: _host_order(c.labels.get(f"{LABEL}.host", "")))


def _host_order(name: str) -> tuple[str, int]:
    stem = name.rstrip("0123456789")
    digits = name[len(stem) :]
    return (stem, int(digits) if digits else 0)


def _published_port(container: Any) -> int:
    container.reload()
    ports = container.attrs["NetworkSettings"]["Ports"].get("22/tcp") or []
    for binding in ports:
        if binding.get("HostIp") in ("127.0.0.1", ""):
            return int(binding["HostPort"])
    raise LabError(f"lab host {container.name} has no published SSH port")


def _engine_plan(count: int, engine: str) -> list[str]:
    if engine == "mixed":
        return [ENGINES[i % 2] for i in range(count)]
    if engine not in (*ENGINES, BARE):
        raise UsageError(f"unknown engine {engine!r}", fix="use classic, containerd or mixed")
    return [engine] * count


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _node_host_config(api: Any, binds: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """A lab node's host config: its binds and ``settings``, with the isolation options
    that let it run an engine of its own."""
    options = isolation_options()
    unmask = options.pop("unmask_system_paths", False)
    binds = {**binds, **options.pop("volumes_extra", {})}
    host_config: dict[str, Any] = api.create_host_config(binds=binds, **settings, **options)
    if unmask:
        # What the CLI's --security-opt systempaths=unconfined means; not in docker-py.
        host_config["MaskedPaths"] = []
        host_config["ReadonlyPaths"] = []
    return host_config


def _start_host(
    client: docker.DockerClient,
    lab: str,
    index: int,
    engine: str,
    image: str,
    key: Path,
    gpus: int = 0,
) -> Any:
    host = f"lab{index}"
    container_name = f"{lab}-{host}"
    api = client.api
    host_config = _node_host_config(
        api,
        {
            f"{container_name}-docker": {"bind": "/var/lib/docker", "mode": "rw"},
            # A second disk, as GPU servers have, where an engine's data-root may go (an
            # engine's store needs a filesystem of its own: not the node's overlay).
            f"{container_name}-srv": {"bind": "/srv", "mode": "rw"},
        },
        # A fixed port, so a restarted ("rebooted") host keeps its address.
        port_bindings={22: ("127.0.0.1", _free_port())},
        tmpfs={"/run": "", "/tmp": ""},  # noqa: S108 - the lab host's own /tmp
    )
    created = api.create_container(
        image,
        name=container_name,
        hostname=host,
        detach=True,
        labels={
            LABEL: lab,
            f"{LABEL}.host": host,
            f"{LABEL}.engine": engine,
            f"{LABEL}.gpus": str(gpus),
        },
        # Read by the entrypoint's gpu-setup: a GPU server with that many GPUs, or none.
        environment={"FLEET_LAB_GPUS": str(gpus), "FLEET_LAB_BARE": "1" if engine == BARE else "0"},
        ports=[22],
        volumes=["/var/lib/docker", "/srv"],
        host_config=host_config,
    )
    api.start(created["Id"])
    container = client.containers.get(created["Id"])
    public = (key.with_suffix(".pub")).read_bytes()
    _put_file(container, "/root/.ssh/authorized_keys", public)
    return container


@dataclass(frozen=True)
class ControllerEngine:
    """A second engine for the controller, on the containerd image store: its socket and
    its root as this machine sees them (``DOCKER_HOST``, ``FLEET_ENGINE_ROOT``)."""

    container: str
    socket: Path
    root: Path

    @property
    def environment(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{self.socket}", "FLEET_ENGINE_ROOT": str(self.root)}

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=f"unix://{self.socket}", timeout=600)

    def load(self, reference: str) -> None:
        """Copy ``reference`` from this machine's engine into this one (no registry here),
        streamed: ``docker save`` into its ``docker load``."""
        source, target = engine_client(), self.client()
        try:
            if _image_exists(target, reference):
                return
            chunks = source.api.get_image(reference, chunk_size=1 << 20)
            for said in target.api.load_image(chunks, quiet=True):
                if isinstance(said, dict) and said.get("error"):
                    raise LabError(f"loading {reference} into {self.container}: {said['error']}")
        finally:
            source.close()
            target.close()


def controller_engine(name: str, directory: Path, timeout: float = 120.0) -> ControllerEngine:
    """Start (or find) a Docker engine on the containerd image store for the controller,
    as Docker 29 installs by default: a lab node whose ``/run`` and ``/var/lib/docker``
    are directories of this machine, so its socket and its content store can be reached."""
    client = engine_client()
    image = ensure_node_image(client, "containerd")
    container_name = f"{name}-controller"
    engine = ControllerEngine(container_name, directory / "run" / "docker.sock", directory / "root")
    try:
        existing = client.containers.get(container_name)
    except docker.errors.NotFound:
        existing = None
    if existing is None:
        for part in ("run", "root"):
            (directory / part).mkdir(parents=True, exist_ok=True)
        binds = {
            str(engine.root): {"bind": "/var/lib/docker", "mode": "rw"},
            str(directory / "run"): {"bind": "/run", "mode": "rw"},
        }
        api = client.api
        host_config = _node_host_config(api, binds, tmpfs={"/tmp": ""})  # noqa: S108
        created = api.create_container(
            image,
            name=container_name,
            hostname="controller",
            detach=True,
            labels={LABEL: f"{name}-controller"},
            environment={"FLEET_LAB_GPUS": "0"},
            host_config=host_config,
        )
        api.start(created["Id"])
    elif existing.status != "running":
        existing.start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            # A bare connect first: a client made before the socket answers leaks its own.
            with socket.socket(socket.AF_UNIX) as bare:
                bare.connect(str(engine.socket))
            probe = docker.DockerClient(base_url=f"unix://{engine.socket}", timeout=5)
            try:
                probe.ping()
            finally:
                probe.close()
            return engine
        except (docker.errors.DockerException, OSError):
            if time.monotonic() > deadline:
                raise LabError(f"the controller engine {container_name} did not answer") from None
            time.sleep(0.5)


def remove_controller_engine(engine: ControllerEngine) -> None:
    """Remove the controller engine's container (its directories are the caller's)."""
    client = engine_client()
    with contextlib.suppress(docker.errors.NotFound):
        _remove_container(client, client.containers.get(engine.container))


def _wait_ready(client: docker.DockerClient, container: Any, deadline: float) -> tuple[str, str]:
    """Poll until the host's engine answers; (version, store) or LabError with its log.
    A host without an engine (bare, until provisioned) is ready when it runs: ("", "")."""
    while True:
        container.reload()
        if container.status not in ("running", "created"):
            logs = container.logs(tail=20).decode("utf-8", "replace")
            raise LabError(f"lab host {container.name} stopped ({container.status}):\n{logs}")
        if _exec(container, "sh", "-c", "command -v dockerd")[0] != 0:
            # No engine: ready once the entrypoint made its host keys (sshd comes next).
            if _exec(container, "test", "-s", "/etc/ssh/ssh_host_ed25519_key.pub")[0] == 0:
                return "", ""
            if time.monotonic() > deadline:
                raise LabError(f"lab host {container.name}: no host key in time")
            time.sleep(0.3)
            continue
        code, out = _exec(
            container, "docker", "info", "--format", "{{.ServerVersion}} {{json .DriverStatus}}"
        )
        version, _, status = out.strip().partition(" ")
        # The CLI may exit 0 and print "Cannot connect ..." while the engine starts.
        if code == 0 and version[:1].isdigit():
            return version, _store_from_driver_status(status)
        if time.monotonic() > deadline:
            _, log = _exec(container, "tail", "-n", "20", "/var/log/dockerd.log")
            raise LabError(
                f"lab host {container.name}: its Docker engine did not answer in time; "
                f"last lines of its engine log:\n{log}"
            )
        time.sleep(0.3)


def _store_from_driver_status(status_json: str) -> str:
    try:
        status = json.loads(status_json) or []
    except json.JSONDecodeError:
        return "unknown"
    return store_of(status)


def _host_key_line(container: Any, port: int) -> str:
    code, out = _exec(container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
    if code != 0 or not out.startswith("ssh-ed25519 "):
        raise LabError(f"lab host {container.name} has no ed25519 host key: {out.strip()}")
    key_type, key_b64 = out.split()[:2]
    return f"[127.0.0.1]:{port} {key_type} {key_b64}"


def _write_known_hosts(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))
    path.chmod(0o600)


def run_overrides(gpus: int, status: str | None = None) -> dict[str, Any]:
    """What the lab cannot give a container as the run command asks, turned off.

    ``--ulimit memlock=-1`` needs CAP_SYS_RESOURCE, which a machine's bounding set may lack;
    a host without GPUs has no ``nvidia`` runtime. Everything else runs as the label says.
    """
    overrides: dict[str, Any] = {}
    if "SYS_RESOURCE" not in bounding_capabilities(status):
        overrides["ulimits"] = {"memlock": None}
    if gpus == 0:
        overrides["runtime"] = None
    return overrides


# The lab's non-root users (``fleet lab up --users``), as a university lab has them: a
# sudoer whose sudo asks for a password, and a user who is only in the docker group.
SUDO_USER = "lab"
DOCKER_USER = "labdocker"
_USERS_SCRIPT = """\
set -e
password=$(cat /root/.fleet-lab-password); rm -f /root/.fleet-lab-password
id "$1" >/dev/null 2>&1 || useradd -m -s /bin/sh "$1"
id "$2" >/dev/null 2>&1 || useradd -m -s /bin/sh -G docker "$2"
printf '%s:%s\\n' "$1" "$password" | chpasswd
# No password, but not locked ("!"): sshd refuses even a key to a locked account.
usermod -p '*' "$2"
printf '%s ALL=(ALL:ALL) ALL\\n' "$1" >/etc/sudoers.d/fleet-lab-users
chmod 0440 /etc/sudoers.d/fleet-lab-users
for user in "$1" "$2"; do
  install -d -m 0700 -o "$user" -g "$user" "/home/$user/.ssh"
  install -m 0600 -o "$user" -g "$user" /root/.ssh/authorized_keys "/home/$user/.ssh/authorized_keys"
done
"""


def become_password_file(name: str = DEFAULT_LAB) -> Path:
    """The lab user's sudo password, for ``--become-password-file`` (owner-only)."""
    return state_dir(name) / "become-password"


def add_users(lab: Lab) -> Path:
    """Give every host of ``lab`` its non-root users (idempotent); the password file.

    The password is made once per lab, kept owner-only, and handed to each host as a file
    that the setup reads and removes: never on a command line.
    """
    path = become_password_file(lab.name)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(18) + "\n")
    password = path.read_text().strip().encode()
    client = engine_client()
    for host in lab.hosts:
        container = client.containers.get(host.container)
        _put_file(container, "/root/.fleet-lab-password", password)
        code, output = _exec(container, "sh", "-c", _USERS_SCRIPT, "sh", SUDO_USER, DOCKER_USER)
        if code != 0:
            raise LabError(f"{host.name}: could not add the lab's users: {output.strip()[-500:]}")
    return path


def user_inventory(path: Path, user: str) -> Path:
    """Where the inventory of the lab as ``user`` sees it lives, beside the root one."""
    return path.with_name(f"{path.stem}-{user}{path.suffix}")


def inventory_document(lab: Lab, user: str = "root") -> dict[str, Any]:
    """The Ansible-compatible inventory of a lab, reached as ``user`` (the lab's sudoer
    becomes root with sudo's password: ``-K`` or ``--become-password-file``)."""
    hosts: dict[str, Any] = {}
    for host in lab.hosts:
        hosts[host.name] = {
            "ansible_host": host.address,
            "ansible_port": host.port,
            "fleet_lab_engine": host.engine,
            "fleet_lab_gpus": host.gpus,
        }
        if host.gpus == 0:
            # A host variable replaces the group's whole: it repeats the group's overrides.
            hosts[host.name]["fleet_run_overrides"] = run_overrides(0)
        if host.engine == BARE:
            # What a bare server needs installed, the toolkit from the lab's own repository.
            hosts[host.name]["fleet_provision_overrides"] = {
                "install": ["engine", "tools", "nvidia_toolkit"],
                "nvidia_repository": {
                    "url": lab.apt_url,
                    "key": str(lab.apt_key),
                    "fingerprint": lab.apt_fingerprint,
                },
                # Used where engine_package is docker-ce: Docker's layout, the lab's packages.
                "docker_repository": {
                    "url": f"{lab.apt_url}docker/{{distribution}}",
                    "key": str(lab.apt_key),
                    "fingerprint": lab.apt_fingerprint,
                },
            }
    return {
        "all": {
            "children": {
                "lab": {
                    "hosts": hosts,
                    "vars": {
                        "ansible_user": user,
                        **({"ansible_become": True} if user == SUDO_USER else {}),
                        "ansible_ssh_private_key_file": str(lab.key_file),
                        # Ansible and OpenSSH read the lab's known_hosts through this too.
                        "ansible_ssh_common_args": f"-o UserKnownHostsFile={lab.known_hosts} "
                        "-o StrictHostKeyChecking=yes",
                        "fleet_known_hosts": str(lab.known_hosts),
                        # Which lab wrote it: 'fleet lab down --name X' removes only X's.
                        "fleet_lab_name": lab.name,
                        # What the lab cannot grant; the run command runs as labeled otherwise.
                        "fleet_run_overrides": run_overrides(1),
                    },
                },
            }
        }
    }


_GENERATED = "# Generated by 'fleet lab up'"
# The first line of an inventory written before it recorded fleet_lab_name.
_GENERATED_FOR = re.compile(re.escape(_GENERATED) + r" for the lab '([^'\n]*)';")


def write_inventory(lab: Lab, path: Path, user: str = "root") -> None:
    """Write the lab's inventory file (generated: every ``lab up`` rewrites it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"{_GENERATED} for the lab {lab.name!r}; rewritten on every lab up.\n"
        "# Hosts are containers on this machine; their sshd is published on loopback.\n"
    )
    path.write_text(header + yaml.safe_dump(inventory_document(lab, user), sort_keys=False))


def inventory_lab(path: Path) -> str | None:
    """The name of the lab whose ``fleet lab up`` wrote the inventory at ``path``; None
    for a file it did not write (or none at all)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith(_GENERATED):
        return None
    try:
        document = yaml.safe_load(text)
        name = document["all"]["children"]["lab"]["vars"]["fleet_lab_name"]
    except (yaml.YAMLError, KeyError, TypeError):
        name = None
    if isinstance(name, str):
        return name
    older = _GENERATED_FOR.match(text)
    return older.group(1) if older else None


def forget(name: str, inventory: Path | None = None) -> bool:
    """Remove what lab ``name`` keeps on disk: its known_hosts, and ``inventory`` if that
    lab wrote it (another lab's, or a hand-written one, is left alone); whether it did."""
    (state_dir(name) / "known_hosts").unlink(missing_ok=True)
    become_password_file(name).unlink(missing_ok=True)
    if inventory is None:
        return False
    for user in (SUDO_USER, DOCKER_USER):
        extra = user_inventory(inventory, user)
        if inventory_lab(extra) == name:
            extra.unlink()
    if inventory_lab(inventory) == name:
        inventory.unlink()
        return True
    return False


def up(
    hosts: int = 3,
    engine: str = "mixed",
    *,
    name: str = DEFAULT_LAB,
    inventory: Path | None = None,
    timeout: float = 180.0,
    log: Log = _quiet,
    gpus: int | Mapping[str, int] = 1,
    users: bool = False,
) -> Lab:
    """Start (or complete) a lab of ``hosts`` hosts and write its inventory.

    ``users``: also give every host a sudoer whose sudo asks for a password and a user in
    the docker group (:func:`add_users`), each with an inventory of its own beside
    ``inventory`` (:func:`user_inventory`).

    ``gpus``: simulated GPUs per host (one number for all, default one each: a lab of GPU
    servers; or per host name, unnamed hosts getting none). Hosts that already run with the right engine, node image and GPUs
    are kept; missing ones are started, surplus ones removed. Returns when every host's
    sshd and engine answer.
    """
    if hosts < 1 or hosts > 32:
        raise UsageError(f"--hosts {hosts}: a lab has 1 to 32 hosts")
    plan = _engine_plan(hosts, engine)
    client = engine_client()
    directory = state_dir(name)
    key = _ensure_key_pair(directory)
    ensure_layer1_image(client, log)
    images = {kind: ensure_node_image(client, kind, log) for kind in sorted(set(plan))}

    existing = {c.labels.get(f"{LABEL}.host"): c for c in _containers(client, name)}
    containers = []
    for index, kind in enumerate(plan, start=1):
        host = f"lab{index}"
        current = existing.pop(host, None)
        count = gpus if isinstance(gpus, int) else gpus.get(host, 0)
        if current is not None and (
            current.labels.get(f"{LABEL}.engine") != kind
            or current.image.tags[:1] != [images[kind]]
            or current.labels.get(f"{LABEL}.gpus", "0") != str(count)
        ):
            log(f"replacing {current.name} (engine, node image or GPUs changed)")
            _remove_container(client, current)
            current = None
        if current is None:
            log(f"starting {host} ({kind}{f', {count} GPUs' if count else ''})")
            current = _start_host(client, name, index, kind, images[kind], key, count)
        elif current.status != "running":
            current.start()
        containers.append((host, kind, current))
    for surplus in existing.values():
        log(f"removing surplus host {surplus.name}")
        _remove_container(client, surplus)

    deadline = time.monotonic() + timeout
    lab_hosts, key_lines = _ready_hosts(client, containers, deadline)
    known_hosts = directory / "known_hosts"
    _write_known_hosts(known_hosts, key_lines)
    apt_url, apt_key, apt_fingerprint = "", None, ""
    if BARE in plan:
        apt_url = aptrepo.serve(client, name, directory, LAYER1_IMAGE)
        apt_key = aptrepo.key_file(directory)
        apt_fingerprint = aptrepo.key_fingerprint(directory)
    else:
        aptrepo.remove(client, name)
    lab = Lab(
        name, tuple(lab_hosts), key, known_hosts, inventory, apt_url, apt_key, apt_fingerprint
    )
    _wait_ssh(lab, deadline)
    if users:
        add_users(lab)
    if inventory is not None:
        write_inventory(lab, inventory)
        for user in (SUDO_USER, DOCKER_USER) if users else ():
            write_inventory(lab, user_inventory(inventory, user), user)
    return lab


def _ready_hosts(
    client: docker.DockerClient, containers: list[tuple[str, str, Any]], deadline: float
) -> tuple[list[LabHost], list[str]]:
    """Each started host once it is ready (its engine answers, if it has one), and its
    known_hosts line."""
    ready, key_lines = [], []
    for host, kind, container in containers:
        version, store = _wait_ready(client, container, deadline)
        port = _published_port(container)
        key_lines.append(_host_key_line(container, port))
        count = int(container.labels.get(f"{LABEL}.gpus", "0"))
        ready.append(
            LabHost(host, container.name, kind, "127.0.0.1", port, "running", version, store, count)
        )
    return ready, key_lines


def endpoints(lab: Lab) -> Iterator[Endpoint]:
    """Connection settings for each lab host."""
    for host in lab.hosts:
        yield Endpoint(
            name=host.name,
            address=host.address,
            port=host.port,
            user="root",
            key_files=(str(lab.key_file),),
            known_hosts_files=(str(lab.known_hosts),),
        )


def _wait_ssh(lab: Lab, deadline: float) -> None:
    """Poll each host's sshd with a verified host key until it answers."""
    known = KnownHosts([lab.known_hosts])
    for endpoint in endpoints(lab):
        while True:
            try:
                transport = SSHTransport(endpoint, known)
            except HostError as exc:
                if time.monotonic() > deadline:
                    raise LabError(
                        f"lab host {endpoint.name}: sshd did not answer in time: {exc}"
                    ) from exc
                time.sleep(0.3)
                continue
            transport.close()
            break


def _remove_container(client: docker.DockerClient, container: Any) -> None:
    volumes = [m["Name"] for m in container.attrs.get("Mounts", []) if m.get("Type") == "volume"]
    container.remove(force=True, v=True)
    for volume in volumes:
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(volume).remove(force=True)


def down(*, name: str = DEFAULT_LAB, inventory: Path | None = None) -> list[str]:
    """Remove a lab's hosts, their volumes, its known_hosts and its inventory (only if
    this lab wrote it: see :func:`forget`); returns the hosts."""
    client = engine_client()
    removed = []
    for container in _containers(client, name):
        removed.append(container.labels.get(f"{LABEL}.host", container.name))
        _remove_container(client, container)
    aptrepo.remove(client, name)
    forget(name, inventory)
    return removed


def status(*, name: str = DEFAULT_LAB) -> list[LabHost]:
    """The lab's hosts: address, engine version, image store, state."""
    client = engine_client()
    result = []
    for container in _containers(client, name):
        host = container.labels.get(f"{LABEL}.host", container.name)
        kind = container.labels.get(f"{LABEL}.engine", "?")
        version = store = ""
        port = 0
        if container.status == "running":
            port = _published_port(container)
            code, out = _exec(
                container, "docker", "info", "--format", "{{.ServerVersion}} {{json .DriverStatus}}"
            )
            version, _, driver = out.strip().partition(" ")
            if code == 0 and version[:1].isdigit():
                store = _store_from_driver_status(driver)
            else:
                version = ""
                store = "engine down"
        result.append(
            LabHost(
                host,
                container.name,
                kind,
                "127.0.0.1",
                port,
                container.status,
                version,
                store,
                int(container.labels.get(f"{LABEL}.gpus", "0")),
            )
        )
    return result

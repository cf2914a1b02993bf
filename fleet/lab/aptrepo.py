"""The lab's signed apt repositories: stand-ins for NVIDIA's and Docker's, for bare hosts.

Neither NVIDIA's nor Docker's apt repository can be reached from the lab. These are made
the way such repositories are made: packages by ``dpkg-deb``, ``Packages`` and
``Release`` by ``apt-ftparchive``, ``InRelease`` signed by ``gpg`` with a throwaway key of
the lab's. A container of its own serves them over the lab's network. fleet reaches them
as it reaches the real ones: NVIDIA's flat repository at the root (``deb [signed-by=KEY]
URL /``), Docker's per distribution and release under ``docker/`` (``deb
[signed-by=KEY] URL/docker/debian bookworm stable``); only the URLs and the key come from
the lab's inventory.

``nvidia-container-toolkit`` holds what fleet relies on of the real one:
``nvidia-container-runtime`` (the lab's runtime wrapper around runc) and ``nvidia-ctk``.
``docker-ce`` stands in for Docker's engine with the engine this machine has (Debian's
``docker.io``, repackaged: the lab's hosts run the same release; Debian's package
conflicts with Docker's names, as the real ones do), ``containerd.io`` depends on
Debian's containerd and runc, and ``docker-ce-cli`` is empty (the client is in
``docker-ce``): the packages' names and the repository's layout are Docker's, and what is
tested is fleet's way to them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import docker
import docker.errors

from fleet.errors import LabError

PACKAGE = "nvidia-container-toolkit"
VERSION = "1.17.8-1"
# Docker's repository, as download.docker.com lays it out: one per distribution, a suite
# per release, the component "stable".
DOCKER_TREE = "docker/debian"
DOCKER_SUITE = "bookworm"
DOCKER_VERSION = "5:27.5.1-1~debian.12~bookworm"
PORT = 8080
# The serving container carries this label (not the hosts' own: it is no host).
ROLE_LABEL = "io.fleet.lab.apt"

_NVIDIA_CTK = """#!/bin/sh
# The lab's stand-in for NVIDIA's nvidia-ctk: it answers --version.
case "$1" in
  --version|-v) echo "NVIDIA Container Toolkit CLI version 1.17.8 (fleet lab stand-in)" ;;
  *) echo "nvidia-ctk (fleet lab stand-in): only --version" >&2; exit 1 ;;
esac
"""

_CONTROL = f"""Package: {PACKAGE}
Version: {VERSION}
Architecture: all
Maintainer: fleet lab <lab@fleet.invalid>
Depends: python3
Section: utils
Priority: optional
Description: NVIDIA Container Toolkit (fleet lab stand-in)
 nvidia-container-runtime wrapping runc, and nvidia-ctk, for the lab's simulated GPUs.
"""


def _control(package: str, version: str, depends: str, description: str) -> str:
    return (
        f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: fleet lab <lab@fleet.invalid>\n"
        + (f"Depends: {depends}\n" if depends else "")
        + f"Section: admin\nPriority: optional\nDescription: {description} (fleet lab stand-in)\n"
        " Stands in for the package of this name in the lab, which reaches no vendor's\n"
        " repository.\n"
    )


_DOCKER_POSTINST = """#!/bin/sh
set -e
# As Docker's package: the group whose members may use the engine's socket.
if [ "$1" = configure ] && ! getent group docker >/dev/null; then addgroup --system docker; fi
"""
# Of the machine's docker.io: what is not repackaged (the lab's own init script stays;
# developer tools are not the engine).
_LEFT_OUT = ("/etc/init.d/", "/usr/bin/dnet", "/usr/sbin/ovrouter")


def _engine_files() -> tuple[str, list[str], str]:
    """The machine's docker.io: its version, its files, its dependencies."""
    query = ["dpkg-query", "-W", "-f", "${Version}\\n${Depends}\\n", "docker.io"]
    ran = subprocess.run(query, capture_output=True, text=True, check=False)
    if ran.returncode != 0:
        raise LabError(
            "docker.io is not installed here: the lab's stand-in docker-ce repackages it",
            fix="apt-get install docker.io (scripts/setup.sh does it)",
        )
    version, depends = [*ran.stdout.splitlines(), "", ""][:2]
    listed = subprocess.run(
        ["dpkg-query", "-L", "docker.io"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    files = [
        path
        for path in listed
        # Files and links to files (/lib may itself be a link, to usr/lib).
        if (os.path.islink(path) or os.path.isfile(path))
        and not os.path.isdir(path)
        and not path.startswith(_LEFT_OUT)
    ]
    return version, files, depends


def _docker_packages(engine_depends: str) -> tuple[str, ...]:
    return (
        _control(
            "docker-ce",
            DOCKER_VERSION,
            f"{engine_depends}, containerd.io, docker-ce-cli",
            "Docker: the Docker Engine",
        ),
        _control("docker-ce-cli", DOCKER_VERSION, "", "Docker CLI"),
        _control("containerd.io", "1.7.25-1", "containerd, runc", "containerd"),
    )


def _runtime() -> str:
    return (
        resources.files("fleet")
        .joinpath("data", "lab", "nvidia_container_runtime.py")
        .read_text(encoding="utf-8")
    )


def _digest() -> str:
    version, _, depends = _engine_files()
    parts = [_CONTROL, _NVIDIA_CTK, _runtime(), *_docker_packages(depends), _DOCKER_POSTINST]
    text = "\0".join([*parts, version])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise LabError(
            f"{name} is not installed: the lab builds its apt repository with it",
            fix=f"apt-get install {package} (scripts/setup.sh does it)",
        )
    return found


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    ran = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if ran.returncode != 0:
        raise LabError(f"{' '.join(argv[:3])} failed (exit {ran.returncode}): {ran.stderr[-800:]}")
    return ran.stdout


def ensure_repository(directory: Path) -> Path:
    """The repository under ``directory`` (``apt/``, with ``key.gpg`` beside it), built once
    per package content; returns its root."""
    root = directory / "apt"
    stamp = root / ".built"
    if stamp.exists() and stamp.read_text() == _digest():
        return root
    dpkg_deb = _tool("dpkg-deb", "dpkg")
    ftparchive = _tool("apt-ftparchive", "apt-utils")
    gpg = _tool("gpg", "gnupg")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="fleet-apt-") as tmp:
        tree = Path(tmp) / "pkg"
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN" / "control").write_text(_CONTROL)
        bin_dir = tree / "usr" / "bin"
        bin_dir.mkdir(parents=True)
        for name, text in (("nvidia-container-runtime", _runtime()), ("nvidia-ctk", _NVIDIA_CTK)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        deb = root / f"{PACKAGE}_{VERSION}_all.deb"
        _run([dpkg_deb, "--root-owner-group", "--build", str(tree), str(deb)], root)
        (root / "Packages").write_text(_run([ftparchive, "packages", "."], root))
        (root / "Release").write_text(_run([ftparchive, "release", "."], root))
        docker_root = root / DOCKER_TREE
        dists = _docker_tree(Path(tmp), docker_root, dpkg_deb, ftparchive)
        # A throwaway key: made here, used here, never trusted anywhere but by the lab's hosts.
        home = Path(tmp) / "gnupg"
        home.mkdir(mode=0o700)
        env = {**os.environ, "GNUPGHOME": str(home)}
        batch = [gpg, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        _run(
            [
                *batch,
                "--quick-gen-key",
                "fleet lab apt <lab@fleet.invalid>",
                "ed25519",
                "sign",
                "1y",
            ],
            root,
            env,
        )
        for signed in (root, dists):
            _run([*batch, "--clearsign", "-o", "InRelease", "Release"], signed, env)
            _run([*batch, "-abs", "-o", "Release.gpg", "Release"], signed, env)
        (directory / "apt-key.gpg").write_bytes(
            subprocess.run([gpg, "--export"], env=env, capture_output=True, check=True).stdout
        )
    stamp.write_text(_digest())
    return root


def _docker_tree(tmp: Path, root: Path, dpkg_deb: str, ftparchive: str) -> Path:
    """Docker's layout under ``root``: ``pool/`` and ``dists/SUITE/stable/binary-ARCH``;
    returns the suite's directory (where its Release is signed)."""
    arch = _run(["dpkg", "--print-architecture"], tmp).strip()
    pool = root / "pool" / "stable"
    pool.mkdir(parents=True)
    _, files, depends = _engine_files()
    for control in _docker_packages(depends):
        package = control.split("\n", 1)[0].removeprefix("Package: ")
        tree = tmp / package
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN" / "control").write_text(control)
        if package == "docker-ce":
            (tree / "DEBIAN" / "postinst").write_text(_DOCKER_POSTINST)
            (tree / "DEBIAN" / "postinst").chmod(0o755)
            for path in files:
                target = tree / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                if os.path.islink(path):
                    target.symlink_to(os.readlink(path))
                else:
                    shutil.copy2(path, target)
        # Uncompressed: built on every new lab directory, served on the lab's own network.
        _run([dpkg_deb, "-Znone", "--root-owner-group", "--build", str(tree), str(pool)], tmp)
    suite = root / "dists" / DOCKER_SUITE
    binary = suite / "stable" / f"binary-{arch}"
    binary.mkdir(parents=True)
    (binary / "Packages").write_text(_run([ftparchive, "packages", "pool"], root))
    fields = {
        "Origin": "Docker",
        "Label": "Docker CE",
        "Suite": DOCKER_SUITE,
        "Codename": DOCKER_SUITE,
        "Components": "stable",
        "Architectures": arch,
    }
    options = [f"-oAPT::FTPArchive::Release::{k}={v}" for k, v in fields.items()]
    (suite / "Release").write_text(_run([ftparchive, *options, "release", "."], suite))
    return suite


def key_file(directory: Path) -> Path:
    """The repository's public key (binary OpenPGP), as apt's ``signed-by`` takes it."""
    return directory / "apt-key.gpg"


def key_fingerprint(directory: Path) -> str:
    """The repository key's fingerprint, as gpg prints it (the lab's inventory gives it,
    as an operator copies a publisher's)."""
    gpg = _tool("gpg", "gnupg")
    listed = _run(
        [gpg, "--batch", "--with-colons", "--show-keys", str(key_file(directory))], directory
    )
    for line in listed.splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    raise LabError(f"gpg printed no fingerprint for {key_file(directory)}")


def serve(client: docker.DockerClient, lab: str, directory: Path, image: str) -> str:
    """Serve the repository from a container of the lab's (kept if it runs); its URL."""
    root = ensure_repository(directory)
    name = f"{lab}-apt"
    try:
        container: Any = client.containers.get(name)
        if container.status != "running":
            container.remove(force=True)
            container = None
    except docker.errors.NotFound:
        container = None
    if container is None:
        container = client.containers.run(
            image,
            ["python3", "-m", "http.server", str(PORT), "--directory", "/srv/apt"],
            name=name,
            detach=True,
            labels={ROLE_LABEL: lab},
            volumes={str(root): {"bind": "/srv/apt", "mode": "ro"}},
        )
    deadline = time.monotonic() + 30
    while True:
        container.reload()
        address = container.attrs["NetworkSettings"]["IPAddress"]
        if address:
            code, _ = container.exec_run(
                [
                    "python3",
                    "-c",
                    f"import urllib.request as u; u.urlopen('http://127.0.0.1:{PORT}/Release')",
                ]
            )
            if code == 0:
                return f"http://{address}:{PORT}/"
        if time.monotonic() > deadline:
            raise LabError(f"the lab's apt repository ({name}) did not answer in 30 s")
        time.sleep(0.2)


def remove(client: docker.DockerClient, lab: str) -> None:
    """Stop serving the lab's repository."""
    for container in client.containers.list(all=True, filters={"label": f"{ROLE_LABEL}={lab}"}):
        container.remove(force=True)

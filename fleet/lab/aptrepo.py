"""The lab's signed apt repository: a stand-in NVIDIA Container Toolkit for bare hosts.

NVIDIA's apt repository cannot be reached from the lab. This one is made the way such a
repository is made: the package by ``dpkg-deb``, ``Packages`` and ``Release`` by
``apt-ftparchive``, ``InRelease`` signed by ``gpg`` with a throwaway key of the lab's. A
container of its own serves it over the lab's network. fleet reaches it as it reaches
NVIDIA's flat repository (``deb [signed-by=KEY] URL /``): only the URL and the key come
from the lab's inventory.

The package, ``nvidia-container-toolkit``, holds what fleet relies on of the real one:
``nvidia-container-runtime`` (the lab's runtime wrapper around runc) and ``nvidia-ctk``.
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


def _runtime() -> str:
    return (
        resources.files("fleet")
        .joinpath("data", "lab", "nvidia_container_runtime.py")
        .read_text(encoding="utf-8")
    )


def _digest() -> str:
    text = "\0".join([_CONTROL, _NVIDIA_CTK, _runtime()])
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
        _run([*batch, "--clearsign", "-o", "InRelease", "Release"], root, env)
        _run([*batch, "-abs", "-o", "Release.gpg", "Release"], root, env)
        (directory / "apt-key.gpg").write_bytes(
            subprocess.run([gpg, "--export"], env=env, capture_output=True, check=True).stdout
        )
    stamp.write_text(_digest())
    return root


def key_file(directory: Path) -> Path:
    """The repository's public key (binary OpenPGP), as apt's ``signed-by`` takes it."""
    return directory / "apt-key.gpg"


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

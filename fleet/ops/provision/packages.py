"""What a bare server lacks to be a fleet host, and the apt run that installs it (pure).

``fleet_provision.install`` names what provisioning may install where it is missing:

- ``engine``: Docker's engine from the distribution (``docker.io``), enabled and started;
- ``tools``: what fleet's host programs use (``python3``, ``cron``, ``util-linux`` for
  flock/setpriv/setsid, ``ca-certificates``);
- ``nvidia_toolkit``: the NVIDIA Container Toolkit from NVIDIA's apt repository (its URL
  and signing key from ``nvidia_repository``), on hosts whose ``nvidia-smi`` answers. The
  driver itself is out of scope: a host without one is told so.

Installs run with apt on Debian and Ubuntu, non-interactively, waiting for the dpkg lock
(``apt_lock_timeout``) and keeping the host's configuration files. A failed run shows
apt's own words and takes back the repository it added.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

INSTALLABLE = ("engine", "tools", "nvidia_toolkit")
ENGINE_PACKAGE = "docker.io"
TOOL_PACKAGES = ("python3", "cron", "util-linux", "ca-certificates")
TOOLKIT_PACKAGE = "nvidia-container-toolkit"
# What the facts program asks dpkg about, by these names (its answer says which are
# installed; tests/test_packages.py holds the two lists together).
KNOWN_PACKAGES = (ENGINE_PACKAGE, "docker-ce", TOOLKIT_PACKAGE, *TOOL_PACKAGES)
SUPPORTED = ("debian", "ubuntu")
APT_LOCK_TIMEOUT = 120  # seconds apt waits for the dpkg lock, by default
NVIDIA_DEFAULT_URL = "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)"
NVIDIA_KEYRING = "/etc/apt/keyrings/fleet-nvidia-container-toolkit"


@dataclass(frozen=True)
class AptRepository:
    """A flat apt repository (``deb [signed-by=KEY] URL /``) and its signing key's bytes."""

    url: str
    key: bytes
    armored: bool

    @property
    def keyring(self) -> str:
        # apt reads an armored key only from a file named .asc.
        return NVIDIA_KEYRING + (".asc" if self.armored else ".gpg")


@dataclass(frozen=True)
class OsRelease:
    """/etc/os-release, as far as installing goes."""

    id: str = ""
    id_like: str = ""
    pretty: str = ""

    @property
    def supported(self) -> bool:
        return bool({self.id, *self.id_like.split()} & set(SUPPORTED))


@dataclass(frozen=True)
class Install:
    """One apt run: packages, the repository to add first (or none), and whether the
    engine is among them (then it is enabled and started, and must answer)."""

    packages: tuple[str, ...]
    repository: AptRepository | None = None
    engine: bool = False
    skipped: tuple[str, ...] = ()  # what was asked and is not done, with why


def needed(
    install: frozenset[str],
    installed: Mapping[str, bool],
    *,
    engine_present: bool,
    nvidia_smi: bool,
    has_runtime: bool,
    repository: AptRepository | None,
) -> Install:
    """What to install on a host (pure): ``installed`` says which known packages it has."""
    packages: list[str] = []
    skipped: list[str] = []
    engine = False
    if "engine" in install and not engine_present:
        if not (installed.get(ENGINE_PACKAGE) or installed.get("docker-ce")):
            packages.append(ENGINE_PACKAGE)
        engine = True
    if "tools" in install:
        packages += [name for name in TOOL_PACKAGES if not installed.get(name)]
    wanted_repository = None
    if "nvidia_toolkit" in install and not (installed.get(TOOLKIT_PACKAGE) or has_runtime):
        if nvidia_smi:
            packages.append(TOOLKIT_PACKAGE)
            wanted_repository = repository
        else:
            skipped.append(
                "nvidia_toolkit: no NVIDIA driver answers (nvidia-smi); installing the driver is "
                "out of fleet's scope: install it, reboot, and provision again"
            )
    return Install(tuple(packages), wanted_repository, engine, tuple(skipped))

"""What a bare server lacks to be a fleet host, and the apt run that installs it (pure).

``fleet_provision.install`` names what provisioning may install where it is missing:

- ``engine``: Docker's engine, enabled and started: the distribution's ``docker.io``, or
  with ``engine_package: docker-ce`` Docker's own packages from Docker's apt repository
  (its URL and signing key from ``docker_repository``);
- ``tools``: what fleet's host programs use (``python3``, ``cron``, ``util-linux`` for
  flock/setpriv/setsid, ``ca-certificates``);
- ``nvidia_toolkit``: the NVIDIA Container Toolkit from NVIDIA's apt repository (its URL
  and signing key from ``nvidia_repository``), on hosts whose ``nvidia-smi`` answers. The
  driver itself is out of scope: a host without one is told so.

Installs run with apt on Debian and Ubuntu, non-interactively, waiting for the dpkg lock
(``apt_lock_timeout``) and keeping the host's configuration files. A failed run shows
apt's own words and takes back the repositories it added.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

INSTALLABLE = ("engine", "tools", "nvidia_toolkit")
ENGINE_PACKAGE = "docker.io"
# What each engine_package choice installs (Docker's own split into three).
ENGINE_PACKAGES = {
    "docker.io": ("docker.io",),
    "docker-ce": ("docker-ce", "docker-ce-cli", "containerd.io"),
}
TOOL_PACKAGES = ("python3", "cron", "util-linux", "ca-certificates")
TOOLKIT_PACKAGE = "nvidia-container-toolkit"
# What the facts program asks dpkg about, by these names (its answer says which are
# installed; tests/test_packages.py holds the two lists together).
KNOWN_PACKAGES = (
    *ENGINE_PACKAGES["docker.io"],
    *ENGINE_PACKAGES["docker-ce"],
    TOOLKIT_PACKAGE,
    *TOOL_PACKAGES,
)
SUPPORTED = ("debian", "ubuntu")
APT_LOCK_TIMEOUT = 120  # seconds apt waits for the dpkg lock, by default
NVIDIA_DEFAULT_URL = "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)"
# Docker's repository is one per distribution and release: filled in per host.
DOCKER_DEFAULT_URL = "https://download.docker.com/linux/{distribution}"
_CODENAME = re.compile(r"[a-z][a-z0-9.-]{0,31}")


@dataclass(frozen=True)
class OsRelease:
    """/etc/os-release, as far as installing goes."""

    id: str = ""
    id_like: str = ""
    pretty: str = ""
    codename: str = ""  # VERSION_CODENAME
    ubuntu_codename: str = ""  # UBUNTU_CODENAME, on Ubuntu's derivatives

    @property
    def supported(self) -> bool:
        return bool({self.id, *self.id_like.split()} & set(SUPPORTED))

    @property
    def distribution(self) -> str:
        """The supported distribution this one is (or derives from); empty if none."""
        for name in (self.id, *self.id_like.split()):
            if name in SUPPORTED:
                return name
        return ""

    @property
    def release(self) -> str:
        """The release's codename as the distribution's repositories name it (an Ubuntu
        derivative's own codename is not Ubuntu's); empty when unknown or malformed."""
        name = self.codename
        if self.distribution == "ubuntu" and self.ubuntu_codename:
            name = self.ubuntu_codename
        return name if _CODENAME.fullmatch(name) else ""


@dataclass(frozen=True)
class AptRepository:
    """An apt repository fleet adds, and its signing key's bytes.

    ``suite`` is ``/`` for a flat repository (``deb [signed-by=KEY] URL /``), else a
    suite with ``components``. ``{distribution}`` and ``{codename}`` in the URL or suite
    are the host's own (/etc/os-release), as Docker's repository needs.
    """

    name: str  # the files fleet writes are named after it
    url: str
    key: bytes
    armored: bool
    suite: str = "/"
    components: tuple[str, ...] = ()

    @property
    def keyring(self) -> str:
        # apt reads an armored key only from a file named .asc.
        return f"/etc/apt/keyrings/fleet-{self.name}" + (".asc" if self.armored else ".gpg")

    @property
    def sources(self) -> str:
        return f"/etc/apt/sources.list.d/fleet-{self.name}.list"

    def source(self, release: OsRelease) -> str:
        """``URL SUITE [COMPONENT...]`` for this host; empty when it needs a codename the
        host does not say."""
        fill = {"distribution": release.distribution, "codename": release.release}
        text = " ".join((self.url, self.suite, *self.components))
        if "{codename}" in text and not fill["codename"]:
            return ""
        return text.format(**fill)


@dataclass(frozen=True)
class Install:
    """One apt run: packages, the repositories to add first with their source lines for
    this host, and whether the engine is among them (then it is enabled and started, and
    must answer). ``refused`` says why this host cannot have it (then nothing runs)."""

    packages: tuple[str, ...]
    repositories: tuple[tuple[AptRepository, str], ...] = ()
    engine: bool = False
    skipped: tuple[str, ...] = ()  # what was asked and is not done, with why
    refused: str = ""


def needed(
    install: frozenset[str],
    installed: Mapping[str, bool],
    *,
    engine_present: bool,
    nvidia_smi: bool,
    has_runtime: bool,
    repository: AptRepository | None,
    engine_package: str = ENGINE_PACKAGE,
    docker_repository: AptRepository | None = None,
    release: OsRelease | None = None,
) -> Install:
    """What to install on a host of ``release`` (pure): ``installed`` says which known
    packages it has."""
    packages: list[str] = []
    skipped: list[str] = []
    repositories: list[AptRepository] = []
    engine = False
    if "engine" in install and not engine_present:
        if not any(installed.get(name) for name in ENGINE_PACKAGES):
            packages += ENGINE_PACKAGES[engine_package]
            if engine_package != ENGINE_PACKAGE and docker_repository is not None:
                repositories.append(docker_repository)
        engine = True
    if "tools" in install:
        packages += [name for name in TOOL_PACKAGES if not installed.get(name)]
    if "nvidia_toolkit" in install and not (installed.get(TOOLKIT_PACKAGE) or has_runtime):
        if nvidia_smi:
            packages.append(TOOLKIT_PACKAGE)
            if repository is not None:
                repositories.append(repository)
        else:
            skipped.append(
                "nvidia_toolkit: no NVIDIA driver answers (nvidia-smi); installing the driver is "
                "out of fleet's scope: install it, reboot, and provision again"
            )
    release = release or OsRelease()
    sources = tuple((r, r.source(release)) for r in repositories)
    refused = ""
    if packages and not release.supported:
        refused = (
            f"unsupported distribution: {release.pretty or release.id or 'unknown'} "
            f"(/etc/os-release); fleet installs {', '.join(packages)} with apt, on Debian "
            "and Ubuntu"
        )
    elif any(not line for _, line in sources):
        refused = (
            f"{release.pretty or release.id}: /etc/os-release names no release "
            "(VERSION_CODENAME), and Docker's apt repository is one per release"
        )
    return Install(tuple(packages), sources, engine, tuple(skipped), refused)

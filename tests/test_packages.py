"""What a bare server lacks, and how provisioning installs it (facts in, plan and result out)."""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fleet.errors import ProvisionSettingsError
from fleet.ops.provision import sources
from fleet.ops.provision.facts import ProvisionFacts
from fleet.ops.provision.packages import KNOWN_PACKAGES, OsRelease, needed
from fleet.ops.provision.plan import install_change, install_plan, plan
from fleet.ops.provision.run import ProvisionOptions
from fleet.programs import program
from fleet.results import Outcome
from tests.test_provision import (
    FakeTransport,
    converged,
    recorded,
    run_provision,
    settings,
    with_host,
)

ARMORED = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ...\n-----END PGP PUBLIC KEY BLOCK-----\n"


def bare(**changes: object) -> ProvisionFacts:
    """A fresh server: no engine, no toolkit, no cron, a driver (nvidia-smi answers)."""
    facts = with_host(
        recorded("fresh-classic"),
        engine_ok=False,
        engine_error="docker: not found",
        runtimes=(),
        nvidia_smi=True,
    )
    defaults: dict[str, object] = {
        "os_release": OsRelease("debian", "", "Debian GNU/Linux 12 (bookworm)"),
        "packages": {"python3": True, "util-linux": True},
        "tools": frozenset({"python3", "flock", "setpriv", "setsid"}),
    }
    return dataclasses.replace(facts, **{**defaults, **changes})  # type: ignore[arg-type]


def key_file(tmp_path: Path, content: bytes = ARMORED) -> str:
    path = tmp_path / "nvidia.asc"
    path.write_bytes(content)
    return str(path)


def test_only_what_is_missing_is_installed() -> None:
    plan = needed(
        frozenset({"engine", "tools", "nvidia_toolkit"}),
        {"python3": True, "util-linux": True},
        engine_present=False,
        nvidia_smi=True,
        has_runtime=False,
        repository=None,
    )
    assert plan.packages == ("docker.io", "cron", "ca-certificates", "nvidia-container-toolkit")
    assert plan.engine and plan.skipped == ()
    converged = needed(
        frozenset({"engine", "tools", "nvidia_toolkit"}),
        dict.fromkeys(("docker.io", "python3", "cron", "util-linux", "ca-certificates"), True),
        engine_present=True,
        nvidia_smi=True,
        has_runtime=True,
        repository=None,
    )
    assert converged.packages == () and not converged.engine


def test_no_driver_no_toolkit_and_the_host_is_told_why() -> None:
    plan = needed(
        frozenset({"nvidia_toolkit"}),
        {},
        engine_present=True,
        nvidia_smi=False,
        has_runtime=False,
        repository=None,
    )
    assert plan.packages == ()
    (why,) = plan.skipped
    assert "no NVIDIA driver answers" in why and "out of fleet's scope" in why


def test_the_install_change_adds_the_repository_with_its_key(tmp_path: Path) -> None:
    config = settings(
        install=["engine", "tools", "nvidia_toolkit"],
        nvidia_repository={"url": "http://10.0.0.9:8080/", "key": key_file(tmp_path)},
    )
    change = install_change(config, install_plan(config, bare()))
    assert change is not None and change.kind == "packages_installed"
    (command,) = change.commands
    assert command.argv[4:10] == (
        "120",
        "docker.io cron ca-certificates nvidia-container-toolkit",
        "yes",
        "/etc/apt/sources.list.d/fleet-nvidia-container-toolkit.list",
        "/etc/apt/keyrings/fleet-nvidia-container-toolkit.asc",
        "http://10.0.0.9:8080/ /",
    )
    assert base64.b64decode(command.argv[10]) == ARMORED and len(command.argv) == 11
    assert str(command) == (
        "apt-get install docker.io cron ca-certificates nvidia-container-toolkit (adding "
        "http://10.0.0.9:8080/, signed-by /etc/apt/keyrings/fleet-nvidia-container-toolkit.asc)"
    )
    assert install_change(settings(), install_plan(settings(), bare())) is None  # opt-in


def test_docker_ce_comes_from_dockers_repository_for_the_hosts_release(tmp_path: Path) -> None:
    config = settings(
        install=["engine", "nvidia_toolkit"],
        engine_package="docker-ce",
        docker_repository={"key": key_file(tmp_path)},
        nvidia_repository={"key": key_file(tmp_path)},
    )
    debian = bare(os_release=OsRelease("debian", "", "Debian GNU/Linux 12", "bookworm"))
    wanted = install_plan(config, debian)
    assert wanted.packages == (
        "docker-ce",
        "docker-ce-cli",
        "containerd.io",
        "nvidia-container-toolkit",
    )
    assert [line for _, line in wanted.repositories] == [
        "https://download.docker.com/linux/debian bookworm stable",
        "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /",
    ]
    change = install_change(config, wanted)
    assert change is not None
    (command,) = change.commands
    assert command.argv[7:10] == (
        "/etc/apt/sources.list.d/fleet-docker.list",
        "/etc/apt/keyrings/fleet-docker.asc",
        "https://download.docker.com/linux/debian bookworm stable",
    )
    # An Ubuntu derivative: Ubuntu's repository, under Ubuntu's codename.
    pop = OsRelease("pop", "ubuntu debian", "Pop!_OS 22.04", "jammy-pop", "jammy")
    (docker, _), _ = install_plan(config, bare(os_release=pop)).repositories
    assert docker.source(pop) == "https://download.docker.com/linux/ubuntu jammy stable"
    # A host whose engine package is there already gets none from the other source.
    has_engine = bare(packages={"docker.io": True})
    assert "docker-ce" not in install_plan(config, has_engine).packages


def test_a_release_without_a_codename_is_refused_before_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = settings(
        install=["engine"],
        engine_package="docker-ce",
        docker_repository={"key": key_file(tmp_path)},
    )
    transport = FakeTransport()
    nameless = bare(os_release=OsRelease("debian", "", "Debian GNU/Linux trixie/sid", ""))
    result = run_provision(monkeypatch, [nameless], ProvisionOptions(), transport, config)
    assert transport.commands == []
    assert result.outcome is Outcome.FAILED
    assert result.reason == (
        "Debian GNU/Linux trixie/sid: /etc/os-release names no release (VERSION_CODENAME), and "
        "Docker's apt repository is one per release"
    )


def test_docker_users_join_the_group_once_and_a_missing_one_stops_the_host_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = settings(install=["engine"], docker_users=["deploy", "alice"])
    members = {"deploy": False, "alice": True}
    changes = plan(config, converged(config, dataclasses.replace(recorded("fresh-classic"))))
    assert changes == []  # converged() knows nothing of the group: nothing asked of it
    host = dataclasses.replace(converged(config), docker_users=members)
    (change,) = plan(config, host)
    assert (change.kind, change.what) == ("docker_user_added", "add deploy to the docker group")
    assert [c.argv for c in change.commands] == [("usermod", "-aG", "docker", "deploy")]
    transport = FakeTransport()
    ghost = bare(docker_users={"deploy": None, "alice": True})
    result = run_provision(monkeypatch, [ghost], ProvisionOptions(), transport, config)
    assert transport.commands == []  # nothing installed for a host that would fail after
    assert result.outcome is Outcome.FAILED
    assert result.reason == "docker_users names 'deploy', who does not exist on the host"
    assert result.fix == "create the user first, or take it out of fleet_provision.docker_users"


@pytest.mark.parametrize(
    ("provision", "message"),
    [
        ({"install": ["engine", "driver"]}, "'driver' is nothing fleet installs"),
        ({"install": "engine"}, "install: expected a list"),
        ({"install": ["nvidia_toolkit"]}, "never fetches a repository's key unchecked"),
        (
            {"install": ["nvidia_toolkit"], "nvidia_repository": {"url": "ftp://x/"}},
            "is not an http(s) or file URL",
        ),
        ({"apt_lock_timeout": "soon"}, "expected seconds to wait for the dpkg lock"),
        ({"engine_package": "podman"}, "'podman' is no engine fleet installs"),
        (
            {"install": ["engine"], "engine_package": "docker-ce"},
            "docker_repository: engine_package is docker-ce, but no signing key is given",
        ),
        (
            {"docker_repository": {"url": "https://x/{arch}", "key": "/k"}},
            "is not an http(s) or file URL",
        ),
        ({"docker_users": "deploy"}, "docker_users: expected a list of user names"),
        ({"docker_users": ["root"]}, "not root"),
        ({"docker_users": ["a b"]}, "docker_users[0]: expected a user or group name"),
    ],
)
def test_bad_install_settings_name_the_setting(provision: dict, message: str) -> None:
    with pytest.raises(ProvisionSettingsError, match=re.escape(message)):
        settings(**provision)


def test_a_key_that_is_no_openpgp_key_is_refused(tmp_path: Path) -> None:
    path = key_file(tmp_path, b"<html>not found</html>")
    with pytest.raises(ProvisionSettingsError, match="is not an OpenPGP public key"):
        settings(install=["nvidia_toolkit"], nvidia_repository={"key": path})
    default = settings(install=["nvidia_toolkit"], nvidia_repository={"key": key_file(tmp_path)})
    assert default.nvidia_repository is not None
    assert default.nvidia_repository.url.startswith("https://nvidia.github.io/libnvidia-container/")


def test_check_on_a_bare_host_says_what_it_would_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = FakeTransport()
    config = settings(install=["engine", "tools"])
    result = run_provision(monkeypatch, [bare()], ProvisionOptions(check=True), transport, config)
    assert transport.commands == []
    assert result.outcome is Outcome.CHANGED
    assert result.reason == (
        "would install docker.io, cron, ca-certificates and start the engine; the rest is "
        "planned once the engine runs"
    )


def test_an_unsupported_distribution_is_refused_before_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = FakeTransport()
    alpine = bare(os_release=OsRelease("alpine", "", "Alpine Linux v3.20"))
    config = settings(install=["engine", "tools"])
    result = run_provision(monkeypatch, [alpine], ProvisionOptions(), transport, config)
    assert transport.commands == []
    assert result.outcome is Outcome.FAILED
    assert result.reason is not None
    assert result.reason.startswith("unsupported distribution: Alpine Linux v3.20")
    assert "on Debian and Ubuntu" in result.reason
    assert result.fix == "install them yourself, or take them out of fleet_provision.install"
    ubuntu = OsRelease("pop", "ubuntu debian", "Pop!_OS 22.04")
    assert ubuntu.supported


def test_the_facts_program_asks_dpkg_about_the_packages_fleet_installs() -> None:
    line = next(
        text for text in program("provision_facts.sh").splitlines() if "dpkg-query -W" in text
    )
    asked = line.split("\\n'", 1)[1].split(" 2>")[0].split()
    assert tuple(asked) == KNOWN_PACKAGES


def _gpg(home: Path, *args: str) -> bytes:
    gpg = shutil.which("gpg")
    if gpg is None:
        pytest.fail("gpg is not installed: scripts/setup.sh installs it (gnupg)")
    batch = [gpg, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    ran = subprocess.run(
        [*batch, *args], env={**os.environ, "GNUPGHOME": str(home)}, capture_output=True, check=True
    )
    return ran.stdout


@pytest.fixture(scope="module")
def gpg_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, bytes, str]]:
    """Keys made by gpg (the oracle): per algorithm, armored, binary and gpg's fingerprint."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    keys = {}
    for algorithm in ("ed25519", "rsa3072"):  # NVIDIA's and Docker's keys are RSA
        uid = f"{algorithm} <{algorithm}@fleet.invalid>"
        _gpg(home, "--quick-gen-key", uid, algorithm, "sign", "1y")
        listed = _gpg(home, "--with-colons", "--fingerprint", uid).decode()
        fpr = next(line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:"))
        keys[algorithm] = (_gpg(home, "--armor", "--export", uid), _gpg(home, "--export", uid), fpr)
    return keys


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa3072"])
def test_a_keys_fingerprint_is_the_one_gpg_prints(
    gpg_keys: dict[str, tuple[bytes, bytes, str]], algorithm: str
) -> None:
    armored, binary, fpr = gpg_keys[algorithm]
    assert len(fpr) == 40
    assert sources.fingerprint(armored) == sources.fingerprint(binary) == fpr


def test_a_key_whose_fingerprint_is_not_the_given_one_is_refused(
    gpg_keys: dict[str, tuple[bytes, bytes, str]], tmp_path: Path
) -> None:
    armored, _, fpr = gpg_keys["rsa3072"]
    path = key_file(tmp_path, armored)
    # As publishers print it: groups of four, any case.
    spaced = " ".join(fpr[i : i + 4] for i in range(0, 40, 4)).lower()
    checked = settings(
        install=["nvidia_toolkit"], nvidia_repository={"key": path, "fingerprint": spaced}
    )
    assert checked.nvidia_repository is not None
    assert checked.nvidia_repository.key == armored
    other = gpg_keys["ed25519"][2]
    with pytest.raises(ProvisionSettingsError) as refused:
        settings(install=["nvidia_toolkit"], nvidia_repository={"key": path, "fingerprint": other})
    assert refused.value.message == (
        f"fleet_provision.nvidia_repository.fingerprint: the key in {path} has fingerprint "
        f"{fpr}, not {other}: it is not the key you checked"
    )
    with pytest.raises(ProvisionSettingsError, match="is not an OpenPGP fingerprint"):
        settings(install=["nvidia_toolkit"], nvidia_repository={"key": path, "fingerprint": "ab"})
    broken = key_file(tmp_path, armored.replace(b"\n=", b"\n!=", 1)[:200])
    with pytest.raises(ProvisionSettingsError, match="cannot read the key in"):
        settings(install=["nvidia_toolkit"], nvidia_repository={"key": broken, "fingerprint": fpr})


def test_both_packet_header_formats_give_the_same_fingerprint(
    gpg_keys: dict[str, tuple[bytes, bytes, str]],
) -> None:
    _, binary, fpr = gpg_keys["rsa3072"]
    assert binary[0] == 0x99  # gpg writes the old format: tag 6, a two-octet length
    body = binary[3 : 3 + int.from_bytes(binary[1:3], "big")]
    assert 192 <= len(body) < 8384  # a new-format two-octet length
    first = len(body) - 192
    two_octets = bytes([0xC6, (first >> 8) + 192, first & 0xFF]) + body
    five_octets = bytes([0xC6, 255]) + len(body).to_bytes(4, "big") + body
    assert sources.fingerprint(two_octets) == sources.fingerprint(five_octets) == fpr
    with pytest.raises(ValueError, match="ends inside its first packet"):
        sources.fingerprint(five_octets[:-1])

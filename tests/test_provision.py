"""Provisioning without a host: settings, facts recorded on the lab, the pure planner.

Facts fixtures (``tests/fixtures/provision/*.json``) were recorded on the lab's hosts with
``tests/fixtures/provision/record.py``: ``fresh-*`` just after ``lab up``, ``provisioned-*``
after a provision with ``cron_schedule: "* * * * *"``, both before the script cron runs
moved out of the data root (:func:`recorded` says how they read now). Variations are
handwritten from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fleet.cli
from fleet.errors import CommandError, CronBlockError, ProvisionSettingsError
from fleet.hosts.model import FrozenDict, Host
from fleet.images.runspec import RunSpec
from fleet.ops import hostfiles
from fleet.ops.facts import GPU, Disk
from fleet.ops.provision import run as provision_run
from fleet.ops.provision.cron import apply_block, cron_block, find_block, render_copy, render_script
from fleet.ops.provision.facts import (
    FACTS_SCRIPT,
    FileState,
    PathState,
    ProvisionFacts,
    facts_arguments,
    parse_facts,
)
from fleet.ops.provision.plan import (
    Change,
    Command,
    dir_command,
    engine_config,
    plan,
    write_command,
)
from fleet.ops.provision.preflight import gpu_busy, preflight
from fleet.ops.provision.run import ProvisionOptions, provision, resolve_base_images, with_base
from fleet.ops.provision.settings import (
    BEGIN_MARKER,
    COPY_NOTE,
    END_MARKER,
    ProvisionSettings,
    parse_size,
    settings_for_hosts,
    settings_from_vars,
)
from fleet.results import FleetResult, HostResult, Outcome
from fleet.runner import Runner
from fleet.ssh.base import CommandResult
from tests.conftest import run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "provision"
DEFAULTS = settings_from_vars({})
USER_CRONTAB = (
    b"SHELL=/bin/sh\n"
    b"# the user's own jobs, with tabs, trailing blanks, CRLF and latin-1 bytes\n"
    b"17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly   \n"
    b"0 3 * * * backup /usr/local/bin/backup --to \xe9t\xe9\r\n"
)


# What a Debian host answers for the script's directory and its parents, before provision.
LIB_FACTS = (
    "@@p_lib\n/usr/local/lib/fleet|absent\n/usr/local/lib|directory|755|0|0\n"
    "/usr/local|directory|755|0|0\n/usr|directory|755|0|0\n/|directory|755|0|0\n"
    "@@p_lib_real\n/usr/local/lib\n/data\n"
)


def recorded(name: str) -> ProvisionFacts:
    """A recorded host's facts, as the facts script of today reads that host.

    The fixtures were recorded while cron ran ``/data/aicron.sh``: what they say of the
    script is now what is said of the copy at that place, the new place is empty, and its
    directory's parents are Debian's (:data:`LIB_FACTS`). A ``provisioned-*`` fixture is
    thus a host provisioned by the fleet of before the move. They were recorded before fleet
    asked what manages the engine: the lab's hosts answer ``sysv`` (their init script).
    """
    record = json.loads((FIXTURES / f"{name}.json").read_text())
    stdout = record["stdout"]
    if "\n@@p_engine_manager\n" not in stdout:
        stdout += "@@p_engine_manager\nsysv\n"
    if record["arguments"][1] == "/data/aicron.sh":
        stdout = stdout.replace("\n@@p_script\n", "\n@@p_copy\n")
        stdout = stdout.replace("\n@@p_cron\n", "\n@@p_script\nabsent\n@@p_cron\n")
        stdout += LIB_FACTS
    return parse_facts(stdout, record["paths"])


def settings(**provision_vars: Any) -> ProvisionSettings:
    return settings_from_vars({"fleet_provision": provision_vars})


def file_state(content: bytes, mode: int = 0o644, uid: int = 0) -> FileState:
    return FileState(
        kind="regular file",
        mode=mode,
        uid=uid,
        gid=0,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        content=content,
    )


def converged(config: ProvisionSettings, base: ProvisionFacts | None = None) -> ProvisionFacts:
    """The facts of a host on which ``config`` has been applied."""
    base = base or recorded("fresh-classic")
    paths = {
        d.path: PathState("directory", d.mode, 0, 0, d.owner, d.group) for d in config.managed_dirs
    }
    cron_before = base.cron.content if base.cron is not None else b""
    cron = apply_block(cron_before or b"", cron_block(config))
    lib = {**base.lib, config.script_dir: PathState("directory", 0o755, 0, 0)}
    engine = engine_config(config, base)
    daemon_json = file_state(engine.content) if engine.content is not None else base.daemon_json
    return dataclasses.replace(
        base,
        paths=paths,
        script=file_state(render_script(config), 0o755),
        copy=file_state(render_copy(config), 0o644),
        lib=lib,
        cron=file_state(cron),
        daemon_json=daemon_json,
        live_restore=config.engine.live_restore if config.engine.manage else base.live_restore,
        engine_manager="sysv",
        weights_up=True,
        weights_probe="up",
    )


def kinds(changes: Sequence[Change]) -> list[str]:
    return [c.kind for c in changes]


def written(change: Change) -> bytes:
    """What a file change writes (the stdin of its write command)."""
    (stdin,) = [c.stdin for c in change.commands if c.stdin is not None]
    return stdin


# -- settings ----------------------------------------------------------------------------
def test_defaults_describe_the_labs_tree() -> None:
    assert ProvisionSettings() == DEFAULTS
    assert DEFAULTS.data_root == "/data"
    assert [d.path for d in DEFAULTS.managed_dirs] == [
        "/data",
        "/data/checkpoints",
        "/data/datasets",
        "/data/pretrained_models",
        "/data/projects",
    ]
    assert DEFAULTS.script_path == "/usr/local/lib/fleet/aicron.sh"
    assert DEFAULTS.copy_path == "/data/aicron.sh"
    assert (DEFAULTS.cron_file, DEFAULTS.cron_schedule) == ("/etc/crontab", "*/5 * * * *")
    assert DEFAULTS.weights_url == "http://127.0.0.1:8340/"
    assert (DEFAULTS.min_free_docker, DEFAULTS.min_free_data) == (10 << 30, 1 << 30)
    assert DEFAULTS.cron_line == (
        "*/5 * * * * root /bin/sh /usr/local/lib/fleet/aicron.sh >/dev/null"
    )
    assert not DEFAULTS.allow_writable_data_root


def test_the_documented_settings_are_the_defaults() -> None:
    import yaml

    project = yaml.safe_load(
        (Path(__file__).parent.parent / "inventory/group_vars/all.yml").read_text()
    )
    documented = settings_from_vars({"fleet_provision": project["fleet_provision"]})
    assert documented == DEFAULTS


def test_overrides_merge_key_by_key_and_min_free_entry_by_entry() -> None:
    found = settings_from_vars(
        {
            "fleet_provision": {"data_root": "/srv/data", "min_free": {"docker": "20G"}},
            "fleet_provision_overrides": {"cron_schedule": "*/2  * * * *", "min_free": {"data": 0}},
            "fleet_run": {"runtime": "nvidia"},
        }
    )
    assert found.data_root == "/srv/data"
    assert found.copy_path == "/srv/data/aicron.sh"
    assert found.script_path == "/usr/local/lib/fleet/aicron.sh"  # wherever the data is
    assert found.cron_schedule == "*/2 * * * *"  # blanks normalised
    assert (found.min_free_docker, found.min_free_data) == (20 << 30, 0)
    assert found.run_spec.runtime == "nvidia"


def test_directory_entries_may_carry_their_own_owner_and_mode() -> None:
    found = settings(
        dirs=["projects/shared", {"path": "projects", "mode": "2775", "group": "lab"}],
        weights_dir="projects/weights",
    )
    dirs = {d.path: d for d in found.managed_dirs}
    assert list(dirs) == [
        "/data",
        "/data/projects",
        "/data/projects/shared",
        "/data/projects/weights",
    ]
    assert (dirs["/data/projects"].mode, dirs["/data/projects"].group) == (0o2775, "lab")
    assert dirs["/data/projects/shared"].mode == 0o755


@pytest.mark.parametrize(
    ("variables", "message", "fix"),
    [
        ({"mode": 493}, "fleet_provision.mode: expected an octal mode", 'mode: "0755"'),
        ({"modes": "0755"}, "fleet_provision.modes: unknown setting", "use one of"),
        ({"cron_schedule": "*/5 * * *"}, "fleet_provision.cron_schedule", "5 fields"),
        ({"cron_schedule": "* * * * * rm -rf /"}, "fleet_provision.cron_schedule", None),
        ({"dirs": ["../etc"]}, "fleet_provision.dirs[0]", "below the data root"),
        ({"dirs": "checkpoints"}, "fleet_provision.dirs: expected a list", None),
        ({"data_root": "/etc"}, "is a system directory", None),
        ({"data_root": "/data; rm -rf /"}, "fleet_provision.data_root", "no spaces"),
        ({"cron_file": "/etc/cron.d/fleet.cron"}, "cron ignores files", "/etc/cron.d/fleet"),
        ({"min_free": {"docker": "10X"}}, "fleet_provision.min_free.docker", "10G"),
        ({"min_free": {"disk": "1G"}}, "fleet_provision.min_free.disk: unknown", None),
        ({"weights_port": 70000}, "fleet_provision.weights_port", None),
        ({"weights_bind": "every where"}, "fleet_provision.weights_bind", "0.0.0.0"),
        ({"owner": "bad name"}, "fleet_provision.owner", None),
        ({"base_image": " x"}, "fleet_provision.base_image", None),
        (
            {"allow_writable_data_root": "yes"},
            "fleet_provision.allow_writable_data_root: expected true or false",
            "allow_writable_data_root: true",
        ),
        # Root must never write, nor cron run, what a framework container can write.
        ({"data_root": "/usr/local"}, "would hold /usr/local/lib/fleet", "data_root: /data"),
        ({"data_root": "/usr/local/lib/fleet/x"}, "would hold /usr/local/lib/fleet", None),
        ({"log_file": "/data/logs/aicron.log"}, "is below the data root /data", "outside"),
        ({"cron_file": "/data/crontab"}, "fleet_provision.cron_file: /data/crontab is below", None),
    ],
)
def test_invalid_settings_name_the_place_and_the_fix(
    variables: dict[str, Any], message: str, fix: str | None
) -> None:
    with pytest.raises(ProvisionSettingsError) as caught:
        settings(**variables)
    assert message in caught.value.message
    assert caught.value.exit_code == 4
    if fix:
        assert fix in str(caught.value.fix) + caught.value.message


def test_settings_error_names_the_host() -> None:
    hosts = [Host("gpu1", FrozenDict({"fleet_provision": "yes"}))]
    with pytest.raises(
        ProvisionSettingsError, match="host gpu1: fleet_provision: expected a mapping"
    ):
        settings_for_hosts(hosts)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10G", 10 << 30),
        ("500M", 500 << 20),
        ("1.5T", 3 << 39),
        ("10GiB", 10 << 30),
        ("2kb", 2048),
        (7, 7),
    ],
)
def test_sizes(text: Any, size: int) -> None:
    assert parse_size(text) == size


# -- the script ---------------------------------------------------------------------------
def test_rendered_script_is_valid_shell_with_every_setting_filled_in(tmp_path: Path) -> None:
    script = render_script(DEFAULTS)
    assert b"__FLEET_" not in script
    assert b"WEIGHTS_PORT=8340\n" in script and b"URL=http://127.0.0.1:8340/\n" in script
    path = tmp_path / "aicron.sh"
    path.write_bytes(script)
    assert subprocess.run(["sh", "-n", str(path)], check=False).returncode == 0


def test_rendered_values_are_shell_quoted() -> None:
    hostile = "/tmp/it's $(touch /tmp/pwned) `x`; here"
    config = dataclasses.replace(DEFAULTS, log_file=hostile)
    template = "LOG=__FLEET_LOG__\nprintf '%s' \"$LOG\"\n"
    rendered = render_script(config, template)
    out = subprocess.run(["sh", "-c", rendered.decode()], capture_output=True, check=True)
    assert out.stdout.decode() == hostile
    with pytest.raises(ValueError, match="__FLEET_NOPE__"):
        render_script(config, "X=__FLEET_NOPE__\n")


@pytest.fixture
def local_service(tmp_path: Path) -> Iterator[tuple[ProvisionSettings, Path]]:
    """aicron.sh rendered for a temporary tree on this machine, and its service killed after."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = tmp_path / "data"
    (root / "pretrained_models").mkdir(parents=True)
    (root / "pretrained_models" / "model.bin").write_bytes(b"weights")
    script = root / "aicron.sh"
    config = dataclasses.replace(
        DEFAULTS,
        script_path=str(script),
        data_root=str(root),
        weights_dir=str(root / "pretrained_models"),
        weights_port=port,
        weights_bind="127.0.0.1",
        weights_user="",
        log_file=str(tmp_path / "aicron.log"),
        pid_file=str(tmp_path / "weights.pid"),
    )
    script.write_bytes(render_script(config))
    yield config, script
    pid_file = tmp_path / "weights.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        cmdline = (
            Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
        )
        if b"http.server" in cmdline:
            os.kill(pid, signal.SIGTERM)


def test_script_starts_the_service_once_and_logs_with_timestamps(
    local_service: tuple[ProvisionSettings, Path],
) -> None:
    config, script = local_service
    runs = [
        subprocess.Popen(["/bin/sh", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for run in runs:
        run.communicate(timeout=60)
    codes = [run.returncode for run in runs]
    assert codes == [0, 0, 0]
    with urllib.request.urlopen(config.weights_url + "model.bin", timeout=5) as answer:
        assert answer.read() == b"weights"
    log = Path(config.log_file).read_text().splitlines()
    started = [line for line in log if "started the weights service" in line]
    assert len(started) == 1, log  # concurrent runs: one starts it, the others find it up
    assert sum("nothing to do" in line for line in log) == 2
    assert all(line[:4].isdigit() and "T" in line[:11] and "aicron[" in line for line in log)
    again = subprocess.run(["/bin/sh", str(script)], capture_output=True, check=False, timeout=30)
    assert again.returncode == 0
    assert b"nothing to do" in again.stdout


@pytest.mark.hostile
def test_the_weights_service_follows_no_link_out_of_its_directory(
    local_service: tuple[ProvisionSettings, Path], tmp_path: Path
) -> None:
    # What a container that mounts the data root can plant among the weights: links to the
    # host's files and directories, at the top and deeper. Each is a 404, never served.
    config, script = local_service
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"the host's file")
    secret.chmod(0o644)  # readable by anyone: the server's own user could read it by name
    weights = Path(config.weights_dir)
    (weights / "leak.bin").symlink_to(secret)
    (weights / "hostdir").symlink_to(tmp_path)
    (weights / "sub").mkdir()
    (weights / "sub" / "ok.bin").write_bytes(b"deeper")
    (weights / "sub" / "leak").symlink_to(secret)
    ran = subprocess.run(["/bin/sh", str(script)], capture_output=True, check=False, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(config.weights_url + path, timeout=5) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, b""

    assert get("model.bin") == (200, b"weights")
    assert get("sub/ok.bin") == (200, b"deeper")
    for path in ("leak.bin", "hostdir/host-secret", "sub/leak", "hostdir/", "sub/../leak.bin"):
        status, body = get(path)
        assert status == 404 and b"the host" not in body, path
    status, listing = get("")
    assert status == 200 and b"model.bin" in listing and b"sub/" in listing
    # The weights directory itself swapped for a link after the service started: it keeps
    # serving the directory it opened, not what the name holds now.
    weights.rename(tmp_path / "moved")
    weights.symlink_to(tmp_path)
    assert get("host-secret")[0] == 404
    assert get("model.bin") == (200, b"weights")


def test_script_reports_a_missing_weights_directory(
    local_service: tuple[ProvisionSettings, Path],
) -> None:
    config, script = local_service
    os.rename(config.weights_dir, config.weights_dir + ".gone")
    ran = subprocess.run(["/bin/sh", str(script)], capture_output=True, check=False, timeout=30)
    assert ran.returncode == 1
    assert b"does not exist; run 'fleet provision'" in ran.stdout


def test_script_runs_from_root_and_python_isolated() -> None:
    script = render_script(DEFAULTS).decode()
    code = [line.strip() for line in script.splitlines() if not line.lstrip().startswith("#")]
    commands = [line for line in code if line and not re.fullmatch(r"[A-Z_]+=\S*", line)]
    assert commands[:2] == ["set -u", "cd / || exit 1"]
    calls = re.findall(r"python3(?: +-\S+)*", "\n".join(code))
    assert calls == ["python3 -I -c", "python3 -I -c"], calls


@pytest.mark.hostile
@pytest.mark.parametrize("planted", ["cwd", "PYTHONPATH"])
def test_script_imports_nothing_from_where_it_was_started(
    local_service: tuple[ProvisionSettings, Path], tmp_path: Path, planted: str
) -> None:
    # A urllib package where cron or a person starts the script, or on PYTHONPATH: python3
    # without -I (and without cd /) would import it as root.
    evil = tmp_path / "evil"
    marker = tmp_path / "imported"
    (evil / "urllib").mkdir(parents=True)
    (evil / "urllib" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    _, script = local_service
    env = {**os.environ, "PYTHONPATH": str(evil)} if planted == "PYTHONPATH" else None
    cwd = evil if planted == "cwd" else None
    ran = subprocess.run(
        ["/bin/sh", str(script)], cwd=cwd, env=env, capture_output=True, check=False, timeout=60
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert not marker.exists()


def test_copy_says_at_its_top_that_cron_runs_the_root_owned_script(tmp_path: Path) -> None:
    copy = render_copy(DEFAULTS)
    script = render_script(DEFAULTS)
    lines = copy.decode().splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[1] == (
        "# A COPY, for reading: cron runs /usr/local/lib/fleet/aicron.sh (root's, outside the "
        "data root,"
    )
    assert copy.replace(COPY_NOTE.encode(), b"") == script
    assert b"\nSELF=/usr/local/lib/fleet/aicron.sh\n" in copy  # one lock for both
    (tmp_path / "copy.sh").write_bytes(copy)
    assert subprocess.run(["sh", "-n", str(tmp_path / "copy.sh")], check=False).returncode == 0


# -- the cron block -----------------------------------------------------------------------
BLOCK = cron_block(DEFAULTS)


def test_block_is_appended_after_the_users_lines_byte_for_byte() -> None:
    after = apply_block(USER_CRONTAB, BLOCK)
    assert after == USER_CRONTAB + BLOCK
    assert apply_block(after, BLOCK) == after  # rerun: no duplicate


def test_unterminated_last_line_gets_its_newline_and_keeps_its_bytes() -> None:
    after = apply_block(b"0 1 * * * root /bin/true", BLOCK)
    assert after == b"0 1 * * * root /bin/true\n" + BLOCK


def test_block_is_replaced_in_place_between_user_lines() -> None:
    before = USER_CRONTAB + BLOCK + b"# after the block\n5 5 * * * root true\n"
    new_block = cron_block(dataclasses.replace(DEFAULTS, cron_schedule="* * * * *"))
    after = apply_block(before, new_block)
    assert after == USER_CRONTAB + new_block + b"# after the block\n5 5 * * * root true\n"


@pytest.mark.parametrize(
    "content",
    [
        BLOCK + BLOCK,
        BEGIN_MARKER.encode() + b"\n* * * * * root x\n",
        END_MARKER.encode() + b"\n" + BEGIN_MARKER.encode() + b"\n",
    ],
)
def test_malformed_markers_are_refused(content: bytes) -> None:
    with pytest.raises(CronBlockError, match="not one well-formed block"):
        apply_block(content, BLOCK)
    facts = dataclasses.replace(converged(DEFAULTS), cron=file_state(content))
    verdict = preflight(DEFAULTS, facts)
    assert "markers are not one well-formed block" in verdict.failures[0].message
    assert "cron_block" not in " ".join(kinds(plan(DEFAULTS, facts)))


_user_text = st.lists(
    st.binary(max_size=40).filter(lambda b: b"fleet aicron" not in b), max_size=8
).map(b"\n".join)


@given(before=_user_text, after=_user_text)
def test_user_bytes_survive_any_number_of_applications(before: bytes, after: bytes) -> None:
    once = apply_block(before, BLOCK)
    prefix = once[: -len(BLOCK)]
    assert once.endswith(BLOCK) and prefix in (before, before + b"\n")
    assert apply_block(once, BLOCK) == once
    other = BLOCK.replace(b"*/5", b"*/9")
    assert apply_block(once + after, other) == prefix + other + after


# -- facts recorded on the lab -------------------------------------------------------------
def test_fresh_classic_host_facts() -> None:
    found = recorded("fresh-classic")
    assert found.host.engine_ok and found.host.image_store == "classic"
    assert (found.uid, found.user, found.owner_uid, found.group_gid) == (0, "root", 0, 0)
    assert found.paths["/data"] == PathState("directory", 0o755, 0, 0, "root", "root")
    assert found.paths["/data/checkpoints"] is None
    assert found.script is None
    assert found.cron is not None and found.cron.complete
    assert (found.cron.content or b"").startswith(b"# /etc/crontab: system-wide crontab")
    assert {"python3", "flock", "setsid", "setpriv"} <= found.tools
    assert found.cron_running is True
    assert found.limits_source == "dockerd"
    assert found.hard_limits["memlock"] == 8 << 20 and found.hard_limits["stack"] is None
    assert found.cap_sys_resource is False  # the lab has no CAP_SYS_RESOURCE
    assert not found.weights_up and "refused" in found.weights_probe
    assert found.data_disk is not None and found.data_disk.free > 0
    assert found.logging_driver == "json-file"


def test_provisioned_containerd_host_facts() -> None:
    found = recorded("provisioned-containerd")
    assert found.host.image_store == "containerd"
    assert found.weights_up
    # Recorded when cron ran /data/aicron.sh: the copy's place holds the old script.
    assert found.copy is not None and found.copy.mode == 0o755 and len(found.copy.sha256) == 64
    assert found.script is None and found.lib["/usr/local/lib/fleet"] is None
    assert find_block(found.cron.content or b"") is not None  # type: ignore[union-attr]


def test_unparsable_output_gives_empty_facts_not_an_exception() -> None:
    found = parse_facts("garbage\n@@p_paths\nx|y\n@@p_script\n1|2\n", ["/data"])
    assert not found.host.engine_ok
    assert found.paths == {}
    assert found.script is not None and found.script.kind.startswith("unreadable")


# -- planning ------------------------------------------------------------------------------
def test_fresh_host_gets_everything_in_order() -> None:
    for name in ("fresh-classic", "fresh-containerd"):
        facts = recorded(name)
        verdict = preflight(DEFAULTS, facts)
        assert verdict.ok, verdict
        assert not any("not rotated" in w for w in verdict.warnings)  # fleet rotates them
        changes = plan(DEFAULTS, facts)
        assert kinds(changes) == [
            "engine_configured",
            "dir_created",
            "dir_created",
            "dir_created",
            "dir_created",
            "script_dir_created",
            "script_installed",
            "copy_installed",
            "cron_block_added",
            "service_started",
        ]
        changes = changes[1:]  # the engine's has tests of its own
        (mkdir,) = changes[0].commands
        assert mkdir.argv == (
            *hostfiles.SAFE_PATH,
            *("dir", "/data", "/data/checkpoints", "0755", "root:root", "1"),
        )
        assert str(mkdir) == (
            "mkdir, chown root:root, chmod 0755 /data/checkpoints (following no link below /data)"
        )
        assert [c.argv[4:] for c in changes[4].commands] == [
            ("dir", "/usr/local/lib", "/usr/local/lib/fleet", "0755", "0:0", "1")
        ]
        script = changes[5]
        assert written(script) == render_script(DEFAULTS)
        assert script.commands[0].argv[-4:] == (
            "/usr/local/lib/fleet/aicron.sh",
            "0755",
            "absent",
            "0:0",
        )
        copy = changes[6]
        assert written(copy) == render_copy(DEFAULTS)
        assert copy.commands[0].argv[-5:] == ("/data", "/data/aicron.sh", "0644", "any", "0:0")
        cron = changes[7]
        assert written(cron) == (facts.cron.content or b"") + BLOCK  # type: ignore[union-attr]
        assert "+*/5 * * * * root /bin/sh /usr/local/lib/fleet/aicron.sh >/dev/null" in cron.diff
        assert changes[8].commands[0].argv == ("/bin/sh", "/usr/local/lib/fleet/aicron.sh")


def test_nothing_to_do_means_no_changes() -> None:
    for name in ("fresh-classic", "provisioned-containerd"):
        facts = converged(DEFAULTS, recorded(name))
        assert plan(DEFAULTS, facts) == []
        assert preflight(DEFAULTS, facts).ok


def test_mode_fix_is_one_chmod() -> None:
    facts = converged(DEFAULTS)
    paths = dict(facts.paths)
    paths["/data/datasets"] = PathState("directory", 0o2700, 0, 0, "root", "root")
    changes = plan(DEFAULTS, dataclasses.replace(facts, paths=paths))
    assert kinds(changes) == ["dir_mode_fixed"]
    assert changes[0].what == "fix mode of /data/datasets: 2700 -> 0755"
    # Through the directory itself, not its name; exact bits clear the setgid bit.
    assert changes[0].commands[0].argv[-5:] == ("/data", "/data/datasets", "0755", "-", "0")


def test_owner_fix_is_one_chown() -> None:
    config = settings(owner="lab", group="lab")
    facts = dataclasses.replace(converged(config), owner_uid=1000, group_gid=1000)
    paths = {p: dataclasses.replace(s, uid=1000, gid=1000) for p, s in facts.paths.items() if s}
    paths["/data/projects"] = PathState("directory", 0o755, 0, 0, "root", "root")
    changes = plan(config, dataclasses.replace(facts, paths=paths))
    assert kinds(changes) == ["dir_owner_fixed"]
    assert changes[0].commands[0].argv[-5:] == ("/data", "/data/projects", "-", "lab:lab", "0")


def test_users_crontab_lines_are_kept_byte_for_byte() -> None:
    facts = dataclasses.replace(converged(DEFAULTS), cron=file_state(USER_CRONTAB))
    (change,) = plan(DEFAULTS, facts)
    assert change.kind == "cron_block_added"
    assert written(change) == USER_CRONTAB + BLOCK
    # Refused when the file changed since it was read: its sha256 goes with the write.
    assert change.commands[0].argv[-2] == hashlib.sha256(USER_CRONTAB).hexdigest()


def test_schedule_change_updates_the_block_in_place() -> None:
    before = USER_CRONTAB + BLOCK + b"# mine, after fleet's\n"
    facts = dataclasses.replace(converged(DEFAULTS), cron=file_state(before))
    config = dataclasses.replace(DEFAULTS, cron_schedule="*/7 * * * *")
    (change,) = plan(config, facts)
    assert change.kind == "cron_block_updated"
    assert "'*/5 * * * * root" in change.why and "'*/7 * * * * root" in change.why
    assert written(change) == USER_CRONTAB + cron_block(config) + b"# mine, after fleet's\n"
    assert "-*/5 * * * * root" in change.diff and "+*/7 * * * * root" in change.diff
    assert plan(config, dataclasses.replace(facts, cron=file_state(written(change)))) == []


def test_recorded_host_with_another_schedule_only_updates_its_block() -> None:
    facts = converged(DEFAULTS, recorded("provisioned-classic"))
    facts = dataclasses.replace(facts, cron=recorded("provisioned-classic").cron)
    assert kinds(plan(DEFAULTS, facts)) == ["cron_block_updated"]


def test_host_provisioned_when_cron_ran_the_data_roots_script_converges() -> None:
    old = recorded("provisioned-classic")  # its block runs /bin/sh /data/aicron.sh
    old_block = old.cron.content or b""  # type: ignore[union-attr]
    assert b"root /bin/sh /data/aicron.sh" in old_block
    verdict = preflight(DEFAULTS, old)
    assert verdict.ok, verdict
    changes = plan(DEFAULTS, old)
    assert kinds(changes) == [
        "engine_configured",
        "script_dir_created",
        "script_installed",
        "copy_updated",
        "cron_block_updated",
    ]
    engine, changes = changes[0], changes[1:]
    cron = changes[-1]
    assert "'* * * * * root /bin/sh /data/aicron.sh >/dev/null' -> '*/5 * * * * root /bin/sh " in (
        cron.why
    )
    assert "-* * * * * root /bin/sh /data/aicron.sh >/dev/null" in cron.diff  # --diff shows it
    assert "+*/5 * * * * root /bin/sh /usr/local/lib/fleet/aicron.sh >/dev/null" in cron.diff
    assert "/data/aicron.sh" not in cron_block(DEFAULTS).decode()
    assert written(changes[2]).startswith(b"#!/bin/sh\n# A COPY, for reading: cron runs ")
    # Once applied, nothing is left: the next run is ok.
    applied = dataclasses.replace(
        old,
        lib={**old.lib, "/usr/local/lib/fleet": PathState("directory", 0o755, 0, 0)},
        script=file_state(written(changes[1]), 0o755),
        copy=file_state(written(changes[2]), 0o644),
        cron=file_state(written(cron)),
        daemon_json=file_state(engine.commands[1].stdin or b""),  # [0]: the backup
        live_restore=True,
    )
    assert plan(DEFAULTS, applied) == []


def test_changed_script_is_updated_with_a_diff() -> None:
    old = render_script(DEFAULTS).replace(b"flock -w 30", b"flock -w 5")
    facts = dataclasses.replace(converged(DEFAULTS), script=file_state(old, 0o755))
    (change,) = plan(DEFAULTS, facts)
    assert change.kind == "script_updated"
    assert "-if ! flock -w 5 9; then" in change.diff and "+if ! flock -w 30 9; then" in change.diff
    assert change.commands[0].argv[-2] == hashlib.sha256(old).hexdigest()


def test_script_writable_by_others_is_fixed() -> None:
    script = render_script(DEFAULTS)
    facts = dataclasses.replace(converged(DEFAULTS), script=file_state(script, 0o777, uid=1000))
    (change,) = plan(DEFAULTS, facts)
    assert change.kind == "script_mode_fixed"
    # Through the file itself, never a link at its name.
    assert [c.argv[4:] for c in change.commands] == [
        ("fix", "/usr/local/lib/fleet", "/usr/local/lib/fleet/aicron.sh", "0755", "0:0")
    ]


def test_copy_that_is_a_link_or_changed_is_rewritten_whole() -> None:
    facts = converged(DEFAULTS)
    copy = render_copy(DEFAULTS)
    found = {
        "a link": FileState("symbolic link", 0o777, 0, 0, 11),
        "appended to": file_state(copy + b"touch /pwned\n", 0o644),
        "executable": file_state(copy, 0o755),
    }
    for state in found.values():
        (change,) = plan(DEFAULTS, dataclasses.replace(facts, copy=state))
        assert change.kind == "copy_updated"
        (write,) = change.commands
        assert write.argv[-5:] == ("/data", "/data/aicron.sh", "0644", "any", "0:0")
        assert written(change) == copy
    directory = dataclasses.replace(facts, copy=FileState("directory", 0o755, 0, 0, 4096))
    assert plan(DEFAULTS, directory) == []
    assert "is a directory" in preflight(DEFAULTS, directory).warnings[-1]


def test_group_writable_crontab_is_fixed_and_written_files_keep_a_safe_mode() -> None:
    facts = converged(DEFAULTS)
    content = facts.cron.content or b""  # type: ignore[union-attr]
    bad = dataclasses.replace(facts, cron=file_state(content, 0o664))
    (change,) = plan(DEFAULTS, bad)
    assert change.kind == "cron_mode_fixed"
    assert change.commands[-1].argv[4:] == ("fix", "/etc", "/etc/crontab", "0644", "0:0")
    private = dataclasses.replace(facts, cron=file_state(USER_CRONTAB, 0o600))
    (write,) = plan(DEFAULTS, private)
    assert write.commands[0].argv[-3] == "0600"  # its own safe mode is kept


def test_service_down_is_started() -> None:
    facts = dataclasses.replace(converged(DEFAULTS), weights_up=False, weights_probe="down x")
    (change,) = plan(DEFAULTS, facts)
    assert change.kind == "service_started"
    assert change.why == "nothing answers on http://127.0.0.1:8340/ (down x)"


# -- the write and directory scripts, run on this machine -------------------------------------
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="provision runs them as root (chown 0:0)")


def run_here(
    command: Command, path_dirs: Sequence[Path] = ()
) -> subprocess.CompletedProcess[bytes]:
    """Run a planned command on this machine, with ``path_dirs`` first on PATH."""
    env = {**os.environ, "PATH": os.pathsep.join([*map(str, path_dirs), os.environ["PATH"]])}
    return subprocess.run(
        list(command.argv),
        input=command.stdin or b"",
        env=env,
        capture_output=True,
        check=False,
        timeout=30,
    )


@as_root
def test_files_are_written_beside_their_target_then_renamed(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "crontab"
    target.parent.mkdir()
    target.write_bytes(b"old\n")
    command = write_command(str(target.parent), str(target), b"new\n", 0o600, file_state(b"old\n"))
    ran = run_here(command)
    assert ran.returncode == 0, ran.stderr
    assert target.read_bytes() == b"new\n"
    assert (target.stat().st_mode & 0o7777, target.stat().st_uid) == (0o600, 0)
    assert os.listdir(target.parent) == ["crontab"]
    # The file changed since its facts were read: refused, nothing left behind.
    root = str(target.parent)
    ran = run_here(write_command(root, str(target), b"x", 0o600, file_state(b"old\n")))
    assert ran.returncode == 3 and b"changed since its facts were read" in ran.stderr
    assert target.read_bytes() == b"new\n" and os.listdir(target.parent) == ["crontab"]
    # A file that appeared where the facts saw none is not overwritten either.
    ran = run_here(write_command(root, str(target), b"x", 0o600, None))
    assert ran.returncode == 3 and b"appeared since its facts were read" in ran.stderr


@as_root
def test_a_failed_write_removes_its_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "aicron.sh"
    command = write_command(str(tmp_path), str(target), b"x\n", 0o644, None)
    mode = command.argv.index("0644")
    broken = Command((*command.argv[:mode], "0999", *command.argv[mode + 1 :]), command.stdin)
    ran = run_here(broken)
    assert ran.returncode == 1 and b"invalid literal" in ran.stderr
    assert os.listdir(tmp_path) == []


class Swapper:
    """What a container that mounts the data root can do, as fast as it can: replace every
    temporary file fleet makes there, and the target's own name, by a link to ``victim``."""

    def __init__(self, directory: Path, name: str, victim: Path) -> None:
        self.directory, self.name, self.victim = directory, name, victim
        self.swaps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Swapper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.listdir(self.directory):
                if entry == self.name or ".fleet-" in entry:
                    path = self.directory / entry
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                        os.symlink(self.victim, path)
                        self.swaps += 1


@as_root
@pytest.mark.hostile
def test_a_container_swapping_names_in_a_loop_redirects_no_write(tmp_path: Path) -> None:
    # The review's race: root's write of the copy in the data root, while a container swaps
    # the temporary file and the target for links to a 0600 file of the host's.
    victim = tmp_path / "shadow"
    victim.write_bytes(b"root:secret\n")
    victim.chmod(0o600)
    data = tmp_path / "data"
    data.mkdir()
    config = settings(data_root=str(data))
    command = write_command(str(data), config.copy_path, render_copy(config), 0o644, "any")
    with Swapper(data, "aicron.sh", victim) as swapper:
        results = [run_here(command).returncode for _ in range(40)]
    assert swapper.swaps > 0
    assert set(results) <= {0, 1}, results
    assert victim.read_bytes() == b"root:secret\n"
    assert (victim.stat().st_mode & 0o7777, victim.stat().st_uid) == (0o600, os.geteuid())


@as_root
@pytest.mark.hostile
def test_the_copy_replaces_a_link_at_its_place_instead_of_writing_through_it(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "passwd"
    victim.write_bytes(b"root:x:0:0\n")
    data = tmp_path / "data"
    data.mkdir()
    config = settings(data_root=str(data))
    Path(config.copy_path).symlink_to(victim)
    ran = run_here(write_command(str(data), config.copy_path, render_copy(config), 0o644, "any"))
    assert ran.returncode == 0, ran.stderr
    assert victim.read_bytes() == b"root:x:0:0\n"
    copy = Path(config.copy_path)
    assert not copy.is_symlink() and copy.read_bytes() == render_copy(config)
    assert copy.stat().st_mode & 0o7777 == 0o644


@as_root
@pytest.mark.hostile
@pytest.mark.parametrize("listed", ["projects", "projects/shared"])
def test_a_link_planted_below_the_data_root_redirects_no_chmod(tmp_path: Path, listed: str) -> None:
    # The facts saw a directory; by the time the change runs, a container has swapped it for
    # a link to a directory of the host's.
    victim = tmp_path / "etc"
    victim.mkdir()
    victim.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    config = settings(data_root=str(data), dirs=[{"path": listed, "mode": "2777"}])
    facts = converged(config)
    paths = dict(facts.paths)
    paths[f"{data}/{listed}"] = (
        PathState("directory", 0o755, 0, 0, "root", "root") if listed == "projects" else None
    )
    (change,) = plan(config, dataclasses.replace(facts, paths=paths))
    (data / "projects").symlink_to(victim)
    (command,) = change.commands
    ran = run_here(command)
    assert ran.returncode == 3, ran.stderr
    assert f"{data}/projects is a symbolic link below {data}".encode() in ran.stderr
    assert victim.stat().st_mode & 0o7777 == 0o755
    assert os.listdir(victim) == []


@as_root
def test_directories_are_created_and_fixed_through_themselves(tmp_path: Path) -> None:
    # The data root itself may be the admin's link to a bigger disk: followed.
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "data").symlink_to(disk)
    root = str(tmp_path / "data")
    ran = run_here(dir_command(root, f"{root}/a/b", "0:0", 0o2750, create=True))
    assert ran.returncode == 0, ran.stderr
    assert (disk / "a" / "b").stat().st_mode & 0o7777 == 0o2750
    ran = run_here(dir_command(root, f"{root}/a/b", mode=0o755))
    assert ran.returncode == 0, ran.stderr
    assert (disk / "a" / "b").stat().st_mode & 0o7777 == 0o755  # exact bits: setgid cleared


# -- preflight -------------------------------------------------------------------------------
def with_host(facts: ProvisionFacts, **changes: Any) -> ProvisionFacts:
    return dataclasses.replace(facts, host=dataclasses.replace(facts.host, **changes))


def gpu_settings(**run: Any) -> ProvisionSettings:
    return dataclasses.replace(DEFAULTS, run_spec=RunSpec(**run))


def test_gpu_run_spec_without_nvidia_runtime_fails_with_the_fix() -> None:
    verdict = preflight(gpu_settings(runtime="nvidia"), converged(DEFAULTS))
    messages = [p.message for p in verdict.failures]
    assert messages[0] == (
        "the run spec asks for --runtime nvidia, but the engine has no 'nvidia' runtime "
        "(it has: io.containerd.runc.v2, io.containerd.runtime.v1.linux, runc)"
    )
    assert "fleet_provision.install: [nvidia_toolkit]" in verdict.failures[0].fix
    assert "fleet_run_overrides: {runtime: null}" in verdict.failures[0].fix
    assert "nvidia-smi is not installed" in messages[1]


def test_gpu_host_with_runtime_and_driver_passes() -> None:
    facts = with_host(
        converged(DEFAULTS),
        runtimes=("nvidia", "runc"),
        nvidia_smi=True,
        gpus=(GPU("NVIDIA A100", "550.54", "81920 MiB"),),
    )
    assert preflight(gpu_settings(runtime="nvidia"), facts).ok


def test_a_server_whose_every_gpu_is_busy_gets_a_warning_not_a_failure() -> None:
    def gpu(index: int, used: str, util: str) -> GPU:
        return GPU("NVIDIA A100", "550.54", "81920 MiB", index, f"GPU-{index}", used, util)

    def verdict(*gpus: GPU):
        facts = with_host(
            converged(DEFAULTS), runtimes=("nvidia", "runc"), nvidia_smi=True, gpus=gpus
        )
        return preflight(gpu_settings(runtime="nvidia"), facts)

    idle_desktop = gpu(1, "412 MiB", "0 %")  # a driver and Xorg: not busy
    training = gpu(0, "61440 MiB", "97 %")
    loading = gpu(2, "40960 MiB", "0 %")  # weights in memory, no kernel running yet
    assert [gpu_busy(g) for g in (idle_desktop, training, loading)] == [False, True, True]
    assert not gpu_busy(GPU("T4", "535", "15360 MiB"))  # no usage known: not busy
    one_free = verdict(training, idle_desktop)
    assert one_free.ok and not any("no GPU is free" in w for w in one_free.warnings)
    all_busy = verdict(training, loading)
    assert all_busy.ok, all_busy.failures
    assert any(
        "no GPU is free (GPU 0: 97 % used, 61440 MiB of 81920 MiB" in w for w in all_busy.warnings
    )


def test_driver_that_lists_no_gpu_fails() -> None:
    facts = dataclasses.replace(
        with_host(converged(DEFAULTS), runtimes=("nvidia",), nvidia_smi=True),
        nvidia_smi_output="Failed to initialize NVML: Driver/library version mismatch",
    )
    (problem,) = preflight(gpu_settings(runtime="nvidia"), facts).failures
    assert problem.message.startswith("nvidia-smi lists no GPU: Failed to initialize NVML")


def test_gpus_flag_needs_the_container_toolkit() -> None:
    facts = with_host(converged(DEFAULTS), nvidia_smi=True, gpus=(GPU("T4", "535", "15360 MiB"),))
    (problem,) = preflight(gpu_settings(gpus="all"), facts).failures
    assert "--gpus all" in problem.message and "NVIDIA Container Toolkit" in problem.message
    with_hook = dataclasses.replace(facts, tools=facts.tools | {"nvidia-container-runtime-hook"})
    assert preflight(gpu_settings(gpus="all"), with_hook).ok


def test_ulimits_the_host_cannot_grant() -> None:
    config = gpu_settings(ulimits={"memlock": "-1", "stack": "67108864"})
    facts = converged(DEFAULTS)  # recorded: memlock hard 8 MiB, stack unlimited, no capability
    (problem,) = preflight(config, facts).failures
    assert problem.message == (
        "host cannot grant memlock=unlimited: the engine's hard limit is 8388608 bytes and it "
        "lacks CAP_SYS_RESOURCE to raise it"
    )
    assert "fleet_run_overrides: {ulimits: {memlock: null}}" in problem.fix
    assert preflight(config, dataclasses.replace(facts, cap_sys_resource=True)).ok
    small = gpu_settings(ulimits={"memlock": "1024:4096"})
    assert preflight(small, facts).ok


@pytest.mark.parametrize("which", ["docker", "data"])
def test_too_little_disk_is_refused(which: str) -> None:
    config = settings(min_free={which: "100G"})
    facts = converged(config)
    small = Disk("/x", 200 << 30, 5 << 30)
    facts = (
        with_host(facts, disk_docker=small)
        if which == "docker"
        else dataclasses.replace(facts, data_disk=small)
    )
    (problem,) = preflight(config, facts).failures
    assert problem.message.startswith("refused: only 5.0GiB free at ")
    assert f"below fleet_provision.min_free.{which} = 100.0GiB" in problem.message


def test_engine_that_refuses_the_user_names_the_docker_group() -> None:
    facts = with_host(
        converged(DEFAULTS),
        engine_ok=False,
        engine_error="permission denied while trying to connect to the Docker daemon socket",
    )
    (problem,) = preflight(DEFAULTS, facts).failures
    assert problem.message.startswith("Docker engine not usable: permission denied")
    assert "docker' group" in problem.fix and "ansible_become" in problem.fix


def test_non_root_user_is_refused_only_when_something_must_change() -> None:
    facts = dataclasses.replace(converged(DEFAULTS), uid=1000, user="alice")
    assert preflight(DEFAULTS, facts).ok
    broken = dataclasses.replace(facts, weights_up=False)
    (problem,) = preflight(DEFAULTS, broken).failures
    assert "provisioning needs root" in problem.message and "connected as alice" in problem.message
    assert "ansible_become: true" in problem.fix


def test_log_rotation_configured_means_no_warning_when_fleet_leaves_the_engine_alone() -> None:
    alone = settings(engine=False)
    rotated = b'{"log-driver": "json-file", "log-opts": {"max-size": "100m"}}'
    facts = dataclasses.replace(converged(alone), daemon_json=file_state(rotated))
    assert preflight(alone, facts).warnings == ()
    assert "engine_configured" not in kinds(plan(alone, recorded("fresh-classic")))
    broken = dataclasses.replace(facts, daemon_json=file_state(b"{not json"))
    assert preflight(alone, broken).warnings == ("/etc/docker/daemon.json is not valid JSON",)


def test_a_daemon_json_that_is_not_json_fails_the_host_and_is_never_written() -> None:
    facts = dataclasses.replace(converged(DEFAULTS), daemon_json=file_state(b"{not json"))
    (problem,) = preflight(DEFAULTS, facts).failures
    assert problem.message.startswith("/etc/docker/daemon.json is not valid JSON: ")
    assert "never overwrites it" in problem.message and "fix the file by hand" in problem.fix
    listed = dataclasses.replace(facts, daemon_json=file_state(b'["live-restore"]'))
    (problem,) = preflight(DEFAULTS, listed).failures
    assert "is not a JSON object (a list)" in problem.message


def test_the_engine_config_keeps_the_operators_keys_and_reports_what_it_will_not_change() -> None:
    mine = {
        "data-root": "/srv/docker",
        "live-restore": False,
        "log-driver": "local",
        "log-opts": {"max-size": "1g"},
        "labels": ["rack=7"],
        "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 64000, "Soft": 64000}},
    }
    facts = dataclasses.replace(
        recorded("fresh-classic"),
        daemon_json=file_state(json.dumps(mine).encode()),
        containers_running=0,
        tools=frozenset({"python3", "flock", "setpriv", "setsid", "nvidia-container-runtime"}),
    )
    # The engine has an nvidia runtime already (from its command line): none is added.
    facts = dataclasses.replace(
        facts, host=dataclasses.replace(facts.host, runtimes=("nvidia", "runc"))
    )
    config = engine_config(DEFAULTS, facts)
    assert config.content is not None
    after = json.loads(config.content)
    # Every key of the operator's is there with its value; fleet added only what lacked.
    assert {k: after[k] for k in mine} == {**mine, "log-opts": {"max-size": "1g", "max-file": "3"}}
    assert set(after) == set(mine)
    assert config.sets == ("log-opts.max-file: 3",) and config.restart
    assert config.kept == ("live-restore is false (yours, kept)",)
    verdict = preflight(DEFAULTS, facts)
    assert verdict.ok and "/etc/docker/daemon.json: live-restore is false (yours, kept)" in (
        verdict.warnings
    )
    # A restart with live-restore off stops what runs: refused, with the evidence.
    (problem,) = preflight(DEFAULTS, dataclasses.replace(facts, containers_running=2)).failures
    assert "it would stop the 2 running container(s)" in problem.message
    assert "set live-restore: true" in problem.fix
    # Nothing to restart it with: refused before anything is written.
    (problem,) = preflight(DEFAULTS, dataclasses.replace(facts, engine_manager="none")).failures
    assert "nothing manages the engine here" in problem.message


def test_the_nvidia_runtime_is_registered_where_the_toolkit_is_and_the_engine_lacks_it() -> None:
    facts = dataclasses.replace(
        recorded("fresh-classic"),
        daemon_json=None,
        tools=frozenset({"nvidia-container-runtime"}),
    )
    facts = dataclasses.replace(facts, host=dataclasses.replace(facts.host, runtimes=("runc",)))
    config = engine_config(DEFAULTS, facts)
    assert json.loads(config.content or b"") == {
        "live-restore": True,
        "log-opts": {"max-size": "100m", "max-file": "3"},
        "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
    }
    (change,) = [c for c in plan(DEFAULTS, facts) if c.kind == "engine_configured"]
    # No file before: /etc/docker is made, nothing is backed up, the file is written new.
    assert [c.argv[4] for c in change.commands[:2]] == ["dir", "write"]
    assert change.commands[-1].argv[-4:] == ("yes", "sysv", "-", "60")
    assert "--- /dev/null" in change.diff


def test_a_reload_alone_when_the_file_says_live_restore_and_the_engine_does_not() -> None:
    facts = dataclasses.replace(converged(DEFAULTS), live_restore=False)
    (change,) = plan(DEFAULTS, facts)
    assert change.kind == "engine_reloaded"
    assert change.commands[-1].argv[-4:] == ("no", "sysv", "=", "60")


def test_a_data_root_is_set_only_for_an_engine_that_holds_nothing() -> None:
    config = settings(engine={"data_root": "/srv/docker"})
    fresh = recorded("fresh-classic")  # an engine in /var/lib/docker, holding nothing
    assert (fresh.containers, fresh.images, fresh.host.docker_root) == (0, 0, "/var/lib/docker")
    moved = engine_config(config, fresh)
    assert moved.new_root == "/srv/docker" and moved.restart
    assert json.loads(moved.content or b"")["data-root"] == "/srv/docker"
    assert "data-root: /srv/docker" in moved.sets
    assert preflight(config, fresh).ok
    # An engine that holds something would leave it behind: refused, with what it holds.
    holding = dataclasses.replace(fresh, images=3, containers=1)
    (problem,) = preflight(config, holding).failures
    assert problem.message == (
        "setting data-root: /srv/docker moves the engine, which holds 1 container(s) and "
        "3 image(s) in /var/lib/docker: they would stay behind there"
    )
    assert "copy /var/lib/docker to /srv/docker (rsync -aHAX)" in problem.fix
    # Already there (the file says it, or the engine was started with it): nothing to do.
    there = with_host(holding, docker_root="/srv/docker")
    assert engine_config(config, there).new_root == ""
    assert preflight(config, there).ok
    # A data-root of the operator's is theirs: kept, and said.
    theirs = dataclasses.replace(holding, daemon_json=file_state(b'{"data-root": "/big"}'))
    kept = engine_config(config, theirs)
    assert kept.new_root == "" and kept.kept == ('data-root is "/big" (yours, kept)',)
    assert preflight(config, theirs).ok
    # Not asked: the engine stays where it is.
    assert engine_config(DEFAULTS, fresh).new_root == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "expected a mapping, true or false"),
        ({"live_restore": "on"}, "live_restore: expected true or false"),
        ({"log_max_size": "100MB"}, "is not a size Docker's log-opts take"),
        ({"log_max_file": 0}, "log_max_file: expected a number of files from 1 to 100"),
        ({"data_roots": "/srv"}, "engine.data_roots: unknown setting"),
        ({"data_root": "srv/docker"}, "data_root: expected an absolute path"),
        ({"data_root": "/data/docker"}, "is below the data root /data, which every framework"),
        ({"data_root": "/"}, "data_root: expected an absolute path"),
    ],
)
def test_bad_engine_settings_name_the_setting(value: Any, message: str) -> None:
    with pytest.raises(ProvisionSettingsError, match=re.escape(message)):
        settings(engine=value)


def test_dockers_root_never_holds_the_data_root() -> None:
    with pytest.raises(ProvisionSettingsError, match="would hold the data root /srv/data"):
        settings(data_root="/srv/data", engine={"data_root": "/srv"})


def test_things_in_the_way_are_failures() -> None:
    facts = converged(DEFAULTS)
    paths = {**facts.paths, "/data/datasets": PathState("regular file", 0o644, 0, 0)}
    blocked = dataclasses.replace(
        facts, paths=paths, owner_uid=None, tools=frozenset({"python3"}), cron_running=False
    )
    verdict = preflight(settings(owner="lab"), blocked)
    text = "\n".join(p.message for p in verdict.failures)
    assert "/data/datasets exists and is not a directory (regular file)" in text
    assert "the owner 'lab' of /data does not exist on the host" in text
    assert "flock is missing" in text and "setpriv is missing" in text
    assert any("no cron daemon is running" in w for w in verdict.warnings)


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("variables", "refused"),
    [
        ({}, False),
        ({"owner": "lab"}, False),  # writable by its owner only
        ({"mode": "0777"}, True),
        ({"mode": "1777"}, True),  # sticky: everyone may still create names in it
        ({"mode": "0775", "group": "lab"}, True),
        ({"mode": "0775"}, False),  # group root: root-equivalent by convention
        ({"owner": "lab", "mode": "0770", "group": "lab"}, True),
        ({"mode": "0777", "allow_writable_data_root": True}, False),
        ({"mode": "0775", "group": "lab", "allow_writable_data_root": True}, False),
        # Subdirectories hold data, not what cron runs: not checked.
        ({"dirs": [{"path": "projects", "mode": "2775", "group": "lab"}]}, False),
    ],
)
def test_data_root_writable_by_others_is_refused_unless_allowed(
    variables: dict[str, Any], refused: bool
) -> None:
    config = settings(**variables)
    facts = dataclasses.replace(converged(config), owner_uid=1000, group_gid=1000)
    failures = preflight(config, facts).failures
    assert any("writable by others than its owner" in p.message for p in failures) is refused


def _lib(path: str = "/", state: PathState | None = None) -> dict[str, PathState | None]:
    """The script directory's facts of a provisioned host, with ``path`` as ``state``."""
    lib = dict(converged(DEFAULTS).lib)
    return lib if state is None else {**lib, path: state}


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("lib", "real", "failure", "warning"),
    [
        (
            _lib("/usr/local/lib/fleet", PathState("symbolic link", 0o777, 0, 0)),
            "/usr/local/lib",
            "/usr/local/lib/fleet exists and is not a directory (symbolic link)",
            None,
        ),
        (
            _lib("/usr/local/lib", PathState("directory", 0o1777, 0, 0)),
            "/usr/local/lib",
            "/usr/local/lib (directory, mode 1777, uid 0) holds /usr/local/lib/fleet/aicron.sh",
            None,
        ),
        (
            _lib("/usr/local", PathState("directory", 0o755, 1000, 1000)),
            "/usr/local/lib",
            "/usr/local (directory, mode 0755, uid 1000) holds",
            None,
        ),
        (
            _lib("/usr/local", PathState("directory", 0o2775, 0, 50)),  # Debian's old root:staff
            "/usr/local/lib",
            None,
            "/usr/local is writable by group 50: its members can replace",
        ),
        (
            _lib(),
            "/data/system/lib",  # /usr/local/lib links into the data root
            "/usr/local/lib/fleet is really /data/system/lib/fleet, inside the data root /data",
            None,
        ),
    ],
)
def test_the_scripts_directory_must_be_roots_alone(
    lib: dict[str, PathState | None], real: str, failure: str | None, warning: str | None
) -> None:
    facts = dataclasses.replace(
        converged(DEFAULTS), lib=lib, lib_parent_real=real, data_root_real="/data"
    )
    verdict = preflight(DEFAULTS, facts)
    if failure:
        (problem,) = verdict.failures
        assert failure in problem.message
    else:
        assert verdict.ok, verdict
    if warning:
        assert any(warning in w for w in verdict.warnings), verdict.warnings


def test_the_scripts_directory_is_created_or_fixed_as_roots() -> None:
    facts = converged(DEFAULTS)
    loose = dataclasses.replace(
        facts, lib=_lib("/usr/local/lib/fleet", PathState("directory", 0o777, 1000, 0))
    )
    (change,) = plan(DEFAULTS, loose)
    assert change.kind == "script_dir_fixed"
    assert [c.argv[4:] for c in change.commands] == [
        ("dir", "/usr/local/lib", "/usr/local/lib/fleet", "0755", "0:0", "0")
    ]


@pytest.mark.hostile
def test_links_below_the_data_root_show_as_links_in_the_facts(tmp_path: Path) -> None:
    # The facts script itself, run on this machine against a data tree a container has
    # played with: a directory and the copy replaced by links to the host's files.
    data = tmp_path / "data"
    (tmp_path / "etc").mkdir()
    (tmp_path / "secret").write_bytes(b"root:secret\n")
    data.mkdir()
    (data / "projects").symlink_to(tmp_path / "etc")
    (data / "aicron.sh").symlink_to(tmp_path / "secret")
    config = dataclasses.replace(
        settings(data_root=str(data)), script_path=str(tmp_path / "lib" / "fleet" / "aicron.sh")
    )
    (tmp_path / "lib").mkdir()
    argv = ["sh", "-c", FACTS_SCRIPT, "facts", *facts_arguments(config)]
    ran = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    facts = parse_facts(ran.stdout, [d.path for d in config.managed_dirs])
    projects = facts.paths[f"{data}/projects"]
    assert projects is not None and projects.kind == "symbolic link"
    assert facts.copy is not None and facts.copy.kind == "symbolic link"
    assert facts.copy.content is None  # the link's target is not read
    assert facts.lib[f"{tmp_path}/lib/fleet"] is None
    assert facts.lib[f"{tmp_path}/lib"] == PathState("directory", 0o755, 0, 0)
    assert "/" in facts.lib
    assert (facts.lib_parent_real, facts.data_root_real) == (f"{tmp_path}/lib", str(data))
    problems = [p.message for p in preflight(config, facts).failures]
    assert f"{data}/projects exists and is not a directory (symbolic link); fleet does not " in (
        "\n".join(problems)
    )


def test_hand_made_aicron_line_is_a_warning_and_left_alone() -> None:
    line = b"*/5 * * * * root /usr/local/lib/fleet/aicron.sh\n"
    facts = dataclasses.replace(converged(DEFAULTS), cron=file_state(USER_CRONTAB + line + BLOCK))
    verdict = preflight(DEFAULTS, facts)
    assert verdict.ok
    assert "line(s) 5 outside fleet's block also run aicron.sh" in verdict.warnings[-1]
    assert plan(DEFAULTS, facts) == []


@pytest.mark.hostile
def test_hand_made_line_running_the_data_roots_copy_fails_the_host() -> None:
    content = USER_CRONTAB + b"*/5 * * * * root /bin/sh /data/aicron.sh\n" + BLOCK
    facts = dataclasses.replace(converged(DEFAULTS), cron=file_state(content))
    (problem,) = preflight(DEFAULTS, facts).failures
    assert problem.message == (
        "/etc/crontab: line(s) 5 outside fleet's block run /data/aicron.sh, which every "
        "framework container can write: whatever a container appends to it would run on this host"
    )
    assert problem.fix.startswith("remove those lines from /etc/crontab")


# -- running (a fake transport of fleet's own interface) -----------------------------------
class FakeTransport:
    """Records commands; answers the facts script from a queue of facts."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.commands: list[tuple[tuple[str, ...], bytes | None]] = []
        self.fail_on = fail_on

    @property
    def host(self) -> str:
        return "gpu1"

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        self.commands.append((tuple(argv), stdin))
        if self.fail_on and self.fail_on in argv:
            raise CommandError("gpu1", argv, 1, "", "mkdir: cannot create directory: Read-only")
        return CommandResult(" ".join(argv), 0, "", "", 0.0)

    def stream(self, *args: Any, **kwargs: Any) -> CommandResult:
        raise AssertionError("not used")

    def close(self) -> None:
        return None


def run_provision(
    monkeypatch: pytest.MonkeyPatch,
    states: list[ProvisionFacts],
    options: ProvisionOptions,
    transport: FakeTransport,
    config: ProvisionSettings = DEFAULTS,
) -> HostResult:
    queue = list(states)
    monkeypatch.setattr(provision_run, "gather", lambda *args, **kwargs: queue.pop(0))
    host = Host("gpu1", FrozenDict())
    runner = Runner(lambda _: transport)
    result = provision(runner, [host], {"gpu1": config}, {}, options)
    return result.results[0]


def test_changes_run_in_order_then_the_host_is_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = recorded("fresh-classic")
    transport = FakeTransport()
    result = run_provision(
        monkeypatch, [fresh, converged(DEFAULTS, fresh)], ProvisionOptions(), transport
    )
    assert result.outcome is Outcome.CHANGED
    assert result.reason == (
        "configured the engine (daemon.json), created 4 dirs, created /usr/local/lib/fleet, "
        "installed aicron.sh, wrote its readable copy, added the cron block, started the weights "
        "service"
    )
    sent = [argv for argv, _ in transport.commands]
    # The engine first (backup, daemon.json, reload or restart), then the data tree.
    assert sent[1][4:6] == ("write", "/etc/docker") and sent[2][:2] == ("sh", "-c")
    assert sent[3][-5:] == ("/data", "/data/checkpoints", "0755", "root:root", "1")
    assert sent[-1] == ("/bin/sh", "/usr/local/lib/fleet/aicron.sh")
    assert [c["kind"] for c in result.details["changes"]][:2] == [
        "engine_configured",
        "dir_created",
    ]
    assert result.details["engine"].startswith("20.10") and result.details["store"] == "classic"


def test_check_changes_nothing_and_says_what_would(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = FakeTransport()
    options = ProvisionOptions(check=True, diff=True)
    result = run_provision(monkeypatch, [recorded("fresh-classic")], options, transport)
    assert transport.commands == []
    assert result.outcome is Outcome.CHANGED
    assert result.reason is not None
    assert result.reason.startswith("would configure the engine, create 4 dirs")
    assert "+++ gpu1:/etc/crontab (after)" in result.details["diff"]
    assert "+++ gpu1:/usr/local/lib/fleet/aicron.sh (after)" in result.details["diff"]


def test_converged_host_is_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = FakeTransport()
    result = run_provision(monkeypatch, [converged(DEFAULTS)], ProvisionOptions(), transport)
    assert (result.outcome, result.reason, transport.commands) == (
        Outcome.OK,
        "nothing to change",
        [],
    )


def test_failed_change_names_itself_and_what_was_done(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = FakeTransport(fail_on="/data/datasets")
    result = run_provision(monkeypatch, [recorded("fresh-classic")], ProvisionOptions(), transport)
    assert result.outcome is Outcome.FAILED
    assert result.reason is not None
    assert result.reason.startswith("create directory /data/datasets (root:root 0755): command")
    assert [c["target"] for c in result.details["changes"]] == [
        "/etc/docker/daemon.json",
        "/data/checkpoints",
    ]
    assert result.details["failed_change"]["target"] == "/data/datasets"


def test_host_that_does_not_converge_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    down = dataclasses.replace(converged(DEFAULTS), weights_up=False)
    result = run_provision(monkeypatch, [down, down], ProvisionOptions(), FakeTransport())
    assert result.outcome is Outcome.FAILED
    assert result.reason == (
        "the host did not converge; still needed after applying: start the weights service "
        "on 0.0.0.0:8340 (run /usr/local/lib/fleet/aicron.sh)"
    )


def test_preflight_failure_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = FakeTransport()
    facts = with_host(recorded("fresh-classic"), disk_docker=Disk("/var/lib/docker", 1, 1))
    result = run_provision(monkeypatch, [facts], ProvisionOptions(), transport)
    assert result.outcome is Outcome.FAILED and transport.commands == []
    assert result.reason is not None and result.reason.startswith("refused: only 1B free")
    assert result.details["problems"][0]["fix"].startswith("free space on the host")


@pytest.mark.hostile
def test_world_writable_data_root_fails_the_host_naming_mode_owner_and_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = settings(mode="0777")
    facts = recorded("fresh-classic")  # /data is 0755 root:root there
    transport = FakeTransport()
    result = run_provision(monkeypatch, [facts], ProvisionOptions(), transport, config)
    assert result.outcome is Outcome.FAILED and transport.commands == []
    assert result.reason == (
        "refused: the data root /data would be writable by others than its owner: mode 0777, "
        "owner root:root (fleet_provision.mode/owner/group); on the host now: mode 0755, "
        "owner root:root"
    )
    assert result.fix == (
        'set fleet_provision.mode: "0755" (fleet then does the chmod), or, when others than '
        "root are meant to write it, fleet_provision.allow_writable_data_root: true"
    )


def test_base_shipping_merges_into_the_hosts_result() -> None:
    done = HostResult(
        "gpu1",
        Outcome.CHANGED,
        "created 4 dirs",
        details={"changes": [{"kind": "dir_created"}] * 4},
    )
    pushed = HostResult(
        "gpu1",
        Outcome.CHANGED,
        "sent 2/2 layers, 1000 bytes",
        details={"layers_sent": 2, "layers_present": 0},
    )
    merged = with_base(done, pushed, "base:1", check=False)
    assert merged.outcome is Outcome.CHANGED
    assert merged.reason == "created 4 dirs, shipped the base image"
    assert merged.details["base_image"]["ref"] == "base:1"
    ok = HostResult("gpu1", Outcome.OK, "nothing to change", details={"changes": []})
    present = HostResult("gpu1", Outcome.OK, "image already present", details={"layers_sent": 0})
    assert with_base(ok, present, "base:1", check=False).outcome is Outcome.OK
    refused = HostResult("gpu1", Outcome.FAILED, "not enough disk", "free space")
    failed = with_base(ok, refused, "base:1", check=False)
    assert (failed.outcome, failed.reason) == (Outcome.FAILED, "base image base:1: not enough disk")


# -- the command line ---------------------------------------------------------------------
@pytest.fixture
def cli_with_provision(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provision subcommand registered, whether or not fleet.cli lists it yet."""
    if "provision" not in fleet.cli._COMMAND_MODULES:
        monkeypatch.setattr(
            fleet.cli, "_COMMAND_MODULES", (*fleet.cli._COMMAND_MODULES, "provision")
        )


def _unreachable_inventory(tmp_path: Path, host_vars: dict[str, Any]) -> Path:
    path = tmp_path / "inventory.yml"
    host = {"ansible_host": "127.0.0.1", "ansible_port": 9, **host_vars}
    path.write_text(json.dumps({"all": {"hosts": {"gpu1": host}}}))
    return path


def test_help_lists_the_flags(cli_with_provision: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        fleet.cli.main(["provision", "--help"])
    out = capsys.readouterr().out
    for flag in ("--check", "--diff", "--skip-base", "--project", "--limit", "--json"):
        assert flag in out


def test_bad_settings_exit_4_before_any_host_is_touched(
    cli_with_provision: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inventory = _unreachable_inventory(tmp_path, {"fleet_provision": {"mode": 755}})
    code, out, err = run_cli(capsys, "provision", "-i", str(inventory), "--skip-base")
    assert code == 4
    assert "host gpu1: fleet_provision.mode: expected an octal mode" in err
    assert "unreachable" not in out + err


def test_missing_base_image_exits_5_naming_fleet_build(
    cli_with_provision: None,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fleet.images import daemon

    monkeypatch.setattr(daemon, "connect", object)
    monkeypatch.setattr(daemon, "has_image", lambda client, ref: False)
    inventory = _unreachable_inventory(
        tmp_path, {"fleet_provision": {"base_image": "cauchy_base:nope"}}
    )
    code, out, err = run_cli(capsys, "provision", "-i", str(inventory))
    assert code == 5
    assert "the base image cauchy_base:nope (fleet_provision.base_image of gpu1)" in err
    assert "'fleet build'" in err and "--skip-base" in err
    assert "unreachable" not in out + err


def test_hosts_without_a_base_image_get_the_projects(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet.images import daemon
    from fleet.images.spec import ImageSpec, Shippable

    monkeypatch.setattr(daemon, "connect", object)
    monkeypatch.setattr(daemon, "has_image", lambda client, ref: True)
    monkeypatch.setattr(
        daemon,
        "shippable",
        lambda client, ref: Shippable(ImageSpec(ref, "sha256:c", ()), (), lambda: iter(())),
    )
    given = {"gpu1": DEFAULTS, "gpu2": dataclasses.replace(DEFAULTS, base_image="other:1")}
    resolved, bases = resolve_base_images(given, Path(__file__).parent.parent)
    assert resolved["gpu1"].base_image == "cauchy_base:latest"  # fleet_image in all.yml
    assert resolved["gpu2"].base_image == "other:1"
    assert sorted(bases) == ["cauchy_base:latest", "other:1"]
    assert bases["other:1"].spec.ref == "other:1"


def test_warnings_and_diffs_are_rendered_per_host() -> None:
    from fleet.cli import provision as cli

    row = HostResult(
        "gpu1",
        Outcome.CHANGED,
        details={"warnings": ["logs not rotated"], "diff": "--- a\n+++ b\n"},
    )
    result = FleetResult.of("provision", [row])
    assert cli.render_warnings(result) == "gpu1: warning: logs not rotated\n"
    assert cli.render_diffs(result) == "=== gpu1 (changed)\n--- a\n+++ b\n"

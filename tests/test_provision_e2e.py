"""End to end on the lab: fleet provision on a classic and a containerd host over real SSH.

Each test uses its own data root, port and log under ``/srv/fleet-e2e-*`` (settings in a
copy of the lab's inventory, with the project's real ``fleet_run`` on top, so the lab's own
overrides are what lets it pass the preflight), and puts back ``/etc/crontab`` and the
script cron runs (``/usr/local/lib/fleet``, one per host), stops the weights services it
started (by their pid file) and removes its files afterwards.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

import fleet.cli
from fleet.lab import nodes as lab
from fleet.ops.provision.cron import cron_block, find_block, render_copy, render_script
from fleet.ops.provision.settings import SCRIPT_DIR, SCRIPT_PATH, settings_from_vars
from tests.conftest import LabFixture, host_run, run_cli, run_json, swapping
from tests.framework import build_image

pytestmark = pytest.mark.lab

GPU_STATE = "/etc/fleet-lab/gpus.json"

HOSTS = ("lab1", "lab2")
BASE_IMAGE = "fleet-test-provision:base"
PROJECT_SETTINGS = Path(__file__).parent.parent / "inventory" / "group_vars" / "all.yml"


@pytest.fixture(autouse=True)
def _provision_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if "provision" not in fleet.cli._COMMAND_MODULES:
        monkeypatch.setattr(
            fleet.cli, "_COMMAND_MODULES", (*fleet.cli._COMMAND_MODULES, "provision")
        )


@pytest.fixture(scope="module")
def base_image(lab_env: LabFixture) -> Iterator[str]:
    """A tiny base image (layer 1 + one RUN) built on the controller, removed afterwards."""
    client = lab.engine_client()
    lab.ensure_layer1_image(client)
    dockerfile = "FROM fleet-lab-layer1:bookworm\nRUN echo provision > /provision-base\n"
    build_image(client, BASE_IMAGE, dockerfile)
    yield BASE_IMAGE
    for host in HOSTS:
        host_run(lab_env, host, "docker", "image", "rm", "-f", BASE_IMAGE)
    client.images.remove(BASE_IMAGE, force=True)


def read_bytes(env: LabFixture, host: str, path: str) -> bytes:
    ran = host_run(env, host, "base64", "-w0", path)
    assert ran.ok, ran.stderr
    return base64.b64decode(ran.stdout)


class Sandbox:
    """One test's settings on the lab, and their clean-up."""

    def __init__(self, env: LabFixture, tmp_path: Path, port: int) -> None:
        self.env = env
        self.tmp_path = tmp_path
        self.root = f"/srv/fleet-e2e-{uuid.uuid4().hex[:8]}"
        self.port = port
        self.settings: dict[str, Any] = {
            "data_root": f"{self.root}/data",
            "weights_port": port,
            "log_file": f"{self.root}/aicron.log",
            "min_free": {"docker": "1M", "data": "1M"},
            # The engine's configuration has tests of its own (test_engine_config_e2e.py).
            "engine": False,
        }
        self.crontabs = {host: read_bytes(env, host, "/etc/crontab") for host in HOSTS}
        # The script cron runs is one per host, whatever the data root: put back as found.
        self.scripts: dict[str, bytes | None] = {}
        self.script_dirs: dict[str, bool] = {}
        for host in HOSTS:
            self.script_dirs[host] = host_run(env, host, "test", "-d", SCRIPT_DIR).ok
            found = host_run(env, host, "test", "-f", SCRIPT_PATH).ok
            self.scripts[host] = read_bytes(env, host, SCRIPT_PATH) if found else None

    def inventory(
        self, host_vars: dict[str, dict[str, Any]] | None = None, **settings: Any
    ) -> Path:
        document = yaml.safe_load(self.env.inventory.read_text())
        project = yaml.safe_load(PROJECT_SETTINGS.read_text())
        document["all"]["vars"] = {"fleet_run": project["fleet_run"]}
        lab_group = document["all"]["children"]["lab"]
        lab_group["vars"]["fleet_provision"] = {**self.settings, **settings}
        for host, variables in (host_vars or {}).items():
            lab_group["hosts"][host].update(variables)
        path = self.tmp_path / f"inventory-{uuid.uuid4().hex[:6]}.yml"
        path.write_text(yaml.safe_dump(document))
        return path

    def provision(self, capsys: Any, inventory: Path, *args: str) -> tuple[int, dict[str, Any]]:
        return run_json(
            capsys, "provision", "all", "-i", str(inventory), "--retry-file", "/dev/null", *args
        )

    def kill_service(self, host: str) -> None:
        pid_file = f"/run/aicron-weights-{self.port}.pid"
        script = (
            'pid=$(cat "$1" 2>/dev/null) || exit 0; rm -f "$1"; '
            'grep -q http.server "/proc/$pid/cmdline" 2>/dev/null || exit 0; kill "$pid"; '
            'i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done'
        )
        host_run(self.env, host, "sh", "-c", script, "kill", pid_file)

    def answers(self, host: str) -> bool:
        url = f"http://127.0.0.1:{self.port}/"
        return host_run(self.env, host, "curl", "-fsS", "-o", "/dev/null", url).ok

    def clean(self) -> None:
        for host in HOSTS:
            self.kill_service(host)
            host_run(
                self.env,
                host,
                "sh",
                "-c",
                'cat >/etc/crontab.fleet-e2e && mv /etc/crontab.fleet-e2e /etc/crontab && rm -rf "$1"',
                "restore",
                self.root,
                stdin=self.crontabs[host],
            )
            script = self.scripts[host]
            if not self.script_dirs[host]:
                host_run(self.env, host, "rm", "-rf", SCRIPT_DIR)
            elif script is None:
                host_run(self.env, host, "rm", "-f", SCRIPT_PATH)
            else:
                restore = (
                    'cat >"$1.fleet-e2e" && chmod 0755 "$1.fleet-e2e" && mv "$1.fleet-e2e" "$1"'
                )
                host_run(
                    self.env,
                    host,
                    "sh",
                    "-c",
                    restore,
                    "restore",
                    SCRIPT_PATH,
                    stdin=script,
                )


@pytest.fixture
def sandbox(
    lab_env: LabFixture, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Sandbox]:
    ports = {
        "test_fresh_hosts_provisioned_then_ok": 18341,
        "test_users_crontab_kept_byte_for_byte_and_schedule_updated_in_place": 18342,
        "test_check_changes_nothing": 18343,
        "test_preflight_failures_leave_the_host_alone": 18344,
        "test_missing_base_image_is_a_usage_error": 18345,
        "test_a_container_appending_to_the_data_roots_aicron_runs_nothing_as_root": 18346,
        "test_a_container_swapping_the_copy_in_a_loop_redirects_no_write_of_roots": 18347,
    }
    box = Sandbox(lab_env, tmp_path, ports.get(request.node.name, 18349))
    try:
        yield box
    finally:
        box.clean()


def cron_command(block: bytes) -> str:
    """The command of the block's cron line (after the 5 schedule fields and the user)."""
    line = next(text for text in block.decode().splitlines() if text and not text.startswith("#"))
    return line.split(None, 6)[6]


def test_fresh_hosts_provisioned_then_ok(
    lab_env: LabFixture, sandbox: Sandbox, base_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The cron block goes in first (without the base image), so that waiting for cron's
    # first run overlaps with shipping the base image and the reruns.
    inventory = sandbox.inventory(cron_schedule="* * * * *", base_image=base_image)
    code, doc = sandbox.provision(capsys, inventory, "--skip-base")
    assert code == 0, doc
    expected = settings_from_vars(
        {"fleet_provision": {**sandbox.settings, "cron_schedule": "* * * * *"}}
    )
    script = render_script(expected)
    block = cron_block(expected)
    for host in HOSTS:
        result = doc["hosts"][host]
        assert result["outcome"] == "changed", result
        kinds = [c["kind"] for c in result["details"]["changes"]]
        assert kinds == [
            *["dir_created"] * 5,
            *([] if sandbox.script_dirs[host] else ["script_dir_created"]),
            "script_installed" if sandbox.scripts[host] is None else "script_updated",
            "copy_installed",
            "cron_block_added",
            "service_started",
        ]
        listing = host_run(
            lab_env, host, "stat", "-c", "%n %a %U %G", *(d.path for d in expected.managed_dirs)
        ).stdout.splitlines()
        assert listing == [f"{d.path} 755 root root" for d in expected.managed_dirs]
        assert read_bytes(lab_env, host, expected.script_path) == script
        assert read_bytes(lab_env, host, expected.copy_path) == render_copy(expected)
        modes = host_run(
            lab_env,
            host,
            "stat",
            "-c",
            "%n %a %U %G",
            SCRIPT_DIR,
            expected.script_path,
            expected.copy_path,
        ).stdout
        assert modes == (
            f"{SCRIPT_DIR} 755 root root\n{expected.script_path} 755 root root\n"
            f"{expected.copy_path} 644 root root\n"
        )
        assert read_bytes(lab_env, host, "/etc/crontab") == sandbox.crontabs[host] + block
        assert sandbox.answers(host)

    # The cron line's command, run by hand, restarts a stopped service and logs it.
    command = cron_command(block)
    marks = {}
    for host in HOSTS:
        sandbox.kill_service(host)
        assert not sandbox.answers(host)
        before = len(read_bytes(lab_env, host, expected.log_file))
        assert host_run(lab_env, host, "sh", "-c", command).ok
        assert sandbox.answers(host)
        log = read_bytes(lab_env, host, expected.log_file)
        assert "started the weights service" in log[before:].decode()
        marks[host] = len(log)  # from here on, only cron runs aicron.sh

    code, doc = sandbox.provision(capsys, inventory)
    assert code == 0, doc
    for host in HOSTS:
        result = doc["hosts"][host]
        assert [c["kind"] for c in result["details"]["changes"]] == ["base_shipped"], result
        assert result["details"]["base_image"]["layers_sent"] >= 1
        image = host_run(
            lab_env, host, "docker", "run", "--rm", base_image, "cat", "/provision-base"
        )
        assert image.stdout == "provision\n"

    started = time.monotonic()
    code, doc = sandbox.provision(capsys, inventory)
    assert code == 0, doc
    assert (
        time.monotonic() - started < 120
    )  # a hang guard: "nothing to change" below is the real check
    for host in HOSTS:
        result = doc["hosts"][host]
        assert (result["outcome"], result["reason"]) == ("ok", "nothing to change"), result
        assert result["details"]["base_image"]["layers_to_send"] == 0  # nothing sent again

    # Cron itself runs aicron.sh: a new log line appears (at most a minute after the block).
    deadline = time.monotonic() + 75
    waiting = set(HOSTS)
    while waiting and time.monotonic() < deadline:
        for host in sorted(waiting):
            new = read_bytes(lab_env, host, expected.log_file)[marks[host] :].decode()
            if "aicron[" in new:
                waiting.discard(host)
        time.sleep(1)
    assert not waiting, f"cron did not run aicron.sh on {sorted(waiting)} within 75 s"


def test_users_crontab_kept_byte_for_byte_and_schedule_updated_in_place(
    lab_env: LabFixture, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = (
        b"# my own jobs: tabs, trailing blanks, CRLF, latin-1\n"
        b"0 3 * * *\troot\t/usr/local/bin/backup --to \xe9t\xe9   \r\n"
    )
    before = sandbox.crontabs["lab1"] + mine
    assert host_run(lab_env, "lab1", "sh", "-c", "cat >/etc/crontab", stdin=before).ok
    inventory = sandbox.inventory(cron_schedule="*/5 * * * *")
    code, doc = sandbox.provision(capsys, inventory, "--limit", "lab1", "--skip-base")
    assert code == 0, doc
    settings = settings_from_vars({"fleet_provision": sandbox.settings})
    block = cron_block(settings)
    assert read_bytes(lab_env, "lab1", "/etc/crontab") == before + block

    after_block = b"# added by hand after fleet's block\n15 4 * * * root /bin/true\n"
    assert host_run(lab_env, "lab1", "sh", "-c", "cat >>/etc/crontab", stdin=after_block).ok
    inventory = sandbox.inventory(cron_schedule="*/7 * * * *")
    code, doc = sandbox.provision(capsys, inventory, "--limit", "lab1", "--skip-base", "--diff")
    assert code == 0, doc
    result = doc["hosts"]["lab1"]
    assert [c["kind"] for c in result["details"]["changes"]] == ["cron_block_updated"]
    assert "-*/5 * * * * root" in result["details"]["diff"]
    assert "+*/7 * * * * root" in result["details"]["diff"]
    new_block = cron_block(replace(settings, cron_schedule="*/7 * * * *"))
    assert read_bytes(lab_env, "lab1", "/etc/crontab") == before + new_block + after_block

    code, doc = sandbox.provision(capsys, inventory, "--limit", "lab1", "--skip-base")
    assert code == 0 and doc["hosts"]["lab1"]["outcome"] == "ok", doc


def _state(env: LabFixture, host: str, sandbox: Sandbox) -> str:
    script = (
        'sha256sum /etc/crontab; ls -la --time-style=full-iso /srv "$1" "$2" 2>&1; '
        "pgrep -af 'http[.]server'; docker image ls -q --no-trunc | sort"
    )
    return host_run(env, host, "sh", "-c", script, "state", sandbox.root, SCRIPT_DIR).stdout


def test_check_changes_nothing(
    lab_env: LabFixture, sandbox: Sandbox, base_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {host: _state(lab_env, host, sandbox) for host in HOSTS}
    inventory = sandbox.inventory(base_image=base_image)
    code, doc = sandbox.provision(capsys, inventory, "--check", "--diff")
    assert code == 0, doc
    for host in HOSTS:
        result = doc["hosts"][host]
        assert result["outcome"] == "changed"
        assert result["reason"].startswith("would create 5 dirs, "), result
        assert "aicron.sh, write its readable copy, add the cron block" in result["reason"]
        assert f"+++ {host}:/etc/crontab (after)" in result["details"]["diff"]
        assert _state(lab_env, host, sandbox) == before[host]
    code, out, err = run_cli(
        capsys, "provision", "lab1", "-i", str(inventory), "--check", "--diff", "--skip-base"
    )
    assert code == 0
    assert "=== lab1 (changed)" in out and "+# BEGIN fleet aicron" in out
    assert "would create 5 dirs" in err
    assert _state(lab_env, "lab1", sandbox) == before["lab1"]


def test_preflight_failures_leave_the_host_alone(
    lab_env: LabFixture, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {host: _state(lab_env, host, sandbox) for host in HOSTS}
    inventory = sandbox.inventory(
        host_vars={"lab1": {"fleet_provision_overrides": {"min_free": {"data": "1000T"}}}}
    )
    # lab2's driver is gone (its state file, which the simulated nvidia-smi reads): what
    # nvidia-smi says on a server whose driver is not loaded.
    host_run(lab_env, "lab2", "mv", GPU_STATE, f"{GPU_STATE}.away")
    try:
        code, doc = sandbox.provision(capsys, inventory, "--skip-base")
    finally:
        host_run(lab_env, "lab2", "mv", f"{GPU_STATE}.away", GPU_STATE)
    assert code == 2, doc
    lab1, lab2 = doc["hosts"]["lab1"], doc["hosts"]["lab2"]
    assert lab1["outcome"] == lab2["outcome"] == "failed"
    assert lab1["reason"].startswith("refused: only ")
    assert "below fleet_provision.min_free.data = 1000.0TiB" in lab1["reason"]
    assert lab2["reason"].startswith("nvidia-smi lists no GPU: NVIDIA-SMI has failed"), lab2
    assert "driver/library version mismatch needs a reboot" in lab2["fix"]
    for host in HOSTS:
        assert not host_run(lab_env, host, "test", "-e", sandbox.root).ok
        assert _state(lab_env, host, sandbox) == before[host]


def test_gpu_hosts_pass_the_gpu_preflight(
    lab_env: LabFixture, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    """The nvidia runtime and a working nvidia-smi: the label's --runtime nvidia is fine."""
    code, doc = sandbox.provision(capsys, sandbox.inventory(), "--check", "--skip-base")
    assert code == 0, doc
    for host in HOSTS:
        reason = doc["hosts"][host]["reason"]
        assert "nvidia" not in reason, reason


def test_missing_base_image_is_a_usage_error(
    lab_env: LabFixture, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = sandbox.inventory(base_image="fleet-test-provision:absent")
    code, _, err = run_cli(capsys, "provision", "-i", str(inventory))
    assert code == 5
    assert "fleet-test-provision:absent" in err and "'fleet build'" in err
    for host in HOSTS:
        assert not host_run(lab_env, host, "test", "-e", sandbox.root).ok


def fleet_cron_command(env: LabFixture, host: str) -> str:
    """The command of the line in fleet's block of the host's /etc/crontab, as cron reads it."""
    crontab = read_bytes(env, host, "/etc/crontab")
    span = find_block(crontab)
    assert span is not None, crontab
    return cron_command(crontab[span[0] : span[1]])


@pytest.mark.hostile
def test_a_container_appending_to_the_data_roots_aicron_runs_nothing_as_root(
    lab_env: LabFixture, sandbox: Sandbox, base_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_from_vars({"fleet_provision": sandbox.settings})
    marker = f"{sandbox.root}/owned-by-a-container"

    # A data root that others than its owner may write is refused, naming the fix.
    inventory = sandbox.inventory(mode="0777")
    code, doc = sandbox.provision(capsys, inventory, "--limit", "lab1", "--skip-base")
    assert code == 2, doc
    lab1 = doc["hosts"]["lab1"]
    assert lab1["outcome"] == "failed"
    assert lab1["reason"].startswith(
        f"refused: the data root {settings.data_root} would be writable by others than its "
        "owner: mode 0777, owner root:root"
    )
    assert "allow_writable_data_root: true" in lab1["fix"]
    assert not host_run(lab_env, "lab1", "test", "-e", sandbox.root).ok

    # Hosts provisioned before the script moved: fleet's block runs the data root's aicron.sh.
    old_block = cron_block(settings).replace(SCRIPT_PATH.encode(), settings.copy_path.encode())
    for host in HOSTS:
        crontab = sandbox.crontabs[host] + old_block
        assert host_run(lab_env, host, "sh", "-c", "cat >/etc/crontab", stdin=crontab).ok
        assert fleet_cron_command(lab_env, host) == f"/bin/sh {settings.copy_path} >/dev/null"

    inventory = sandbox.inventory(base_image=base_image)
    code, doc = sandbox.provision(capsys, inventory, "--diff")
    assert code == 0, doc
    for host in HOSTS:
        result = doc["hosts"][host]
        kinds = [c["kind"] for c in result["details"]["changes"]]
        assert "cron_block_updated" in kinds, result
        assert (
            f"-*/5 * * * * root /bin/sh {settings.copy_path} >/dev/null"
            in (result["details"]["diff"])
        )
        assert f"+*/5 * * * * root /bin/sh {SCRIPT_PATH} >/dev/null" in (result["details"]["diff"])

    for host in HOSTS:
        # A framework image, run the way the framework's run command mounts the data root.
        appended = host_run(
            lab_env,
            host,
            "docker",
            "run",
            "--rm",
            "--volume",
            f"{settings.data_root}:/data",
            base_image,
            "sh",
            "-c",
            f'printf "touch %s\\n" {marker} >>/data/aicron.sh',
        )
        assert appended.ok, appended.stderr
        assert marker.encode() in read_bytes(lab_env, host, settings.copy_path)

        # What cron runs every 5 minutes, run now, as root, exactly as the crontab says.
        command = fleet_cron_command(lab_env, host)
        assert command == f"/bin/sh {SCRIPT_PATH} >/dev/null"
        log_before = len(read_bytes(lab_env, host, settings.log_file))
        assert host_run(lab_env, host, "sh", "-c", command).ok
        assert not host_run(lab_env, host, "test", "-e", marker).ok, "root ran the container's line"
        log = read_bytes(lab_env, host, settings.log_file)[log_before:].decode()
        assert "aicron[" in log and "nothing to do" in log  # the root-owned script ran
        assert read_bytes(lab_env, host, SCRIPT_PATH) == render_script(settings)
        owners = host_run(lab_env, host, "stat", "-c", "%a %U %G", SCRIPT_DIR, SCRIPT_PATH).stdout
        assert owners == "755 root root\n755 root root\n"

    # The next provision puts the copy back as it was; nothing else changed.
    code, doc = sandbox.provision(capsys, inventory, "--skip-base")
    assert code == 0, doc
    for host in HOSTS:
        result = doc["hosts"][host]
        assert [c["kind"] for c in result["details"]["changes"]] == ["copy_updated"], result
        assert read_bytes(lab_env, host, settings.copy_path) == render_copy(settings)


@pytest.mark.hostile
def test_a_container_swapping_the_copy_in_a_loop_redirects_no_write_of_roots(
    lab_env: LabFixture, sandbox: Sandbox, base_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The review's race: provision rewrites the data root's copy of aicron.sh as root
    while a container swaps its name, and every temporary name beside it, for a link to a
    0600 file of the host's, in a loop. Root's write, chown and chmod must never reach it."""
    host = "lab1"
    settings = settings_from_vars({"fleet_provision": sandbox.settings})
    victim = f"/etc/fleet-test-victim-{uuid.uuid4().hex[:6]}"
    inventory = sandbox.inventory(base_image=base_image)
    code, doc = sandbox.provision(capsys, inventory, "--limit", host)
    assert code == 0, doc
    plant = 'printf "root:secret\\n" >"$1" && chmod 0600 "$1"'
    assert host_run(lab_env, host, "sh", "-c", plant, "plant", victim).ok
    swap = (
        'for f in /d/aicron.sh /d/aicron.sh.* /d/.aicron.sh.*; do [ -e "$f" ] && '
        f'[ ! -L "$f" ] && rm -f "$f" && ln -s {victim} "$f" && echo swapped; done'
    )
    try:
        with swapping(lab_env, host, settings.data_root, swap) as swapper:
            outcomes = []
            for _ in range(8):
                code, doc = sandbox.provision(capsys, inventory, "--limit", host, "--skip-base")
                outcomes.append(doc["hosts"][host]["outcome"])
            swaps = host_run(lab_env, host, "docker", "logs", swapper).stdout.count("swapped")
        assert swaps > 0, "the container never swapped a name"
        assert set(outcomes) <= {"changed", "failed"}, outcomes
        assert host_run(lab_env, host, "cat", victim).stdout == "root:secret\n"
        stat = host_run(lab_env, host, "stat", "-c", "%a %u %F", victim).stdout
        assert stat == "600 0 regular file\n"
    finally:
        host_run(lab_env, host, "rm", "-f", victim)

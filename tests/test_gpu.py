"""GPU processes as a host reports them (recorded outputs in the formats real tools print,
see tests/fixtures/gpu/README.md): parsing, whose container, the busy reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fleet.ops import gpu
from fleet.ssh.base import CommandResult
from tests.fakes import FakeTransport

ID1 = "a" * 64
ID2 = "0123456789abcdef" * 4
UUID = "GPU-5a5f7b2e-1c1d-4e8a-9f00-0123456789ab"

RECORDED = f"""@@gpu_apps
31337, {UUID}, 2048, python3
4242, {UUID}, 512, /usr/bin/python3
7, {UUID}, 100, Xorg
@@gpu_apps_rc 0
@@gpu_owners
31337 125 0::/system.slice/docker-{ID1}.scope
4242 7300 12:pids:/docker/{ID2} 11:memory:/docker/{ID2} 0::/docker/{ID2}
7 99999 0::/system.slice/gdm.service
"""


def test_processes_with_their_container_and_age() -> None:
    found = gpu.parse(RECORDED)
    assert found.available and found.error == ""
    first, second, desktop = found.processes
    assert (first.pid, first.gpu_uuid, first.used_mib, first.name) == (31337, UUID, 2048, "python3")
    assert first.container_id == ID1 and first.seconds == 125
    assert second.container_id == ID2 and second.seconds == 7300
    assert desktop.container_id == ""  # not in a container: never the framework's


def test_only_the_framework_containers_jobs_make_it_busy() -> None:
    found = gpu.parse(RECORDED)
    assert [p.pid for p in found.in_containers([ID1[:12]])] == [31337]
    assert [p.pid for p in found.in_containers([ID2, ID1])] == [31337, 4242]
    assert found.in_containers(["f" * 12]) == []


def test_the_busy_reason_names_pid_memory_and_since() -> None:
    found = gpu.parse(RECORDED).processes[:2]
    assert gpu.busy_reason(found) == (
        "busy: 2 GPU processes (pid 31337, 2048 MiB, for 2m05s; pid 4242, 512 MiB, for 2h01m)"
    )
    assert gpu.busy_reason(found[:1]) == "busy: 1 GPU process (pid 31337, 2048 MiB, for 2m05s)"


def test_a_host_without_a_driver_or_with_a_broken_one() -> None:
    assert gpu.parse("@@gpu_apps\n@@gpu_apps_rc absent\n") == gpu.GPUProcesses(available=False)
    broken = gpu.parse(
        "@@gpu_apps\nNVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
        "driver.\n@@gpu_apps_rc 9\n"
    )
    assert broken.available and broken.processes == ()
    assert broken.error.startswith("NVIDIA-SMI has failed")


def test_no_process_is_an_idle_host() -> None:
    assert gpu.parse("@@gpu_apps\n@@gpu_apps_rc 0\n@@gpu_owners\n").processes == ()


def test_how_many_gpus_a_container_should_see() -> None:
    assert gpu.expected_gpus(None, 4) == 4  # --runtime nvidia, NVIDIA_VISIBLE_DEVICES=all
    assert gpu.expected_gpus("all", 4) == 4
    assert gpu.expected_gpus("2", 4) == 2
    assert gpu.expected_gpus('"device=0,2"', 4) == 2
    assert gpu.expected_gpus("device=1", 4) == 1


class _Host(FakeTransport):
    def __init__(self, printed: str) -> None:
        super().__init__("gpu07")
        self.printed = printed

    def answer(self, argv: list[str], stdin: bytes | None) -> CommandResult:
        return CommandResult(" ".join(argv), 0, self.printed, "", 0.0)


HOST_L = f"@@host\nGPU 0: NVIDIA A100-SXM4-80GB (UUID: {UUID})\nGPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-2)\n"


def test_a_container_that_lists_its_gpus_passes() -> None:
    inside = f"@@inside\nGPU 0: NVIDIA A100-SXM4-80GB (UUID: {UUID})\nGPU 1: x (UUID: GPU-2)\n"
    host = _Host(HOST_L + inside + "@@inside_rc 0\n")
    assert gpu.sees_its_gpus(host, "cauchy_service", None) == (True, "sees 2 GPU(s)")
    assert host.commands[0][-1] == "cauchy_service"  # an argument, never spliced into sh -c


def test_a_container_without_nvidia_smi_or_with_too_few_gpus_fails() -> None:
    missing = '@@inside\nOCI runtime exec failed: exec: "nvidia-smi": not found\n@@inside_rc 126\n'
    ok, said = gpu.sees_its_gpus(_Host(HOST_L + missing), "c", None)
    assert not ok and said.startswith("the container sees 0 of 2 GPU(s): OCI runtime exec failed")
    one = f"@@inside\nGPU 0: x (UUID: {UUID})\n@@inside_rc 0\n"
    assert not gpu.sees_its_gpus(_Host(HOST_L + one), "c", "all")[0]
    assert gpu.sees_its_gpus(_Host(HOST_L + one), "c", "1")[0]


def _driver(tmp_path: Path, uuids: list[str]) -> tuple[dict[str, str], Path]:
    """PATH and state for the lab's nvidia-smi, run through a wrapper that logs each call."""
    lab = Path(gpu.__file__).resolve().parents[1] / "data" / "lab" / "nvidia_smi.py"
    state = tmp_path / "gpus.json"
    state.write_text(
        json.dumps(
            {
                "driver_version": "535.104.05",
                "cuda_version": "12.2",
                "gpus": [
                    {"uuid": u, "name": "NVIDIA A100-SXM4-80GB", "memory_total_mib": 81920}
                    for u in uuids
                ],
            }
        )
    )
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "nvidia-smi"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >>{calls}\nexec {sys.executable} {lab} "$@"\n')
    wrapper.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FLEET_LAB_GPU_STATE": str(state),
        "FLEET_LAB_GPU_DIR": str(tmp_path / "none"),
    }
    return env, calls


def test_the_program_run_by_sh_reads_the_driver_once(tmp_path: Path) -> None:
    env, calls = _driver(tmp_path, [UUID, UUID.replace("ab", "cd")])
    job = tmp_path / "fleet-gpu-job"  # what the lab's driver counts as a CUDA process
    shutil.copy("/bin/sleep", job)
    running = subprocess.Popen(
        [str(job), "30"],
        env={"NVIDIA_VISIBLE_DEVICES": "1", "FLEET_GPU_JOB_MIB": "2048"},
    )
    try:
        time.sleep(1.1)
        ran = subprocess.run(
            ["sh", "-c", gpu.PROGRAM], env=env, capture_output=True, text=True, check=True
        )
    finally:
        running.kill()
        running.wait()
    found = gpu.parse(ran.stdout)
    mine = [p for p in found.processes if p.pid == running.pid]
    assert found.available and found.error == "" and len(mine) == 1
    assert (mine[0].gpu_uuid, mine[0].used_mib) == (UUID.replace("ab", "cd"), 2048)
    assert mine[0].seconds is not None and mine[0].seconds >= 1
    # Each nvidia-smi starts the driver's library again: the owners come from the one list.
    assert calls.read_text().splitlines() == [
        "--query-compute-apps=pid,gpu_uuid,used_memory,process_name --format=csv,noheader,nounits"
    ]


def test_the_program_reports_a_driver_that_fails(tmp_path: Path) -> None:
    env, _ = _driver(tmp_path, [UUID])
    env["FLEET_LAB_GPU_STATE"] = str(tmp_path / "gone.json")  # the driver cannot be reached
    ran = subprocess.run(
        ["sh", "-c", gpu.PROGRAM], env=env, capture_output=True, text=True, check=True
    )
    found = gpu.parse(ran.stdout)
    assert found.available and found.processes == ()
    assert "couldn't communicate with the NVIDIA driver" in found.error

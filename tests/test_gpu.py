"""GPU processes as a host reports them (recorded outputs in the formats real tools print,
see tests/fixtures/gpu/README.md): parsing, whose container, the busy reason."""

from __future__ import annotations

from fleet.ops import gpu

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

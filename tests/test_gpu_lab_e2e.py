"""End to end on the lab's GPU hosts (both image stores): the run command as labeled, with
``--runtime nvidia`` in effect, simulated GPUs seen in the container, real GPU jobs."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.images import daemon
from tests.conftest import (
    LabFixture,
    framework_container,
    host_run,
    host_sh,
    run_project_json,
)
from tests.framework import FrameworkProject, build_image, build_with_label, built_project

pytestmark = pytest.mark.lab

HOSTS = ("lab1", "lab2")  # classic and containerd
APPS = [
    "--query-compute-apps=pid,gpu_uuid,used_memory,process_name",
    "--format=csv,noheader,nounits",
]


@pytest.fixture(scope="module")
def project(
    lab_env: LabFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrameworkProject]:
    root = tmp_path_factory.mktemp("gpufw") / "cauchy"
    repository = f"fleet-test-gpu-{uuid.uuid4().hex[:6]}"
    yield from built_project(lab_env, root, repository, ["v1", "v2", "v3", "v4"])


def apps(env: LabFixture, host: str) -> list[list[str]]:
    out = host_sh(env, host, "nvidia-smi", *APPS)
    return list(csv.reader(io.StringIO(out), skipinitialspace=True))


@pytest.mark.parametrize("host", HOSTS)
def test_a_gpu_host_has_the_nvidia_runtime_and_a_driver(lab_env: LabFixture, host: str) -> None:
    assert "nvidia" in host_sh(lab_env, host, "docker", "info", "--format", "{{json .Runtimes}}")
    listed = host_sh(lab_env, host, "nvidia-smi", "-L").splitlines()
    assert len(listed) == 1 and listed[0].startswith("GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-")
    assert "CUDA Version: 12.2" in host_sh(lab_env, host, "nvidia-smi")


def test_the_labeled_run_command_runs_with_the_nvidia_runtime_and_a_job_is_a_real_process(
    lab_env: LabFixture,
    project: FrameworkProject,
    fast_inventory: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tag = project.built[0]
    code, doc = run_project_json(capsys, fast_inventory, project, "deploy", "all", tag)
    assert code == 0, doc
    for host in HOSTS:
        name = framework_container(lab_env, host, project.repository)
        runtime = host_sh(lab_env, host, "docker", "inspect", "-f", "{{.HostConfig.Runtime}}", name)
        assert runtime.strip() == "nvidia"
        inside = host_sh(lab_env, host, "docker", "exec", name, "nvidia-smi", "-L")
        assert inside.startswith("GPU 0: NVIDIA A100-SXM4-80GB")
        assert apps(lab_env, host) == []
        started = host_run(
            lab_env,
            host,
            "docker",
            "exec",
            "-d",
            "-e",
            "FLEET_GPU_JOB_MIB=2048",
            name,
            "fleet-gpu-job",
            "300",
        )
        assert started.ok, started.stderr
        deadline = time.monotonic() + 10
        while not (running := apps(lab_env, host)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(running) == 1
        pid, gpu, memory, process = running[0]
        assert gpu.startswith("GPU-") and memory == "2048" and process == "python3"
        # A real process of the host, inside the framework's container.
        cgroup = host_sh(lab_env, host, "cat", f"/proc/{pid}/cgroup")
        container = host_sh(lab_env, host, "docker", "inspect", "-f", "{{.Id}}", name).strip()
        assert container in cgroup
        host_run(lab_env, host, "docker", "restart", "-t", "1", name)
        assert apps(lab_env, host) == []


def _start_job(env: LabFixture, host: str, container: str, seconds: int) -> None:
    started = host_run(
        env,
        host,
        "docker",
        "exec",
        "-d",
        "-e",
        "FLEET_GPU_JOB_MIB=3072",
        container,
        "fleet-gpu-job",
        str(seconds),
    )
    assert started.ok, started.stderr
    deadline = time.monotonic() + 10
    while not apps(env, host) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert apps(env, host), "the job did not show in nvidia-smi"


def test_a_training_job_is_never_interrupted_silently(
    lab_env: LabFixture,
    project: FrameworkProject,
    fast_inventory: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1, v2, v3, v4 = project.built[:4]
    code, doc = run_project_json(capsys, fast_inventory, project, "deploy", "all", v1)
    assert code == 0, doc
    _start_job(lab_env, "lab1", framework_container(lab_env, "lab1", project.repository), 600)

    # The audit says which host is busy, and with what.
    _, doc = run_project_json(capsys, fast_inventory, project, "audit", "all")
    busy = doc["hosts"]["lab1"]["details"]["gpu_busy"]
    assert len(busy) == 1 and busy[0].startswith("pid ") and "3072 MiB" in busy[0]
    assert doc["hosts"]["lab2"]["details"]["gpu_busy"] == []

    # A busy host is skipped, with the job as evidence; the idle one moves on.
    code, doc = run_project_json(capsys, fast_inventory, project, "deploy", "all", v2)
    lab1, lab2 = doc["hosts"]["lab1"], doc["hosts"]["lab2"]
    assert lab1["outcome"] == "skipped", lab1
    assert lab1["reason"].startswith("busy: 1 GPU process (pid "), lab1
    assert "3072 MiB, for " in lab1["reason"] and "--force" in lab1["fix"]
    assert lab2["outcome"] == "changed", lab2
    assert len(apps(lab_env, "lab1")) == 1  # still training

    # A driver that does not answer cannot vouch that nothing runs: skipped, not guessed.
    host_run(lab_env, "lab1", "mv", "/etc/fleet-lab/gpus.json", "/etc/fleet-lab/gpus.off")
    try:
        code, doc = run_project_json(capsys, fast_inventory, project, "deploy", "lab1", v2)
    finally:
        host_run(lab_env, "lab1", "mv", "/etc/fleet-lab/gpus.off", "/etc/fleet-lab/gpus.json")
    lab1 = doc["hosts"]["lab1"]
    assert lab1["outcome"] == "skipped", lab1
    assert "cannot tell whether a GPU job runs" in lab1["reason"], lab1
    assert "couldn't communicate with the NVIDIA driver" in lab1["reason"], lab1
    assert len(apps(lab_env, "lab1")) == 1  # still training

    # --wait-idle waits for the job to end, then switches.
    host_run(lab_env, "lab1", "pkill", "-f", "^/usr/bin/python3 /usr/bin/fleet-gpu-job")
    container = framework_container(lab_env, "lab1", project.repository)
    _start_job(lab_env, "lab1", container, 4)
    code, doc = run_project_json(
        capsys, fast_inventory, project, "deploy", "all", v3, "--wait-idle", "60s", "--serial", "1"
    )
    assert doc["hosts"]["lab1"]["outcome"] == "changed", doc["hosts"]["lab1"]
    assert doc["hosts"]["lab2"]["outcome"] == "changed", doc["hosts"]["lab2"]
    # In batches, the idle host went first: lab2 switched while lab1's job still ran.
    switched = {
        host: json.loads(host_sh(lab_env, host, "tail", "-n", "1", "/var/lib/fleet/history.jsonl"))
        for host in ("lab1", "lab2")
    }
    assert switched["lab2"]["to"] == switched["lab1"]["to"] == v3
    assert switched["lab2"]["time"] < switched["lab1"]["time"], switched

    # --force interrupts it, and the host's history says so.
    _start_job(lab_env, "lab1", framework_container(lab_env, "lab1", project.repository), 600)
    code, doc = run_project_json(capsys, fast_inventory, project, "deploy", "lab1", v4, "--force")
    assert doc["hosts"]["lab1"]["outcome"] == "changed", doc["hosts"]["lab1"]
    assert apps(lab_env, "lab1") == []
    history = host_sh(lab_env, "lab1", "tail", "-n", "1", "/var/lib/fleet/history.jsonl")
    last = json.loads(history)
    assert last["to"] == v4 and len(last["interrupted"]) == 1
    assert last["interrupted"][0].startswith("pid ")


def test_an_image_needing_a_newer_cuda_is_refused_before_a_byte_is_shipped(
    lab_env: LabFixture,
    project: FrameworkProject,
    fast_inventory: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tag = f"77.{uuid.uuid4().int % 1000}"
    reference = f"{project.repository}:{tag}"
    build_with_label(
        f"{project.repository}:{project.built[0]}",
        reference,
        {"io.fleet.tag": tag, "io.fleet.commit-count": "9998", "com.nvidia.cuda.version": "12.4.1"},
    )
    code, doc = run_project_json(capsys, fast_inventory, project, "push", "all", reference)
    assert code == 2, doc
    for host in HOSTS:
        result = doc["hosts"][host]
        assert result["outcome"] == "failed", result
        assert (
            f"{reference} needs CUDA 12.4.1, but the host's driver 535.104.05" in result["reason"]
        )
        assert "nothing was shipped" in result["reason"]
        assert not host_run(lab_env, host, "docker", "image", "inspect", reference).ok


def test_a_container_that_does_not_see_its_gpu_is_rolled_back(
    lab_env: LabFixture,
    project: FrameworkProject,
    fast_inventory: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1 = project.built[0]
    base = f"{project.repository}:{v1}"
    tag = f"78.{uuid.uuid4().int % 1000}"
    reference = f"{project.repository}:{tag}"
    client = daemon.connect()
    command = client.images.get(base).labels["org.label-schema.docker.cmd"].replace(base, reference)
    # Healthy, but blind to the GPUs: the NVIDIA runtime hands it none (void).
    dockerfile = (
        f"FROM {base}\nENV NVIDIA_VISIBLE_DEVICES=void\n"
        f'LABEL io.fleet.tag={json.dumps(tag)} io.fleet.commit-count="9997" '
        f"org.label-schema.docker.cmd={json.dumps(command)}\n"
    )
    build_image(client, reference, dockerfile)
    code, doc = run_project_json(capsys, fast_inventory, project, "deploy", "lab1", v1)
    assert code == 0, doc
    code, doc = run_project_json(capsys, fast_inventory, project, "deploy", "lab1", reference)
    lab1 = doc["hosts"]["lab1"]
    assert code == 2 and lab1["outcome"] == "failed", lab1
    assert f"{tag} does not see its GPUs" in lab1["reason"]
    assert "the container sees 0 of 1 GPU(s)" in lab1["reason"]
    assert f"rolled back to {v1}" in lab1["reason"]
    running = host_sh(
        lab_env,
        "lab1",
        "docker",
        "ps",
        "--filter",
        f"label=io.fleet.framework={project.repository}",
        "--format",
        "{{.Image}}",
    )
    assert running.strip() == base

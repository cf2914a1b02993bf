"""Fact parsing from outputs recorded on the lab's real hosts."""

import io
from pathlib import Path

from rich.console import Console

from fleet import report
from fleet.ops import facts

FIXTURES = Path(__file__).parent / "fixtures" / "facts"


def test_classic_host() -> None:
    found = facts.parse((FIXTURES / "classic.txt").read_text())
    assert found.hostname == "lab1"
    assert found.engine_ok
    assert found.engine_version.startswith("20.10")
    assert found.api_version == "1.41"
    assert found.image_store == "classic"
    assert found.storage_driver == "overlay2"
    assert "runc" in found.runtimes
    assert not found.has_nvidia_runtime
    assert found.gpus == ()
    assert found.nvidia_smi is False
    assert found.disk_docker is not None and found.disk_docker.path == "/var/lib/docker"
    assert found.disk_docker.free > 0


def test_containerd_host() -> None:
    found = facts.parse((FIXTURES / "containerd.txt").read_text())
    assert found.engine_version.startswith("26.")
    assert found.image_store == "containerd"


def test_engine_down_is_an_error_with_the_engines_words() -> None:
    found = facts.parse((FIXTURES / "engine-down.txt").read_text())
    assert not found.engine_ok
    assert "Cannot connect to the Docker daemon" in found.engine_error
    assert found.image_store == ""
    assert found.framework_containers == ()


def test_gpus_and_framework_containers() -> None:
    text = "\n".join(
        [
            "@@hostname",
            "gpu07",
            "@@docker_info",
            '{"ServerVersion":"24.0.7","Runtimes":{"nvidia":{},"runc":{}},"DriverStatus":[]}',
            "@@docker_info_rc 0",
            "@@nvidia_smi",
            "NVIDIA A100-SXM4-80GB, 535.104.05, 81920 MiB",
            "NVIDIA A100-SXM4-80GB, 535.104.05, 81920 MiB",
            "@@df_data",
            "absent",
            "@@framework",
            '{"ID":"abc","Names":"cauchy_service","Image":"cauchy:0.2.7","State":"running","Ignored":"x"}',
            "@@end",
        ]
    )
    found = facts.parse(text)
    assert found.has_nvidia_runtime
    assert len(found.gpus) == 2 and found.gpus[0].model == "NVIDIA A100-SXM4-80GB"
    assert found.disk_data is None
    assert found.framework_containers == (
        {"ID": "abc", "Names": "cauchy_service", "Image": "cauchy:0.2.7", "State": "running"},
    )


def test_garbage_does_not_crash() -> None:
    found = facts.parse("\x00garbage\n@@docker_info\n{not json\n@@df_docker\n1 2\n")
    assert not found.engine_ok


def test_gpus_as_the_driver_lists_them_with_use_and_cuda() -> None:
    text = "\n".join(
        [
            "@@docker_info",
            '{"ServerVersion":"24.0.7","Runtimes":{"nvidia":{},"runc":{}},"DriverStatus":[]}',
            "@@docker_info_rc 0",
            "@@nvidia_smi",
            "0, GPU-5a5f7b2e-1c1d-4e8a-9f00-0123456789ab, NVIDIA A100-SXM4-80GB, 535.104.05, "
            "81920, 3076, 100",
            "@@nvidia_cuda",
            "12.2",
            "@@end",
        ]
    )
    found = facts.parse(text)
    (gpu,) = found.gpus
    assert (gpu.index, gpu.model, gpu.driver) == (0, "NVIDIA A100-SXM4-80GB", "535.104.05")
    assert (gpu.memory, gpu.memory_used, gpu.utilization) == ("81920 MiB", "3076 MiB", "100 %")
    assert gpu.uuid.startswith("GPU-") and found.cuda_version == "12.2"


def _gpu_row(index: int, used: int, util: int) -> dict[str, object]:
    return {
        "model": "NVIDIA A100-SXM4-80GB",
        "index": index,
        "memory": "81920 MiB",
        "memory_used": f"{used} MiB",
        "utilization": f"{util} %",
    }


def test_the_table_folds_idle_gpus_and_names_those_in_use() -> None:
    idle = {"gpus": [_gpu_row(i, 4, 0) for i in range(8)], "cuda_version": "12.2"}
    busy = {
        "gpus": [_gpu_row(0, 4, 0), _gpu_row(1, 40000, 97), _gpu_row(2, 9000, 0)]
        + [_gpu_row(i, 30000, 50) for i in range(3, 6)],
        "cuda_version": "12.2",
    }
    # An older driver's list (name, driver, total): no use to tell, so not "idle" either.
    old = {"gpus": [{"model": "Tesla V100", "memory": "16160 MiB", "memory_used": ""}]}
    out = io.StringIO()
    rows_in = [("gpu01", idle), ("gpu02", busy), ("gpu03", old)]
    Console(file=out, width=400).print(report.facts_table(rows_in))
    rows = {line.split()[0]: line for line in out.getvalue().splitlines()[1:]}
    assert "8x NVIDIA A100-SXM4-80GB (CUDA 12.2), idle" in rows["gpu01"]
    # GPU 2: a tenth of its memory held at 0 %, a job between steps: in use.
    assert (
        "6x NVIDIA A100-SXM4-80GB (CUDA 12.2), 5 in use: 1 (40000/81920 MiB, 97 %), "
        "2 (9000/81920 MiB, 0 %), 3 (30000/81920 MiB, 50 %), 2 more"
    ) in rows["gpu02"]
    assert "1x Tesla V100  " in rows["gpu03"] and "idle" not in rows["gpu03"]

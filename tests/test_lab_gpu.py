"""The lab's simulated GPU tools, run as programs: what nvidia-smi prints, what the runtime
hands a container. Formats as nvidia-smi 535 prints them (see tests/fixtures/gpu/README.md)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "fleet" / "data" / "lab"
UUID0 = "GPU-5a5f7b2e-1c1d-4e8a-9f00-0123456789ab"
UUID1 = "GPU-6b6f7b2e-1c1d-4e8a-9f00-0123456789cd"
QUERY_GPU = "index,uuid,name,driver_version,memory.total,memory.used,utilization.gpu"
QUERY_APPS = "pid,gpu_uuid,used_memory,process_name"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "gpus.json"
    gpu = {"name": "NVIDIA A100-SXM4-80GB", "memory_total_mib": 81920, "memory_used_mib": 4}
    path.write_text(
        json.dumps(
            {
                "driver_version": "535.104.05",
                "cuda_version": "12.2",
                "gpus": [{**gpu, "uuid": UUID0}, {**gpu, "uuid": UUID1, "utilization": 7}],
            }
        )
    )
    return path


def smi(state: Path, *argv: str, inside: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"FLEET_LAB_GPU_STATE": str(state), "PATH": "/usr/bin:/bin"}
    env["FLEET_LAB_GPU_DIR"] = str(state.parent / "inside")
    if inside is not None:
        # What the runtime mounts in a container: the devices it granted.
        (state.parent / "inside").mkdir(exist_ok=True)
        (state.parent / "inside" / "visible-devices").write_text(inside + "\n")
    return subprocess.run(
        [sys.executable, str(TOOLS / "nvidia_smi.py"), *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_list_names_each_gpu_with_its_uuid(state: Path) -> None:
    out = smi(state, "-L").stdout.splitlines()
    assert out == [
        f"GPU 0: NVIDIA A100-SXM4-80GB (UUID: {UUID0})",
        f"GPU 1: NVIDIA A100-SXM4-80GB (UUID: {UUID1})",
    ]


def test_a_container_sees_only_its_visible_devices(state: Path) -> None:
    assert smi(state, "-L", inside="1").stdout == f"GPU 1: NVIDIA A100-SXM4-80GB (UUID: {UUID1})\n"
    assert len(smi(state, "-L", inside="all").stdout.splitlines()) == 2


def test_query_gpu_is_csv_without_header_or_units(state: Path) -> None:
    ran = smi(state, f"--query-gpu={QUERY_GPU}", "--format=csv,noheader,nounits")
    rows = list(csv.reader(io.StringIO(ran.stdout), skipinitialspace=True))
    assert rows == [
        ["0", UUID0, "NVIDIA A100-SXM4-80GB", "535.104.05", "81920", "4", "0"],
        ["1", UUID1, "NVIDIA A100-SXM4-80GB", "535.104.05", "81920", "4", "7"],
    ]


def test_no_compute_process_prints_nothing(state: Path) -> None:
    ran = smi(state, f"--query-compute-apps={QUERY_APPS}", "--format=csv,noheader,nounits")
    assert ran.returncode == 0 and ran.stdout == ""


def test_the_banner_says_driver_and_cuda_version(state: Path) -> None:
    banner = smi(state).stdout
    assert "Driver Version: 535.104.05" in banner and "CUDA Version: 12.2" in banner
    assert "No running processes found" in banner
    widths = {len(line) for line in banner.splitlines()[1:] if line.startswith(("|", "+"))}
    assert widths == {89}


def test_unknown_fields_and_flags_fail_as_the_real_one_does(state: Path) -> None:
    bad = smi(state, "--query-gpu=index,bogus", "--format=csv,noheader,nounits")
    assert bad.returncode == 2 and '"bogus" is not a valid field' in bad.stderr
    assert smi(state, "--frobnicate").returncode != 0


def test_without_the_driver_it_says_what_the_real_one_says(tmp_path: Path) -> None:
    ran = smi(tmp_path / "absent.json", "-L")
    assert ran.returncode == 9
    assert "couldn't communicate with the NVIDIA driver" in ran.stdout


def _runtime_config(tmp_path: Path, env: list[str]) -> dict[str, object]:
    """Run the runtime wrapper's spec edit on a bundle, as runc's 'create' would get it."""
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").write_text(json.dumps({"process": {"env": env}, "mounts": []}))
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('rt', {str(TOOLS / 'nvidia_container_runtime.py')!r})\n"
        "rt = importlib.util.module_from_spec(spec); spec.loader.exec_module(rt)\n"
        f"rt.STATE = {str(tmp_path / 'gpus.json')!r}\n"
        f"path = {str(bundle / 'config.json')!r}\n"
        f"config = rt.inject(json.load(open(path)), {str(bundle)!r})\n"
        "print(json.dumps(config))\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(ran.stdout)
    return result


def test_the_runtime_mounts_the_gpu_tools_read_only_when_gpus_are_asked(
    tmp_path: Path, state: Path
) -> None:
    config = _runtime_config(tmp_path, ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=0"])
    mounts = {m["destination"]: m for m in config["mounts"]}  # type: ignore[attr-defined]
    assert set(mounts) == {
        "/usr/bin/nvidia-smi",
        "/usr/bin/fleet-gpu-job",
        "/run/fleet-lab-gpu/gpus.json",
        "/run/fleet-lab-gpu/visible-devices",
    }
    assert all("ro" in m["options"] for m in mounts.values())
    granted = Path(mounts["/run/fleet-lab-gpu/visible-devices"]["source"]).read_text()
    assert granted == "0\n"


def test_the_runtime_leaves_a_container_that_asks_for_no_gpu_alone(
    tmp_path: Path, state: Path
) -> None:
    for env in (["PATH=/bin"], ["NVIDIA_VISIBLE_DEVICES=void"], ["NVIDIA_VISIBLE_DEVICES="]):
        assert _runtime_config(tmp_path, env)["mounts"] == []


def test_csv_with_header_and_units_as_without_nounits(state: Path) -> None:
    ran = smi(state, "--query-gpu=index,memory.used", "--format=csv")
    assert ran.stdout.splitlines() == ["index, memory.used [MiB]", "0, 4 MiB", "1, 4 MiB"]
    pids = smi(state, "--query-compute-apps=pid", "--format=csv,noheader")
    assert pids.returncode == 0 and pids.stdout == ""

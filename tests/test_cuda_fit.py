"""CUDA fit: what an image needs of a host's driver, read as NVIDIA's images state it, and
the refusal before a byte is shipped."""

from __future__ import annotations

import pytest

from fleet.errors import HostError
from fleet.images.labels import cuda_tuple, required_cuda
from fleet.images.spec import ImageSpec
from fleet.ship.plan import check_cuda
from fleet.ship.state import HostImageState, parse_state

# What nvidia/cuda:12.1.0-runtime-ubuntu22.04 sets (docker image inspect, Config.Env).
NVIDIA_ENV = [
    "PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin",
    "NVARCH=x86_64",
    "NVIDIA_REQUIRE_CUDA=cuda>=12.1 brand=tesla,driver>=470,driver<471 "
    "brand=unknown,driver>=470,driver<471 brand=nvidia,driver>=470,driver<471",
    "CUDA_VERSION=12.1.0",
    "NVIDIA_VISIBLE_DEVICES=all",
]


def test_the_requirement_comes_from_nvidia_require_cuda_first() -> None:
    assert required_cuda(NVIDIA_ENV, {"com.nvidia.cuda.version": "11.8.0"}) == "12.1"


def test_then_the_label_then_cuda_version() -> None:
    assert required_cuda([], {"com.nvidia.cuda.version": "12.4.1"}) == "12.4.1"
    assert required_cuda(["CUDA_VERSION=11.8.0"], {}) == "11.8.0"
    assert required_cuda(["PATH=/bin"], {}) == ""


def test_a_hostile_statement_counts_as_none() -> None:
    assert required_cuda([], {"com.nvidia.cuda.version": "12.4; rm -rf /"}) == ""
    assert required_cuda(["NVIDIA_REQUIRE_CUDA=anything"], {}) == ""


def test_versions_compare_as_major_minor() -> None:
    assert cuda_tuple("12.2") == (12, 2) and cuda_tuple("12.1.0") == (12, 1)
    assert cuda_tuple("11") == (11, 0)
    assert cuda_tuple("12.10") > cuda_tuple("12.9")


def _state(cuda: str) -> HostImageState:
    return HostImageState(True, driver="535.104.05" if cuda else "", cuda=cuda)


def test_an_older_driver_is_refused_with_both_versions_and_the_fix() -> None:
    spec = ImageSpec("cauchy:0.2.9", "sha256:x", (), cuda="12.4")
    with pytest.raises(HostError) as caught:
        check_cuda("lab1", spec, _state("12.2"))
    assert "cauchy:0.2.9 needs CUDA 12.4" in caught.value.reason
    assert "driver 535.104.05 supports CUDA 12.2 at most; nothing was shipped" in (
        caught.value.reason
    )
    assert "upgrade the host's NVIDIA driver" in str(caught.value.fix)


def test_a_new_enough_driver_an_unstated_need_or_no_driver_pass() -> None:
    check_cuda("lab1", ImageSpec("a:1", "x", (), cuda="12.1"), _state("12.2"))
    check_cuda("lab1", ImageSpec("a:1", "x", (), cuda="12.2.2"), _state("12.2"))
    check_cuda("lab1", ImageSpec("a:1", "x", ()), _state("11.0"))
    check_cuda("lab1", ImageSpec("a:1", "x", (), cuda="12.4"), _state(""))


def test_the_state_program_reports_driver_and_cuda() -> None:
    text = "@@engine\n20.10.24\n@@engine_rc 0\n@@store\n[]\n@@cuda\n535.104.05 12.2\n@@end\n"
    state = parse_state(text)
    assert (state.driver, state.cuda) == ("535.104.05", "12.2")
    none = parse_state(text.replace("535.104.05 12.2\n", ""))
    assert (none.driver, none.cuda) == ("", "")

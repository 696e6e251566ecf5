"""GPU discovery parses nvidia-smi's CSV and honours the server's CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from vllm_bootstrap.supervision import gpus
from vllm_bootstrap.supervision.gpus import GPU, GPUDiscoveryError, parse_gpu_line, query_gpus

STANDIN_BIN = Path(__file__).parent / "standins" / "bin"


def _gpu(index: int) -> GPU:
    return GPU(index, f"GPU-{index}aaa-0000", "NVIDIA H100", 81559, 0)


def test_parse_a_line() -> None:
    line = "3, GPU-5b2e1c4a-77e2-0d1c-9f1e-0123456789ab, NVIDIA H100 80GB HBM3, 81559, 4"
    assert parse_gpu_line(line) == GPU(
        3, "GPU-5b2e1c4a-77e2-0d1c-9f1e-0123456789ab", "NVIDIA H100 80GB HBM3", 81559, 4
    )


def test_unavailable_memory_is_none() -> None:
    assert parse_gpu_line("0, GPU-1, NVIDIA GH200, [N/A], [N/A]").memory_total_mib is None


def test_garbage_is_a_discovery_error() -> None:
    with pytest.raises(GPUDiscoveryError, match="unexpected line"):
        parse_gpu_line("No devices were found")


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, [0, 1, 2, 3]),
        ("2,0", [0, 2]),
        ("GPU-1aaa", [1]),
        ("1,7,2", [1]),  # like CUDA, an unknown entry ends the list
        ("", []),
        ("-1", []),
    ],
)
def test_cuda_visible_devices_limits_the_gpus(visible: str | None, expected: list[int]) -> None:
    detected = [_gpu(index) for index in range(4)]
    assert [gpu.index for gpu in gpus.restrict_to_visible(detected, visible)] == expected


@pytest.fixture
def standin_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{STANDIN_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GPU_COUNT", "4")


@pytest.mark.usefixtures("standin_path")
def test_query_runs_nvidia_smi() -> None:
    found = asyncio.run(query_gpus(visible_devices=None))
    assert [gpu.index for gpu in found] == [0, 1, 2, 3]
    assert found[0].name == "NVIDIA H100 80GB HBM3"
    assert found[0].memory_total_mib == 81559


@pytest.mark.usefixtures("standin_path")
def test_query_reports_a_driver_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_NVIDIA_SMI_FAIL", "1")
    with pytest.raises(GPUDiscoveryError, match="couldn't communicate with the NVIDIA driver"):
        asyncio.run(query_gpus(visible_devices=None))


def test_query_without_nvidia_smi_means_a_cpu_box(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(gpus, "NVIDIA_DRIVER_MARKERS", (tmp_path / "no-driver",))
    with pytest.raises(gpus.NoNvidiaSmi, match="nvidia-smi is not installed"):
        asyncio.run(query_gpus(visible_devices=None))


def test_a_loaded_driver_without_nvidia_smi_is_not_a_cpu_box(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A container started without --gpus all on a GPU box: say so, never fall back to CPU."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(gpus, "NVIDIA_DRIVER_MARKERS", (tmp_path,))  # exists: a driver
    with pytest.raises(GPUDiscoveryError, match="without --gpus all") as raised:
        asyncio.run(query_gpus(visible_devices=None))
    assert not isinstance(raised.value, gpus.NoNvidiaSmi)

"""A box without nvidia-smi (no NVIDIA GPUs): launches run on the CPU with vLLM's CPU build,
owning no GPU; asking for GPUs there is a clear 400."""

from __future__ import annotations

import os

import pytest

from tests.conftest import ServerFactory
from tests.harness import Server


@pytest.fixture
def cpu_box(start_server: ServerFactory) -> Server:
    # The stand-in vLLM stays on PYTHONPATH; the stand-in nvidia-smi leaves PATH.
    return start_server(PATH=os.environ["PATH"])


def test_launches_run_on_the_cpu_without_gpu_ownership(cpu_box: Server) -> None:
    first = cpu_box.launch_ready(model="org/cpu-model")
    second = cpu_box.launch_ready(model="org/other", gpu_ids=[])
    assert first["gpu_ids"] == second["gpu_ids"] == []
    assert "--tensor-parallel-size" not in first["command"]
    assert "(CUDA_VISIBLE_DEVICES=)" in cpu_box.logs(first["launch_id"])
    assert cpu_box.client.get("/gpus").json() == []
    assert "no nvidia-smi" in cpu_box.output()


def test_asking_for_gpus_on_a_cpu_box_is_a_400(cpu_box: Server) -> None:
    response = cpu_box.client.post("/launch", json={"model": "m", "gpu_ids": [0]})
    assert response.status_code == 400
    assert "no nvidia-smi" in response.json()["detail"]


def test_an_empty_gpu_list_on_a_gpu_box_is_a_400(server: Server) -> None:
    response = server.client.post("/launch", json={"model": "m", "gpu_ids": []})
    assert response.status_code == 400
    assert "runs on the CPU" in response.json()["detail"]

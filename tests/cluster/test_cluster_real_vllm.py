"""A real vLLM (its CPU build, the tiny generated model) on a worker box, launched, served
and stopped through the head: what the stand-in cannot prove about a launch on another box
(vLLM's own start-up there, its log mirrored to the head, its process tree ended there).

Needs the real-vLLM environment (`make real-vllm-env`; .ci/run builds it before this runs).
"""

from __future__ import annotations

import time

import openai
import pytest

from tests.cluster.conftest import KEY, BoxFactory
from tests.cluster.test_cluster_launches import joined, log_reaches_the_head
from tests.harness import eventually
from tests.real_vllm import build_env
from tests.real_vllm.test_real_vllm import SERVED_NAME, STARTUP_TIMEOUT, VLLM_FLAGS
from vllm_bootstrap.supervision.recovery import marked_processes

pytestmark = [pytest.mark.cluster, pytest.mark.real_vllm, pytest.mark.timeout(900)]


def test_a_real_vllm_on_a_worker_box_serves_v1_through_the_head(
    start_box: BoxFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not build_env.is_built():
        pytest.fail("the real-vLLM environment is not built: run `make real-vllm-env` first")
    real = build_env.server_env(tmp_path_factory.mktemp("real"), gpus=1, HF_HUB_OFFLINE="1")
    # Each box runs vLLM's CPU build from the same environment (the same image, on rented
    # boxes); the head decides the command, the worker's environment is vLLM's there.
    shared = {
        name: real[name]
        for name in (
            "PYTHONPATH",
            "VLLM_BOOTSTRAP_VLLM_PYTHON",
            "VLLM_CPU_KVCACHE_SPACE",
            "VLLM_CACHE_ROOT",
            "HF_HUB_OFFLINE",
        )
    }
    head = start_box(
        0, FAKE_GPU_COUNT="1", VLLM_STARTUP_TIMEOUT_SECONDS=str(STARTUP_TIMEOUT), **shared
    )
    worker = start_box(1, FAKE_GPU_COUNT="1", **shared)
    nodes = joined(head, 2)
    body = {
        "model": str(build_env.model_dir()),
        "node": nodes[worker.box.address],
        "extra_args": [*VLLM_FLAGS, "--served-model-name", SERVED_NAME],
    }
    launched = head.client.post("/launch", json=body)
    assert launched.status_code == 201, launched.text
    launch_id = launched.json()["launch_id"]
    started = time.monotonic()

    def ready() -> bool:
        status = head.client.get(f"/status/{launch_id}").json()
        log = head.client.get(f"/logs/{launch_id}").json()["content"][-3000:]
        assert status["state"] in ("bootstrapping", "ready"), log
        return bool(status["state"] == "ready")

    eventually(ready, timeout=STARTUP_TIMEOUT, message="the real vLLM never became ready")
    print(f"\nreal vLLM on a worker box: launch to ready in {time.monotonic() - started:.1f} s")
    status = head.client.get(f"/status/{launch_id}").json()
    assert (status["host"], status["served_models"]) == (worker.box.address, [SERVED_NAME])
    # vLLM's own start-up lines, written on the worker, read from the head.
    log_reaches_the_head(head, launch_id, "Application startup complete.")

    client = openai.OpenAI(base_url=f"{head.url}/v1", api_key=KEY, max_retries=0)
    answer = client.chat.completions.create(
        model=SERVED_NAME, messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert answer.choices[0].message.content is not None
    assert marked_processes(launch_id)  # vLLM and its EngineCore, on the worker

    stopped = head.client.post(f"/stop/{launch_id}", params={"wait": "true"}, timeout=120)
    assert stopped.json()["state"] == "stopped"
    assert marked_processes(launch_id) == []  # its whole process tree ended there

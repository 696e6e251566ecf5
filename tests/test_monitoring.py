"""Looking at the box: start-up progress in GET /status, GET /stats (host and GPUs, with and
without a working nvidia-smi) and GET /metrics, parsed back with prometheus_client."""

from __future__ import annotations

import os
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.batch_helpers import client_for, jsonl, submit, wait_for_batch
from tests.conftest import ServerFactory
from tests.harness import Server


def test_status_follows_the_start_up_phases_from_the_log(start_server: ServerFactory) -> None:
    server = start_server(FAKE_VLLM_LOAD_SECONDS="2.6")
    launch = server.launch(model="org/progress", gpu_ids=[0])
    seen: list[tuple[str, float | None]] = []
    while (status := server.status(launch["launch_id"]))["state"] != "ready":
        observed = (status["phase"], status["progress"])
        if not seen or seen[-1] != observed:
            seen.append(observed)
        time.sleep(0.02)
    assert status["phase"] == "ready"
    phases = [phase for phase, _ in seen]
    order = ["starting", "loading_weights", "compiling", "profiling", "capturing_graphs"]
    assert [phase for phase in order if phase in phases] == order
    assert phases == sorted(phases, key=lambda phase: [*order, "starting_server"].index(phase))
    fractions = [fraction for phase, fraction in seen if phase == "loading_weights" and fraction]
    assert 0.5 in fractions  # "Loading safetensors checkpoint shards:  50% Completed | 2/4"


def test_stats_show_the_host_and_each_gpu_with_its_owner(server: Server) -> None:
    launch = server.launch_ready(model="org/owner", gpu_ids=[1])
    stats = server.client.get("/stats").json()
    host = stats["host"]
    assert len(host["load_average"]) == 3
    assert host["cpu_count"] >= 1
    assert host["memory"]["total_bytes"] > host["memory"]["available_bytes"] > 0
    assert set(host["disks"]) == {"state", "logs", "model_cache"}
    assert host["disks"]["state"]["free_bytes"] > 0
    assert stats["error"] is None
    gpu0, gpu1 = stats["gpus"]
    assert gpu0["name"] == "NVIDIA H100 80GB HBM3"
    assert (gpu0["temperature_c"], gpu0["power_watts"], gpu0["launch_id"]) == (30.0, 70.25, None)
    assert gpu1["power_watts"] is None  # "[N/A]"
    assert gpu1["launch_id"] == launch["launch_id"]
    assert "nodes" not in stats  # a box alone: no cluster
    # GET /nodes on a box alone: this box, with the same readings.
    [alone] = server.client.get("/nodes").json()
    assert (alone["node_id"], alone["head"], alone["alive"]) == (None, True, True)
    assert [gpu["launch_id"] for gpu in alone["gpus"]] == [None, launch["launch_id"]]


def test_stats_answer_for_the_host_when_nvidia_smi_fails(start_server: ServerFactory) -> None:
    server = start_server(FAKE_NVIDIA_SMI_FAIL="1")
    stats = server.client.get("/stats").json()
    assert stats["gpus"] == []
    assert "couldn't communicate with the NVIDIA driver" in stats["error"]
    assert stats["host"]["cpu_count"] >= 1


def test_stats_on_a_box_without_nvidia_smi(start_server: ServerFactory) -> None:
    server = start_server(PATH=os.environ["PATH"])  # the stand-in nvidia-smi leaves PATH
    stats = server.client.get("/stats").json()
    assert stats["gpus"] == []
    assert "nvidia-smi is not installed" in stats["error"]
    assert stats["host"]["memory"]["total_bytes"] > 0
    assert (
        "vllm_bootstrap_gpu_memory_used_bytes"
        not in server.client.get("/metrics").text.split(
            "# TYPE vllm_bootstrap_gpu_memory_used_bytes gauge"
        )[-1]
    )


def _samples(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = server.client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_requests_refusals_batches_launches_and_gpus(server: Server) -> None:
    launch = server.launch_ready(
        model="org/metered", gpu_ids=[0], extra_args=["--served-model-name", "metered"]
    )
    body = {"model": "metered", "prompt": "hi", "max_tokens": 2}
    assert server.client.post("/v1/completions", json=body).status_code == 200
    proxied = server.client.post(f"/proxy/{launch['launch_id']}/v1/completions", json=body)
    assert proxied.status_code == 200
    missing = server.client.post("/v1/completions", json={**body, "model": "absent"})
    assert missing.status_code == 404
    client = client_for(server)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": body}
    batch = submit(client, jsonl([line, {**line, "custom_id": "b"}]), endpoint="/v1/completions")
    assert wait_for_batch(client, batch.id, timeout=30).status == "completed"

    samples = _samples(server)
    v1 = (("launch_id", launch["launch_id"]), ("model", "metered"), ("route", "v1"))
    assert samples[("vllm_bootstrap_requests_total", (*v1, ("status", "200")))] == 1
    proxy = (("launch_id", launch["launch_id"]), ("model", "org/metered"), ("route", "proxy"))
    assert samples[("vllm_bootstrap_requests_total", (*proxy, ("status", "200")))] == 1
    latency = (("launch_id", launch["launch_id"]), ("model", "metered"), ("route", "v1"))
    assert samples[("vllm_bootstrap_request_seconds_count", latency)] == 1
    # Batch lines go through the same forwarder, so they are counted too, as route "batch".
    lines = (("launch_id", launch["launch_id"]), ("model", "metered"), ("route", "batch"))
    assert samples[("vllm_bootstrap_requests_total", (*lines, ("status", "200")))] == 2
    refusal = (("code", "model_not_found"), ("route", "v1"))
    assert samples[("vllm_bootstrap_request_errors_total", refusal)] == 1
    assert samples[("vllm_bootstrap_batch_requests_total", (("outcome", "completed"),))] == 2
    assert samples[("vllm_bootstrap_launches", (("state", "ready"),))] == 1
    assert samples[("vllm_bootstrap_launch_startup_seconds_count", ())] == 1
    gpu = (("gpu", "0"), ("launch_id", launch["launch_id"]), ("name", "NVIDIA H100 80GB HBM3"))
    assert samples[("vllm_bootstrap_gpu_temperature_celsius", gpu)] == 30


def test_a_restarted_launch_starts_its_phases_again(start_server: ServerFactory) -> None:
    server = start_server(FAKE_VLLM_LOAD_SECONDS="2.6", FAKE_VLLM_CRASH_AFTER_SECONDS="0.3")
    launch = server.launch(
        model="crash-after-ready", gpu_ids=[0], restart="on-failure", restart_backoff_seconds=0.1
    )
    server.wait_for(launch["launch_id"], {"ready"})
    while (status := server.status(launch["launch_id"]))["restart_count"] == 0 or status[
        "state"
    ] != "bootstrapping":
        time.sleep(0.01)
    # The log still holds the first run's "Starting vLLM server on": it is not read again.
    assert status["phase"] in ("starting", "loading_weights")


def test_a_stopped_launchs_request_series_end_with_it(server: Server) -> None:
    launch = server.launch_ready(model="org/brief", gpu_ids=[0])
    body = {"model": "org/brief", "prompt": "hi", "max_tokens": 1}
    assert server.client.post("/v1/completions", json=body).status_code == 200
    requests = "vllm_bootstrap_requests_total"
    assert any(name == requests for name, _ in _samples(server))
    server.stop(launch["launch_id"])
    assert not any(name == requests for name, _ in _samples(server))

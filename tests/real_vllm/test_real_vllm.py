"""The control plane against a real vLLM: its CPU build serving a tiny generated model.

Run with `uv run pytest -m real_vllm` after `make real-vllm-env`. The stand-in nvidia-smi
still plays the GPUs (vLLM's CPU build ignores them); everything else is real: vLLM's own
start-up, log lines, process tree, HTTP server and shutdown.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.batch_helpers import client_for, jsonl, result_lines, submit, wait_for_batch
from tests.harness import Server, eventually
from tests.real_vllm import build_env
from vllm_bootstrap.supervision.processes import group_members

# Starting vLLM takes a minute or so on two cores: far above the fast suite's 120 s limit.
pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]

SERVED_NAME = "tiny-llama"
MAX_NUM_SEQS = 4
# With vLLM's priority scheduling: batch lines are sent with a priority after live ones'.
VLLM_FLAGS = [
    *("--dtype", "float32", "--max-model-len", "256", "--max-num-seqs", str(MAX_NUM_SEQS)),
    *("--scheduling-policy", "priority"),
]
STARTUP_TIMEOUT = 300
# A batch long enough to be running still when the live requests come (64 tokens a line).
YIELD_LINES = 300


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not build_env.is_built():
        pytest.fail(
            f"the real-vLLM environment is not built at {build_env.cache_root()}: "
            "run `make real-vllm-env` first"
        )
    workdir = tmp_path_factory.mktemp("real-vllm")
    env = build_env.server_env(
        workdir,
        gpus=2,
        VLLM_STARTUP_TIMEOUT_SECONDS=str(STARTUP_TIMEOUT),
        HF_HUB_OFFLINE="1",
        VLLM_BATCH_MODEL_WAIT_SECONDS="3",
        VLLM_BOOTSTRAP_BATCH_YIELD_CHECK_SECONDS="0.1",
    )
    server = Server(env, workdir / "server.log").start()
    yield server
    server.terminate(timeout=120)
    server.client.close()


def launch_tiny(
    server: Server,
    gpu: int,
    model: Path | None = None,
    flags: list[str] = VLLM_FLAGS,
    name: str = SERVED_NAME,
) -> dict:
    return server.launch(
        model=str(model or build_env.model_dir()),
        gpu_ids=[gpu],
        extra_args=[*flags, "--served-model-name", name],
    )


def wait_ready(server: Server, launch: dict) -> tuple[dict, float]:
    started = time.monotonic()
    ready = server.wait_for(launch["launch_id"], {"ready", "failed"}, timeout=STARTUP_TIMEOUT)
    assert ready["state"] == "ready", f"{ready}\n{server.logs(launch['launch_id'])[-3000:]}"
    return ready, time.monotonic() - started


@pytest.fixture(scope="module")
def ready_launch(real_server: Server) -> dict:
    launch = launch_tiny(real_server, gpu=0)
    assert launch["state"] == "bootstrapping"
    ready, seconds = wait_ready(real_server, launch)
    print(f"\nreal vLLM: launch to ready in {seconds:.1f} s")
    return ready


def test_bootstrapping_then_ready_with_vllms_own_log_lines(
    real_server: Server, ready_launch: dict
) -> None:
    assert ready_launch["served_models"] == [SERVED_NAME]
    logs = real_server.logs(ready_launch["launch_id"])
    assert "Starting vLLM server on http://127.0.0.1:" in logs
    assert "Application startup complete." in logs


@pytest.mark.parametrize("way_in", ["/proxy/{id}/v1", "/v1"])
def test_openai_client(real_server: Server, ready_launch: dict, way_in: str) -> None:
    base_url = real_server.url + way_in.replace("{id}", ready_launch["launch_id"])
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)

    chat = client.chat.completions.create(
        model=SERVED_NAME, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
    )
    assert chat.usage is not None
    assert chat.usage.completion_tokens > 0

    stream = client.chat.completions.create(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=8,
        stream=True,
    )
    chunks = [chunk for chunk in stream if chunk.choices]
    assert len(chunks) >= 2
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")

    completion = client.completions.create(model=SERVED_NAME, prompt="The quick", max_tokens=5)
    assert completion.choices[0].finish_reason in ("length", "stop")

    assert SERVED_NAME in [model.id for model in client.models.list()]


def test_a_scoped_keys_usage_and_priority_reach_real_vllm(
    real_server: Server, ready_launch: dict
) -> None:
    created = real_server.client.post("/keys", json={"name": "real-key", "priority": 2})
    assert created.status_code == 201, created.text
    client = openai.OpenAI(
        base_url=f"{real_server.url}/v1", api_key=created.json()["key"], max_retries=0, timeout=120
    )
    # Greedy, and never stopping early: each request generates the same 8 tokens.
    ask = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": "Hello!"}],
        "max_tokens": 8,
        "temperature": 0,
        "extra_body": {"ignore_eos": True},
    }
    plain = client.chat.completions.create(**ask)  # at the key's priority: vLLM took it
    assert plain.usage is not None
    quiet = list(client.chat.completions.create(**ask, stream=True))
    assert quiet
    assert all(chunk.choices for chunk in quiet)  # vLLM's usage chunk was taken out
    asked = list(
        client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True})
    )
    (usage_chunk,) = [chunk for chunk in asked if not chunk.choices]
    assert usage_chunk.usage == plain.usage

    def usage() -> dict:
        row = real_server.client.get("/usage", params={"key": "real-key", "group_by": "key"})
        (counted,) = row.json()["data"]
        return dict(counted)

    # A stream is counted once its exchange with vLLM has ended, which may be a moment after
    # the client read its last chunk.
    eventually(lambda: usage()["requests"] == 3, timeout=10, message="a request went uncounted")
    counted = usage()
    assert counted["prompt_tokens"] == 3 * plain.usage.prompt_tokens
    assert counted["completion_tokens"] == 3 * plain.usage.completion_tokens == 24


def test_a_batch_runs_through_real_vllm(real_server: Server, ready_launch: dict) -> None:
    client = client_for(real_server)
    lines = [
        {
            "custom_id": f"r{index}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": SERVED_NAME, "prompt": f"Count {index}:", "max_tokens": 4},
        }
        for index in range(12)
    ]
    lines.append({**lines[0], "custom_id": "unknown", "body": {"model": "nope", "prompt": "x"}})
    lines.append(
        {**lines[0], "custom_id": "too-long", "body": {**lines[0]["body"], "max_tokens": 9999}}
    )
    # vLLM takes the priority we add to each line, and a line's own priority over it.
    lines.append({**lines[0], "custom_id": "own", "body": {**lines[0]["body"], "priority": -1}})
    batch = submit(client, jsonl(lines), endpoint="/v1/completions")

    done = wait_for_batch(client, batch.id, timeout=300)

    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (13, 2)
    output = result_lines(client, done.output_file_id)
    expected = [*(f"r{i}" for i in range(12)), "own"]
    assert sorted(line["custom_id"] for line in output) == sorted(expected)
    # A random tiny model may stop at once: the answer's shape is what is checked.
    choices = [line["response"]["body"]["choices"][0] for line in output]
    assert all(choice["finish_reason"] in ("length", "stop") for choice in choices)
    assert all(isinstance(choice["text"], str) for choice in choices)
    errors = {line["custom_id"]: line for line in result_lines(client, done.error_file_id)}
    assert errors["unknown"]["error"]["code"] == "model_not_found"
    # vLLM's own 400 (longer than max-model-len) is kept as it answered.
    assert errors["too-long"]["response"]["status_code"] == 400
    assert "max" in json.dumps(errors["too-long"]["response"]["body"]).lower()


def test_missing_model_fails_with_vllms_message(real_server: Server, ready_launch: dict) -> None:
    launch = launch_tiny(real_server, gpu=1, model=Path("/nonexistent/tiny-model"))
    failed = real_server.wait_for(launch["launch_id"], {"failed", "ready"}, timeout=120)
    assert failed["state"] == "failed"
    assert failed["return_code"] not in (None, 0)
    assert any(name in failed["error"] for name in ("HFValidationError", "OSError"))
    assert "/nonexistent/tiny-model" in real_server.logs(launch["launch_id"])


def test_batch_lines_make_way_for_live_requests_on_a_first_come_first_served_vllm(
    real_server: Server, ready_launch: dict
) -> None:
    name = "tiny-fcfs"
    ready, _seconds = wait_ready(
        real_server, launch_tiny(real_server, gpu=1, flags=VLLM_FLAGS[:-2], name=name)
    )
    try:
        _batch_lines_make_way(real_server, name, ready["launch_id"])
    finally:
        real_server.stop(ready["launch_id"], wait=True)


def _batch_lines_make_way(real_server: Server, name: str, launch_id: str) -> None:
    client = client_for(real_server)
    lines = [
        {
            "custom_id": f"r{index}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {
                "model": name,
                "prompt": f"Story {index}:",
                "max_tokens": 64,
                "ignore_eos": True,  # a random tiny model may end at once otherwise
            },
        }
        for index in range(YIELD_LINES)
    ]
    batch = submit(client, jsonl(lines), endpoint="/v1/completions")

    live = openai.OpenAI(base_url=f"{real_server.url}/v1", api_key="unused", timeout=120)

    def lines_taken_back() -> float:
        """Batch lines given up (499) on the launch: taken back from vLLM's queue."""
        for line in real_server.client.get("/metrics").text.splitlines():
            if (
                line.startswith("vllm_bootstrap_requests_total{")
                and 'route="batch"' in line
                and f'launch_id="{launch_id}"' in line
                and 'status="499"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def batch_lines_beyond_what_vllm_runs() -> bool:
        """Batch lines are in flight on the launch well beyond the 4 vLLM runs at a time:
        under first come, first served, a live request now queues behind them. (One sent
        before keeps the batch's window narrow from the start: no line would need taking
        back.) Read from the control plane, at once: vLLM's own /metrics answer late while
        its API server takes in hundreds of lines, and this batch lasts only seconds."""
        return int(real_server.status(launch_id)["in_flight"]) > 2 * MAX_NUM_SEQS

    eventually(batch_lines_beyond_what_vllm_runs, timeout=120, message="no lines in flight")
    # Live requests until one found batch lines queued ahead of it (on two cores shared
    # with vLLM, a request can take seconds to arrive: one at a fixed moment may be late).
    # Each is sent before anything is read: /metrics asks nvidia-smi (the stand-in, a
    # Python program), which takes seconds while vLLM has both cores.
    while True:
        stream = live.completions.create(model=name, prompt="Live:", max_tokens=4, stream=True)
        assert [chunk for chunk in stream if chunk.choices]
        if lines_taken_back():
            break
        status = client.batches.retrieve(batch.id).status
        assert status in ("validating", "in_progress"), "no batch line made way"
    done = wait_for_batch(client, batch.id, timeout=600)
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (YIELD_LINES, 0)


def test_stop_ends_every_process_then_the_gpu_serves_again(
    real_server: Server, ready_launch: dict
) -> None:
    pgid = ready_launch["pid"]
    members = group_members(pgid)
    # The API server, EngineCore, its worker and helpers: all in one process group.
    assert len(members) >= 2, members
    started = time.monotonic()
    stopped = real_server.stop(ready_launch["launch_id"], wait=True)
    print(f"\nreal vLLM: stop took {time.monotonic() - started:.1f} s")
    assert stopped["state"] == "stopped"
    eventually(lambda: group_members(pgid) == [], timeout=10, message="processes left")

    again = launch_tiny(real_server, gpu=0)
    ready, seconds = wait_ready(real_server, again)
    print(f"\nreal vLLM: second launch to ready in {seconds:.1f} s")
    assert ready["gpu_ids"] == [0]
    real_server.stop(ready["launch_id"], wait=True)


def test_a_killed_control_plane_readopts_a_serving_vllm(real_server: Server) -> None:
    launch = launch_tiny(real_server, gpu=0)
    wait_ready(real_server, launch)
    real_server.kill()  # SIGKILL: vLLM runs on in its own session
    revived = Server(real_server.env, real_server.log_path).start()
    try:
        adopted = revived.status(launch["launch_id"])
        assert (adopted["state"], adopted["adopted"]) == ("ready", True)
        client = openai.OpenAI(
            base_url=f"{revived.url}/v1", api_key="unused", max_retries=0, timeout=120
        )
        completion = client.completions.create(model=SERVED_NAME, prompt="Hi", max_tokens=3)
        assert completion.choices[0].finish_reason in ("length", "stop")
        pgid = adopted["pid"]
        assert revived.stop(launch["launch_id"], wait=True)["state"] == "stopped"
        eventually(lambda: group_members(pgid) == [], timeout=10, message="processes left")
    finally:
        revived.terminate(timeout=120)
        revived.client.close()

"""On-demand loading of model profiles through /v1: cold starts, sharing, eviction, idle
unloading, the queue, and vLLM's sleep mode (with the stand-in vLLM and GPUs)."""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ServerFactory
from tests.harness import EVICTION_GRACE_SECONDS, Server, eventually


def _put(server: Server, name: str, **body: Any) -> None:
    body.setdefault("model", f"org/{name}")
    response = server.client.put(f"/models/{name}", json=body)
    assert response.status_code == 200, response.text


def _complete(server: Server, model: str, timeout: float = 60) -> httpx.Response:
    return server.client.post(
        "/v1/completions",
        json={"model": model, "prompt": "hi", "max_tokens": 2},
        timeout=timeout,
    )


def _profile_launches(server: Server, all: bool = False) -> list[dict[str, Any]]:
    launches = server.client.get("/launch", params={"all": all}).json()
    return [launch for launch in launches if launch["profile"] is not None]


def _listed(server: Server) -> dict[str, dict[str, Any]]:
    return {model["id"]: model for model in server.client.get("/v1/models").json()["data"]}


def _status(server: Server, name: str) -> dict[str, Any]:
    return server.client.get(f"/models/{name}").json()["status"]


def _past_the_eviction_grace() -> None:
    """A launch used within the grace is not evicted: this waits it out (a time, not a
    state to poll). The harness sets VLLM_BOOTSTRAP_EVICTION_GRACE_SECONDS."""
    time.sleep(float(EVICTION_GRACE_SECONDS) + 0.1)


def _stream_through_proxy(server: Server, launch: dict[str, Any], tokens: int) -> list[str]:
    """A completion streamed through /proxy/{id}: the text of each event, to the end."""
    texts = []
    body = {"model": launch["profile"], "prompt": "hi", "max_tokens": tokens, "stream": True}
    launch_id = launch["launch_id"]
    url = f"/proxy/{launch_id}/v1/completions"
    with server.client.stream("POST", url, json=body, timeout=60) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                texts.append(json.loads(line[6:])["choices"][0]["text"])
    return texts


def test_a_cold_request_loads_its_profile_and_gets_the_answer(server: Server) -> None:
    _put(server, "small")
    assert _status(server, "small")["state"] == "not loaded"
    response = _complete(server, "small")
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "small"
    [launch] = _profile_launches(server)
    assert launch["profile"] == "small"
    assert launch["reason"] == "a /v1 request"
    assert launch["served_models"] == ["small"]
    status = _status(server, "small")
    assert status["state"] == "loaded"
    assert status["launch_id"] == launch["launch_id"]
    assert status["last_request_at"] is not None
    assert "model small: loading on GPUs [0] (a /v1 request)" in server.output()


def test_fifty_concurrent_cold_requests_share_one_launch(start_server: ServerFactory) -> None:
    server = start_server(FAKE_VLLM_LOAD_SECONDS="2")
    _put(server, "shared")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)

    def ask(index: int) -> str:
        if index % 5 == 0:  # some stream: nothing arrives until the model is ready
            stream = client.completions.create(
                model="shared", prompt=f"p{index}", max_tokens=3, stream=True
            )
            return "".join(chunk.choices[0].text for chunk in stream)
        answer = client.completions.create(model="shared", prompt=f"p{index}", max_tokens=3)
        return answer.choices[0].text

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(ask, range(50)))
    assert answers == [" tok0 tok1 tok2"] * 50
    assert len(_profile_launches(server, all=True)) == 1


def test_the_idle_least_recently_used_launch_is_evicted(start_server: ServerFactory) -> None:
    server = start_server(FAKE_GPU_COUNT="2")
    for name in ("first", "second", "third"):
        _put(server, name)
    assert _complete(server, "first").status_code == 200
    assert _complete(server, "second").status_code == 200
    _past_the_eviction_grace()
    assert _complete(server, "first").status_code == 200  # "second" is now the LRU
    _past_the_eviction_grace()
    third = _complete(server, "third")
    assert third.status_code == 200, f"{third.text}\n{server.output()[-3000:]}"
    live = {launch["profile"]: launch for launch in _profile_launches(server)}
    assert set(live) == {"first", "third"}
    assert live["third"]["gpu_ids"] == [1]  # the GPU "second" had
    assert "model second: evicting launch" in server.output()


def test_a_launch_with_requests_in_flight_is_not_evicted(start_server: ServerFactory) -> None:
    server = start_server(FAKE_GPU_COUNT="2")
    _put(server, "busy", env={"FAKE_VLLM_LATENCY_SECONDS": "4"})
    _put(server, "idle")
    _put(server, "newcomer")
    assert _complete(server, "busy").status_code == 200  # busy is the least recently used
    assert _complete(server, "idle").status_code == 200
    _past_the_eviction_grace()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        long_request = pool.submit(_complete, server, "busy")
        eventually(lambda: _status(server, "busy")["in_flight"] == 1)
        assert _complete(server, "newcomer").status_code == 200
        assert long_request.result().status_code == 200
    assert {launch["profile"] for launch in _profile_launches(server)} == {"busy", "newcomer"}


def test_a_pinned_launch_is_never_evicted(start_server: ServerFactory) -> None:
    server = start_server(FAKE_GPU_COUNT="2")
    _put(server, "pinned", pinned=True)
    _put(server, "other")
    _put(server, "newcomer")
    assert _complete(server, "pinned").status_code == 200  # the least recently used
    assert _complete(server, "other").status_code == 200
    _past_the_eviction_grace()
    assert _complete(server, "newcomer").status_code == 200
    assert {launch["profile"] for launch in _profile_launches(server)} == {"pinned", "newcomer"}


def test_requests_queue_behind_a_hand_launch_and_a_full_queue_answers_429(
    start_server: ServerFactory,
) -> None:
    server = start_server(FAKE_GPU_COUNT="1", VLLM_BOOTSTRAP_MODEL_QUEUE_LIMIT="2")
    hand = server.launch_ready(model="org/by-hand", gpu_ids=[0])
    _put(server, "queued")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(_complete, server, "queued") for _ in range(2)]
        eventually(lambda: _status(server, "queued")["state"] == "queued")
        eventually(lambda: _status(server, "queued")["waiting"] == 2)  # both in the queue
        refused = _complete(server, "queued")
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "10"
        assert refused.json()["error"]["code"] == "model_queue_full"
        assert not any(future.done() for future in waiting)
        server.stop(hand["launch_id"])  # never evicted: it goes when its owner stops it
        assert [future.result().status_code for future in waiting] == [200, 200]
    assert server.status(hand["launch_id"])["state"] == "stopped"


def test_a_request_that_waits_past_the_limit_gets_503(start_server: ServerFactory) -> None:
    server = start_server(FAKE_GPU_COUNT="1", VLLM_BATCH_MODEL_WAIT_SECONDS="1")
    server.launch_ready(model="org/by-hand", gpu_ids=[0])
    _put(server, "late")
    response = _complete(server, "late")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "10"
    assert response.json()["error"]["code"] == "model_loading"
    assert "did not load within 1 s" in response.json()["error"]["message"]


def test_a_request_held_past_the_load_hold_gets_503_while_the_load_goes_on(
    start_server: ServerFactory,
) -> None:
    # A front proxy cuts a silent connection after 100 s: a request is answered before.
    server = start_server(VLLM_BOOTSTRAP_LOAD_HOLD_SECONDS="0.3", FAKE_VLLM_LOAD_SECONDS="3")
    _put(server, "slow")
    response = _complete(server, "slow")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "10"
    assert response.json()["error"]["code"] == "model_loading"
    assert "the load goes on" in response.json()["error"]["message"]
    eventually(  # nobody waited, and it loaded all the same
        lambda: server.client.get("/models/slow").json()["status"]["state"] == "loaded",
        timeout=20,
    )
    assert _complete(server, "slow").status_code == 200


def test_a_stream_waiting_for_its_load_gets_its_head_and_comments_then_the_stream(
    start_server: ServerFactory,
) -> None:
    server = start_server(
        VLLM_BOOTSTRAP_LOAD_HOLD_SECONDS="0.3",
        VLLM_BOOTSTRAP_LOAD_KEEPALIVE_SECONDS="0.2",
        FAKE_VLLM_LOAD_SECONDS="1.5",
    )
    _put(server, "streamed")
    body = {"model": "streamed", "prompt": "x", "max_tokens": 2, "stream": True}
    with server.client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200  # at once, before the model is loaded
        lines = [line for line in response.iter_lines() if line]
    comments = [line for line in lines if line.startswith(":")]
    assert comments
    assert comments[0].startswith(": loading streamed, ")
    assert lines[-1] == "data: [DONE]"
    assert len([line for line in lines if line.startswith("data: {")]) == 2
    # The official client reads such a stream as any other.
    _put(server, "streamed-too")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    chunks = list(
        client.completions.create(model="streamed-too", prompt="x", max_tokens=2, stream=True)
    )
    assert len(chunks) == 2


def test_a_stream_whose_load_fails_ends_with_one_error_event(start_server: ServerFactory) -> None:
    server = start_server(VLLM_BOOTSTRAP_LOAD_KEEPALIVE_SECONDS="0.2")
    _put(server, "doomed", model="crash-on-start")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    stream = client.completions.create(model="doomed", prompt="x", max_tokens=2, stream=True)
    with pytest.raises(openai.APIError, match="could not be loaded"):
        list(stream)


def test_a_profile_that_fails_to_load_says_why(server: Server) -> None:
    _put(server, "broken", model="crash-on-start")
    response = _complete(server, "broken")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_load_failed"
    assert "stand-in crash during start-up" in error["message"]
    again = _complete(server, "broken")  # told at once, without starting vLLM again
    assert again.json()["error"]["code"] == "model_load_failed"
    assert len(_profile_launches(server, all=True)) == 1
    assert "stand-in crash" in _status(server, "broken")["last_error"]


def test_an_idle_profile_launch_is_stopped_after_its_ttl(server: Server) -> None:
    _put(server, "brief", idle_ttl_seconds=1.5)
    assert _complete(server, "brief").status_code == 200
    [launch] = _profile_launches(server)
    final = server.wait_for(launch["launch_id"], {"stopped"}, timeout=20)
    assert final["state"] == "stopped"
    assert _status(server, "brief")["state"] == "not loaded"
    assert "past its profile's idle_ttl_seconds" in server.output()


def test_models_list_loaded_and_loadable_profiles(server: Server) -> None:
    _put(server, "cold")
    _put(server, "warm")
    assert _complete(server, "warm").status_code == 200
    models = server.client.get("/v1/models").json()["data"]
    by_id = {model["id"]: model for model in models}
    assert by_id["warm"]["loaded"] is True
    assert by_id["cold"]["loaded"] is False
    assert by_id["cold"]["state"] == "not loaded"
    assert by_id["cold"]["root"] == "org/cold"


def test_explicit_load_and_unload(server: Server) -> None:
    _put(server, "manual")
    loaded = server.client.post("/models/manual/load", params={"wait": True}, timeout=30)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["status"]["state"] == "loaded"
    assert loaded.json()["status"]["reason"] == "an explicit load"
    unloaded = server.client.post("/models/manual/unload", params={"wait": True}, timeout=30)
    assert unloaded.json()["status"]["state"] == "not loaded"
    assert server.client.post("/models/nothing/load").status_code == 404


def test_sleep_and_wake_keep_the_process_and_port(start_server: ServerFactory) -> None:
    server = start_server(FAKE_GPU_COUNT="1")
    _put(server, "sleeper", sleep=True)
    _put(server, "other")
    assert _complete(server, "sleeper").status_code == 200
    [before] = _profile_launches(server)
    _past_the_eviction_grace()
    assert _complete(server, "other").status_code == 200  # takes GPU 0: sleeper sleeps
    asleep = server.status(before["launch_id"])
    assert asleep["state"] == "sleeping"
    assert (asleep["pid"], asleep["port"]) == (before["pid"], before["port"])
    vllm = f"http://127.0.0.1:{before['port']}"
    assert httpx.get(f"{vllm}/is_sleeping").json() == {"is_sleeping": True}
    refused = server.client.get(f"/proxy/{before['launch_id']}/is_sleeping")
    assert refused.status_code == 409
    assert "POST /models/sleeper/load" in refused.json()["detail"]
    gpus = server.client.get("/gpus").json()
    assert gpus[0]["launch_id"] != before["launch_id"]  # held softly: another launch has it
    _past_the_eviction_grace()
    assert _complete(server, "sleeper").status_code == 200  # evicts "other", wakes sleeper
    awake = server.status(before["launch_id"])
    assert awake["state"] == "ready"
    assert (awake["pid"], awake["port"]) == (before["pid"], before["port"])
    stats = server.client.get(f"/proxy/{before['launch_id']}/debug/stats").json()
    assert (stats["sleeps"], stats["wakes"]) == (1, 1)
    assert {launch["profile"] for launch in _profile_launches(server)} == {"sleeper"}
    assert "woke in" in server.output()


def test_restart_keeps_profiles_and_readopts_launches_with_their_idle_clock(
    start_server: ServerFactory,
) -> None:
    first = start_server(VLLM_BOOTSTRAP_DETACH_ON_EXIT="1")
    _put(first, "kept", idle_ttl_seconds=5)
    assert _complete(first, "kept").status_code == 200
    [launch] = _profile_launches(first)
    used_at = first.status(launch["launch_id"])["last_request_at"]
    first.terminate()
    second = start_server(env=first.env)
    readopted = second.status(launch["launch_id"])
    assert readopted["state"] == "ready"
    assert readopted["last_request_at"] == used_at
    assert second.client.get("/models/kept").json()["idle_ttl_seconds"] == 5
    final = second.wait_for(launch["launch_id"], {"stopped"}, timeout=20)
    assert final["state"] == "stopped"
    assert "past its profile's idle_ttl_seconds" in second.output()


def test_a_batch_runs_profiles_that_do_not_fit_model_by_model(
    start_server: ServerFactory,
) -> None:
    server = start_server(FAKE_GPU_COUNT="1")
    _put(server, "alpha")
    _put(server, "beta")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    lines = [
        {
            "custom_id": f"r{index}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": ("alpha", "beta")[index % 2], "prompt": f"p{index}", "max_tokens": 2},
        }
        for index in range(40)
    ]
    uploaded = client.files.create(
        file=("in.jsonl", "\n".join(json.dumps(line) for line in lines).encode()),
        purpose="batch",
    )
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h"
    )
    eventually(
        lambda: client.batches.retrieve(batch.id).status in ("completed", "failed"), timeout=60
    )
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts.completed == 40
    launches = _profile_launches(server, all=True)
    assert sorted(launch["profile"] for launch in launches) == ["alpha", "beta"]  # no thrash
    assert "do not fit on the GPUs together; running them one by one" in server.output()


def test_a_preload_profile_loads_at_start_up(start_server: ServerFactory, tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - name: early\n    model: org/early\n    preload: true\n")
    server = start_server(VLLM_BOOTSTRAP_MODELS_FILE=str(models))
    eventually(lambda: _status(server, "early")["state"] == "loaded", timeout=20)
    assert _status(server, "early")["reason"] == "preload"


def test_a_wake_cut_off_by_a_killed_control_plane_is_finished_after_restart(
    start_server: ServerFactory,
) -> None:
    first = start_server(FAKE_GPU_COUNT="1", FAKE_VLLM_WAKE_SECONDS="3")
    _put(first, "sleeper", sleep=True)
    _put(first, "other")
    assert _complete(first, "sleeper").status_code == 200
    [sleeper] = _profile_launches(first)
    _past_the_eviction_grace()
    assert _complete(first, "other").status_code == 200
    _past_the_eviction_grace()
    first.client.post("/models/other/unload", params={"wait": True})
    first.client.post("/models/sleeper/load")  # wakes, for 3 s
    first.wait_for(sleeper["launch_id"], {"waking"})
    first.kill()
    second = start_server(env=first.env)
    assert second.status(sleeper["launch_id"])["adopted"] is True
    awake = second.wait_for(sleeper["launch_id"], {"ready"}, timeout=20)
    assert awake["pid"] == sleeper["pid"]
    assert "woke in" in second.output()  # the new control plane finished the wake
    assert _complete(second, "sleeper").status_code == 200


def test_a_sleeper_stopped_while_its_wake_waited_starts_afresh(
    start_server: ServerFactory,
) -> None:
    server = start_server(FAKE_GPU_COUNT="1")
    _put(server, "sleeper", sleep=True)
    _put(server, "other", env={"FAKE_VLLM_LATENCY_SECONDS": "3"})
    assert _complete(server, "sleeper").status_code == 200
    _past_the_eviction_grace()
    assert _complete(server, "other").status_code == 200
    _past_the_eviction_grace()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        busy = pool.submit(_complete, server, "other")  # "other" cannot be evicted for 3 s
        eventually(lambda: _status(server, "other")["in_flight"] == 1)
        waking = pool.submit(_complete, server, "sleeper")
        eventually(lambda: _status(server, "sleeper")["state"] == "queued")
        unloaded = server.client.post("/models/sleeper/unload", params={"wait": True})
        assert unloaded.json()["status"]["state"] == "queued"  # stopped; the load waits on
        assert busy.result().status_code == 200
        answer = waking.result()
    assert answer.status_code == 200, answer.text
    profiles = [launch["profile"] for launch in _profile_launches(server, all=True)]
    assert sorted(profiles) == ["other", "sleeper", "sleeper"]  # a fresh sleeper launch


def test_a_load_that_cannot_be_placed_does_not_hold_up_one_that_fits(
    start_server: ServerFactory,
) -> None:
    server = start_server(FAKE_GPU_COUNT="2", VLLM_BATCH_MODEL_WAIT_SECONDS="3")
    server.launch_ready(model="org/by-hand", gpu_ids=[0])
    _put(server, "stuck", gpu_ids=[0])
    _put(server, "fits")
    server.client.post("/models/stuck/load")
    eventually(lambda: _status(server, "stuck")["state"] == "queued")
    assert _complete(server, "fits").status_code == 200  # on GPU 1, past the queue's head
    eventually(lambda: _status(server, "stuck")["last_error"] is not None, timeout=10)
    error = _status(server, "stuck")["last_error"]
    assert "for GPUs; they are held by" in error
    assert "started by hand" in error
    assert _status(server, "stuck")["state"] == "not loaded"


def test_a_sleeper_whose_gpu_a_hand_launch_took_starts_afresh_elsewhere(
    start_server: ServerFactory,
) -> None:
    server = start_server(FAKE_GPU_COUNT="2")
    _put(server, "sleeper", sleep=True)
    assert _complete(server, "sleeper").status_code == 200
    [before] = _profile_launches(server)
    server.client.post("/models/sleeper/unload", params={"wait": True})
    assert server.status(before["launch_id"])["state"] == "sleeping"
    server.launch_ready(model="org/by-hand", gpu_ids=before["gpu_ids"])
    assert _complete(server, "sleeper").status_code == 200
    assert server.status(before["launch_id"])["state"] == "stopped"
    [after] = _profile_launches(server)
    assert after["gpu_ids"] != before["gpu_ids"]
    assert "never evicted" in server.output()


def test_gpus_stay_held_until_vllm_has_fallen_asleep(start_server: ServerFactory) -> None:
    server = start_server(FAKE_GPU_COUNT="1")
    _put(server, "sleeper", sleep=True, env={"FAKE_VLLM_SLEEP_SECONDS": "3"})
    assert _complete(server, "sleeper").status_code == 200
    [launch] = _profile_launches(server)
    server.client.post("/models/sleeper/unload")
    eventually(lambda: _listed(server)["sleeper"]["loaded"] is False)  # no longer routed to
    # vLLM is still falling asleep: a state of its own, routed to by nobody, GPUs still held
    assert server.status(launch["launch_id"])["state"] == "falling_asleep"
    refused = server.client.get(f"/proxy/{launch['launch_id']}/v1/models")
    assert refused.status_code == 409, refused.text
    assert server.client.get("/gpus").json()[0]["launch_id"] == launch["launch_id"]
    refused = server.client.post("/launch", json={"model": "org/by-hand", "gpu_ids": [0]})
    assert refused.status_code == 409, refused.text
    server.wait_for(launch["launch_id"], {"sleeping"}, timeout=10)
    assert server.client.get("/gpus").json()[0]["launch_id"] is None


def test_an_idle_sleep_profile_falls_asleep_after_its_ttl(server: Server) -> None:
    _put(server, "napper", sleep=True, idle_ttl_seconds=1.5)
    assert _complete(server, "napper").status_code == 200
    [launch] = _profile_launches(server)
    server.wait_for(launch["launch_id"], {"sleeping"}, timeout=20)
    assert _status(server, "napper")["state"] == "sleeping"
    assert _complete(server, "napper").status_code == 200  # woken by the next request
    assert server.status(launch["launch_id"])["state"] == "ready"


def test_the_proxy_refuses_sleep_routes_of_profile_launches(server: Server) -> None:
    _put(server, "guarded", sleep=True)
    assert _complete(server, "guarded").status_code == 200
    [launch] = _profile_launches(server)
    for path in ("sleep", "wake_up", "sleep/", "%73leep?level=1", "collective_rpc"):
        refused = server.client.post(f"/proxy/{launch['launch_id']}/{path}")
        assert refused.status_code == 403, (path, refused.text)
    assert server.client.get(f"/proxy/{launch['launch_id']}/is_sleeping").json() == {
        "is_sleeping": False
    }


def test_a_batch_for_a_profile_that_cannot_be_placed_fails_after_the_wait(
    start_server: ServerFactory,
) -> None:
    server = start_server(FAKE_GPU_COUNT="1", VLLM_BATCH_MODEL_WAIT_SECONDS="2")
    server.launch_ready(model="org/by-hand", gpu_ids=[0])
    _put(server, "blocked")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    line = {
        "custom_id": "r",
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": "blocked", "prompt": "p", "max_tokens": 2},
    }
    uploaded = client.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h"
    )
    eventually(lambda: client.batches.retrieve(batch.id).status == "completed", timeout=30)
    errors = client.files.content(client.batches.retrieve(batch.id).error_file_id).text
    assert json.loads(errors)["error"]["code"] == "model_not_found"


def test_a_client_that_leaves_gives_its_place_in_the_queue_back(
    start_server: ServerFactory,
) -> None:
    server = start_server(FAKE_GPU_COUNT="1", VLLM_BOOTSTRAP_MODEL_QUEUE_LIMIT="1")
    server.launch_ready(model="org/by-hand", gpu_ids=[0])
    _put(server, "queued")
    with pytest.raises(httpx.TimeoutException):
        _complete(server, "queued", timeout=1)
    eventually(lambda: _status(server, "queued")["waiting"] == 0)
    assert _held_body_bytes(server) == 0  # and its body's share of the bound
    with pytest.raises(httpx.TimeoutException):  # waits in the freed place: not a 429
        _complete(server, "queued", timeout=1)


def test_a_killed_control_plane_readopts_a_profile_launch_and_its_ttl_still_applies(
    start_server: ServerFactory,
) -> None:
    first = start_server()
    _put(first, "kept", idle_ttl_seconds=4)
    assert _complete(first, "kept").status_code == 200
    [launch] = _profile_launches(first)
    first.kill()
    second = start_server(env=first.env)
    assert second.status(launch["launch_id"])["adopted"] is True
    final = second.wait_for(launch["launch_id"], {"stopped"}, timeout=20)
    assert final["state"] == "stopped"


def test_a_stream_through_the_proxy_keeps_its_launch_from_the_idle_ttl(
    server: Server,
) -> None:
    _put(server, "streamer", idle_ttl_seconds=1, env={"FAKE_VLLM_TOKEN_DELAY_SECONDS": "0.5"})
    assert server.client.post("/models/streamer/load", params={"wait": True}).status_code == 200
    [launch] = _profile_launches(server)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stream = pool.submit(_stream_through_proxy, server, launch, 8)  # 4 s
        eventually(lambda: server.status(launch["launch_id"])["in_flight"] == 1)
        assert len(stream.result()) == 8  # whole, past the 1 s TTL
    assert server.status(launch["launch_id"])["state"] == "ready"
    # Once the stream ended, the TTL applies again.
    server.wait_for(launch["launch_id"], {"stopped"}, timeout=10)
    assert "past its profile's idle_ttl_seconds" in server.output()


def test_a_stream_through_the_proxy_keeps_its_launch_from_eviction(
    start_server: ServerFactory,
) -> None:
    server = start_server(FAKE_GPU_COUNT="1")
    _put(server, "streamer", env={"FAKE_VLLM_TOKEN_DELAY_SECONDS": "0.5"})
    _put(server, "newcomer")
    assert server.client.post("/models/streamer/load", params={"wait": True}).status_code == 200
    [launch] = _profile_launches(server)
    _past_the_eviction_grace()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stream = pool.submit(_stream_through_proxy, server, launch, 8)  # 4 s
        eventually(lambda: server.status(launch["launch_id"])["in_flight"] == 1)
        newcomer = pool.submit(_complete, server, "newcomer")
        eventually(lambda: _status(server, "newcomer")["state"] == "queued")
        assert len(stream.result()) == 8  # whole: the newcomer waited for it
        assert newcomer.result().status_code == 200  # then the streamer was evicted
    assert server.status(launch["launch_id"])["state"] == "stopped"
    assert "model streamer: evicting launch" in server.output()


def test_a_profile_deleted_while_its_load_waits_for_gpus_gives_up_at_once(
    start_server: ServerFactory,
) -> None:
    server = start_server(FAKE_GPU_COUNT="1", VLLM_BATCH_MODEL_WAIT_SECONDS="60")
    server.launch_ready(model="org/by-hand", gpu_ids=[0])  # never evicted: the load must wait
    _put(server, "doomed")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_complete, server, "doomed")
        eventually(lambda: _status(server, "doomed")["state"] == "queued")
        started = time.monotonic()
        assert server.client.delete("/models/doomed").status_code == 200
        answer = waiting.result()
    assert time.monotonic() - started < 10  # not the 60 s wait limit
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "model_load_failed"
    assert "was deleted while it waited for GPUs" in answer.json()["error"]["message"]


def test_two_cold_profiles_loading_at_once_both_load(start_server: ServerFactory) -> None:
    """The second load does not plan onto the GPU the first is being admitted on."""
    server = start_server(FAKE_GPU_COUNT="2")
    for name in ("left", "right"):
        _put(server, name)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda name: _complete(server, name), ["left", "right"]))
    assert [answer.status_code for answer in answers] == [200, 200], answers[1].text
    gpus = sorted(gpu for launch in _profile_launches(server) for gpu in launch["gpu_ids"])
    assert gpus == [0, 1]


def test_a_victim_stopped_while_it_falls_asleep_is_waited_for(
    start_server: ServerFactory,
) -> None:
    server = start_server(FAKE_GPU_COUNT="1")
    _put(
        server,
        "sleeper",
        model="org/ignore-sigterm",
        sleep=True,
        env={"FAKE_VLLM_SLEEP_SECONDS": "2"},
    )
    _put(server, "other")
    assert _complete(server, "sleeper").status_code == 200
    [victim] = _profile_launches(server)
    _past_the_eviction_grace()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        newcomer = pool.submit(_complete, server, "other")
        server.wait_for(victim["launch_id"], {"falling_asleep"})
        server.client.post(f"/stop/{victim['launch_id']}")  # the sleep's last move now fails
        answer = newcomer.result()
    assert answer.status_code == 200, answer.text  # it planned again once the GPU was free
    assert server.status(victim["launch_id"])["state"] == "stopped"


def test_a_fall_asleep_cut_off_by_a_killed_control_plane_is_finished_after_restart(
    start_server: ServerFactory,
) -> None:
    first = start_server(FAKE_GPU_COUNT="1")
    _put(first, "sleeper", sleep=True, env={"FAKE_VLLM_SLEEP_SECONDS": "3"})
    assert _complete(first, "sleeper").status_code == 200
    [launch] = _profile_launches(first)
    first.client.post("/models/sleeper/unload")
    first.wait_for(launch["launch_id"], {"falling_asleep"})
    first.kill()
    second = start_server(env=first.env)
    asleep = second.wait_for(launch["launch_id"], {"sleeping"}, timeout=20)
    assert asleep["pid"] == launch["pid"]
    assert _complete(second, "sleeper").status_code == 200  # woken
    assert second.status(launch["launch_id"])["state"] == "ready"


def test_a_ready_launch_found_asleep_after_a_restart_is_recorded_asleep(
    start_server: ServerFactory,
) -> None:
    first = start_server(FAKE_GPU_COUNT="1")
    _put(first, "sleeper", sleep=True)
    assert _complete(first, "sleeper").status_code == 200
    [launch] = _profile_launches(first)
    first.kill()  # as if it died between vLLM's /sleep answer and writing the state down
    asleep = httpx.post(f"http://127.0.0.1:{launch['port']}/sleep?level=1")
    assert asleep.status_code == 200
    second = start_server(env=first.env)
    second.wait_for(launch["launch_id"], {"sleeping"}, timeout=20)
    assert "found asleep after a restart" in second.output()
    assert _complete(second, "sleeper").status_code == 200  # woken by the next request
    assert second.status(launch["launch_id"])["state"] == "ready"


def _held_body_bytes(server: Server) -> float:
    metrics = server.client.get("/metrics").text
    match = re.search(r"^vllm_bootstrap_held_body_bytes (\S+)$", metrics, re.MULTILINE)
    assert match is not None, "no held-bodies gauge in /metrics"
    return float(match.group(1))


def test_bodies_held_for_a_load_are_bounded_together(start_server: ServerFactory) -> None:
    mib = 1024 * 1024
    server = start_server(
        FAKE_GPU_COUNT="1",
        VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES=str(2 * mib),
        VLLM_BOOTSTRAP_MAX_HELD_BODY_BYTES=str(3 * mib),
    )
    hand = server.launch_ready(model="org/by-hand", gpu_ids=[0])  # the load must wait
    _put(server, "heavy")
    body = {"model": "heavy", "prompt": "x" * (1200 * 1024), "max_tokens": 2}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        waiting = [
            pool.submit(server.client.post, "/v1/completions", json=body, timeout=60)
            for _ in range(2)
        ]
        eventually(lambda: _held_body_bytes(server) >= 2 * 1200 * 1024)
        # A third body of known length is refused before it is read ...
        refused = server.client.post("/v1/completions", json=body)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "10"
        error = refused.json()["error"]
        assert error["code"] == "server_busy"
        assert "VLLM_BOOTSTRAP_MAX_HELD_BODY_BYTES" in error["message"]
        # ... and one sent in chunks, without a length, as soon as its bytes pass the bound.
        chunks = (json.dumps(body).encode()[i : i + 65536] for i in range(0, 1_300_000, 65536))
        chunked = server.client.post("/v1/completions", content=chunks)
        assert chunked.status_code == 503, chunked.text
        assert chunked.json()["error"]["code"] == "server_busy"
        assert not any(future.done() for future in waiting)
        server.stop(hand["launch_id"])
        assert [future.result().status_code for future in waiting] == [200, 200]
    assert _held_body_bytes(server) == 0
    assert _complete(server, "heavy").status_code == 200

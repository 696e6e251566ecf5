"""/v1 at the root: one OpenAI-compatible endpoint that routes by model, and the official
`openai` client against it and against /proxy/{id}/v1."""

from __future__ import annotations

import json
import threading
from collections import Counter

import httpx
import openai
import pytest

from tests.conftest import ServerFactory
from tests.harness import Server, eventually

KEY = "openai-key"


@pytest.fixture
def two_models(start_server: ServerFactory) -> tuple[Server, dict, dict]:
    server = start_server(FAKE_GPU_COUNT="3", VLLM_ACCESS_KEY=KEY)
    alpha = server.launch(model="org/alpha", gpu_ids=[0])
    beta = server.launch(
        model="/models/beta", gpu_ids=[1], extra_args=["--served-model-name", "beta"]
    )
    return (
        server,
        server.wait_for(alpha["launch_id"], {"ready"}),
        server.wait_for(beta["launch_id"], {"ready"}),
    )


def test_models_lists_each_ready_model_once(two_models: tuple[Server, dict, dict]) -> None:
    server, _, _ = two_models
    server.launch_ready(model="org/alpha", gpu_ids=[2])  # a second replica
    listing = server.client.get("/v1/models").json()
    assert [model["id"] for model in listing["data"]] == ["beta", "org/alpha"]
    assert {model["id"]: model["replicas"] for model in listing["data"]} == {
        "beta": 1,
        "org/alpha": 2,
    }


def test_requests_go_to_the_launch_serving_the_model(
    two_models: tuple[Server, dict, dict],
) -> None:
    server, alpha, beta = two_models
    for model, launch in (("org/alpha", alpha), ("beta", beta)):
        response = server.client.post(
            "/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 2}
        )
        assert response.status_code == 200
        assert response.json()["model"] == model
        assert response.headers["x-vllm-bootstrap-launch-id"] == launch["launch_id"]


def test_unknown_model_is_openai_404(two_models: tuple[Server, dict, dict]) -> None:
    server, _, _ = two_models
    response = server.client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": []})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert "beta, org/alpha" in error["message"]


def test_missing_model_is_400(two_models: tuple[Server, dict, dict]) -> None:
    server, _, _ = two_models
    bodies = [
        json.dumps({"prompt": "x"}).encode(),
        json.dumps({"model": 3}).encode(),
        json.dumps(["model", "m"]).encode(),
        b"not json",
        b"[" * 100_000,  # nested too deep for the JSON parser's recursion
    ]
    for body in bodies:
        response = server.client.post("/v1/completions", content=body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "missing_model"


def test_loading_model_is_503_with_retry_after(start_server: ServerFactory) -> None:
    server = start_server(FAKE_VLLM_LOAD_SECONDS="30")
    server.launch(model="slow", gpu_ids=[0])
    response = server.client.post("/v1/completions", json={"model": "slow", "prompt": "x"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "10"
    assert response.json()["error"]["code"] == "model_loading"


def test_a_model_waiting_out_a_restart_backoff_is_loading(start_server: ServerFactory) -> None:
    server = start_server()
    launch = server.launch(
        model="m-crash-on-start", gpu_ids=[0], restart="on-failure", restart_backoff_seconds=60
    )
    server.wait_for(launch["launch_id"], {"restarting"})
    response = server.client.post("/v1/completions", json={"model": "m-crash-on-start"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_loading"


def test_replicas_share_sequential_requests(start_server: ServerFactory) -> None:
    server = start_server()
    first = server.launch(model="m", gpu_ids=[0])
    second = server.launch(model="m", gpu_ids=[1])
    server.wait_for(first["launch_id"], {"ready"})
    server.wait_for(second["launch_id"], {"ready"})
    served = Counter(
        server.client.post("/v1/completions", json={"model": "m", "max_tokens": 1}).headers[
            "x-vllm-bootstrap-launch-id"
        ]
        for _ in range(10)
    )
    assert served == {first["launch_id"]: 5, second["launch_id"]: 5}


def test_replicas_share_by_least_outstanding_requests(start_server: ServerFactory) -> None:
    server = start_server(FAKE_VLLM_TOKEN_DELAY_SECONDS="0.05")
    first = server.launch(model="m", gpu_ids=[0])
    second = server.launch(model="m", gpu_ids=[1])
    server.wait_for(first["launch_id"], {"ready"})
    server.wait_for(second["launch_id"], {"ready"})
    body = {"model": "m", "prompt": "x", "stream": True, "max_tokens": 40}
    served: list[str] = []
    streams_open = threading.Barrier(5)

    def long_request() -> None:
        with (
            httpx.Client(base_url=server.url, timeout=30) as client,
            client.stream("POST", "/v1/completions", json=body) as response,
        ):
            served.append(response.headers["x-vllm-bootstrap-launch-id"])
            streams_open.wait()
            response.read()

    threads = []
    for _ in range(4):  # one at a time, so each choice sees the ones before it in flight
        thread = threading.Thread(target=long_request)
        thread.start()
        threads.append(thread)
        eventually(lambda: len(served) == len(threads), message="stream did not start")
    streams_open.wait()
    for thread in threads:
        thread.join()
    assert Counter(served) == {first["launch_id"]: 2, second["launch_id"]: 2}


# --- the official OpenAI client ------------------------------------------------------


def openai_clients(server: Server, launch_id: str) -> list[openai.OpenAI]:
    return [
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0),
        openai.OpenAI(base_url=f"{server.url}/proxy/{launch_id}/v1", api_key=KEY, max_retries=0),
    ]


@pytest.mark.parametrize("way_in", ["/v1", "/proxy/{id}/v1"])
def test_openai_client(two_models: tuple[Server, dict, dict], way_in: str) -> None:
    server, alpha, _ = two_models
    client = openai_clients(server, alpha["launch_id"])[way_in != "/v1"]

    chat = client.chat.completions.create(
        model="org/alpha", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert chat.choices[0].message.content == " tok0 tok1 tok2"

    stream = client.chat.completions.create(
        model="org/alpha",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
    assert "".join(piece or "" for piece in pieces) == " tok0 tok1 tok2 tok3"

    completion = client.completions.create(model="org/alpha", prompt="x", max_tokens=2)
    assert completion.choices[0].text == " tok0 tok1"

    embeddings = client.embeddings.create(model="org/alpha", input=["a", "b"])
    assert len(embeddings.data) == 2
    assert len(embeddings.data[0].embedding) == 8

    assert "org/alpha" in [model.id for model in client.models.list()]


@pytest.mark.parametrize("way_in", ["/v1", "/proxy/{id}/v1"])
def test_openai_client_errors(two_models: tuple[Server, dict, dict], way_in: str) -> None:
    server, alpha, _ = two_models
    client = openai_clients(server, alpha["launch_id"])[way_in != "/v1"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="x")
    wrong_key = client.with_options(api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        wrong_key.models.list()

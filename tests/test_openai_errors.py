"""Every error under /v1 takes OpenAI's shape ({"error": {message, type, param, code}}), so
the official client raises its matching exception and shows our message: 401, 403, 404,
409, 413, 429 and 503 alike."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx
import openai
import pytest

from tests.batch_helpers import chat_line, client_for, jsonl, submit, wait_for_batch
from tests.conftest import ServerFactory
from tests.harness import Server, eventually

KEY = "sesame"


@pytest.fixture
def server(start_server: ServerFactory) -> Server:
    return start_server(
        VLLM_ACCESS_KEY=KEY,
        VLLM_BOOTSTRAP_MODEL_QUEUE_LIMIT="1",
        VLLM_BATCH_MODEL_WAIT_SECONDS="3",
        VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES="1024",
    )


def _client(server: Server, **options: Any) -> openai.OpenAI:
    options.setdefault("api_key", KEY)
    return openai.OpenAI(base_url=f"{server.url}/v1", max_retries=0, **options)


def _complete(client: openai.OpenAI, model: str, prompt: str = "hi") -> None:
    client.completions.create(model=model, prompt=prompt, max_tokens=2)


def _in_openai_shape(error: openai.APIStatusError, status: int, code: str, words: str) -> None:
    assert error.status_code == status
    body = error.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert words in body["error"]["message"]
    assert words in str(error)  # what the client prints


def test_401_names_the_missing_key(server: Server) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        _complete(_client(server, api_key="wrong"), "m")
    _in_openai_shape(refused.value, 401, "invalid_api_key", "missing or wrong access key")
    assert refused.value.response.json()["error"]["type"] == "authentication_error"
    # Outside /v1 the control plane keeps its own shape.
    plain = httpx.get(f"{server.url}/launch")
    assert plain.status_code == 401
    assert "access key" in plain.json()["detail"]


def test_403_says_why_a_cross_site_change_is_refused(server: Server) -> None:
    client = _client(server, default_headers={"Origin": "http://elsewhere.example"})
    with pytest.raises(openai.PermissionDeniedError) as refused:
        _complete(client, "m")
    _in_openai_shape(refused.value, 403, "cross_site_request", "Origin is another site's")


def test_404_names_the_served_models(server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        _complete(_client(server), "nobody-serves-this")
    _in_openai_shape(refused.value, 404, "model_not_found", "does not exist")


def test_409_says_an_ended_batch_cannot_be_cancelled(server: Server) -> None:
    client = client_for(server)
    batch = submit(client, jsonl([chat_line("a", "nobody-serves-this")]))
    wait_for_batch(client, batch.id)
    with pytest.raises(openai.ConflictError) as refused:
        client.batches.cancel(batch.id)
    _in_openai_shape(refused.value, 409, "invalid_request", batch.id)


def test_413_names_the_limit(server: Server) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        _complete(_client(server), "m", prompt="x" * 2048)
    _in_openai_shape(
        refused.value, 413, "request_too_large", "VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES"
    )


def test_429_and_503_while_a_profile_loads(server: Server) -> None:
    put = server.client.put(
        "/models/slow", json={"model": "org/slow", "env": {"FAKE_VLLM_LOAD_SECONDS": "30"}}
    )
    assert put.status_code == 200, put.text
    client = _client(server)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_complete, client, "slow")
        eventually(lambda: server.client.get("/models/slow").json()["status"]["waiting"] == 1)
        with pytest.raises(openai.RateLimitError) as full:
            _complete(client, "slow")  # the queue holds one request: this one is refused
        _in_openai_shape(full.value, 429, "model_queue_full", "VLLM_BOOTSTRAP_MODEL_QUEUE_LIMIT")
        assert full.value.response.headers["retry-after"] == "10"
        with pytest.raises(openai.InternalServerError) as loading:
            waiting.result()  # past VLLM_BATCH_MODEL_WAIT_SECONDS
    _in_openai_shape(loading.value, 503, "model_loading", "did not load within 3 s")
    assert loading.value.response.headers["retry-after"] == "10"


def test_502_when_vllm_drops_the_connection(server: Server) -> None:
    server.launch_ready(model="org/resets", gpu_ids=[0])
    with pytest.raises(openai.InternalServerError) as refused:
        _complete(_client(server), "org/resets")
    _in_openai_shape(refused.value, 502, "upstream_unreachable", "did not answer")

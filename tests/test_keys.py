"""Scoped API keys: made by the admin, stored as hashes, held to their scopes, models and
limits, their priority passed to vLLM, and their usage counted exactly, streams included."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.batch_helpers import chat_line, jsonl, standin_stats
from tests.harness import Server, eventually, standin_env

ADMIN = "admin-secret"
MESSAGES = [{"role": "user", "content": "count these words please"}]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One server with two launches: `alpha` (first come, first served) and `beta`, served
    under that name with vLLM's priority scheduling and slow tokens."""
    workdir = tmp_path_factory.mktemp("keys")
    env = standin_env(workdir, VLLM_ACCESS_KEY=ADMIN, FAKE_GPU_COUNT="2")
    server = Server(env, workdir / "server.log").start()
    alpha = server.launch(model="alpha", gpu_ids=[0])
    beta = server.launch(
        model="org/beta",
        gpu_ids=[1],
        extra_args=["--served-model-name", "beta"],
        priority_scheduling=True,
        env={"FAKE_VLLM_TOKEN_DELAY_SECONDS": "0.05"},
    )
    yield {
        "server": server,
        "alpha": server.wait_for(alpha["launch_id"], {"ready"}),
        "beta": server.wait_for(beta["launch_id"], {"ready"}),
        "state": workdir / "state",
    }
    server.terminate()
    server.client.close()


def new_key(server: Server, name: str, **fields: Any) -> dict[str, Any]:
    response = server.client.post("/keys", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def as_key(server: Server, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )


def chat(client: httpx.Client, model: str = "alpha", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "max_tokens": 3, **extra}
    return client.post("/v1/chat/completions", json=body)


def usage_of(server: Server, name: str, group_by: str = "key") -> list[dict[str, Any]]:
    response = server.client.get("/usage", params={"key": name, "group_by": group_by})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


# --- keys ----------------------------------------------------------------------------------


def test_a_new_keys_secret_is_shown_once_and_only_its_hash_is_stored(
    box: dict[str, Any],
) -> None:
    server = box["server"]
    created = new_key(server, "shown-once", models=["alpha"], requests_per_minute=10)
    secret = created["key"]
    assert secret.startswith("vbk_")
    assert len(secret) >= 4 + 32
    assert created["prefix"] == secret[:12]
    listed = server.client.get("/keys").json()["data"]
    mine = [key for key in listed if key["id"] == created["id"]]
    assert mine
    assert "key" not in mine[0]
    assert mine[0]["models"] == ["alpha"]
    assert "key" not in server.client.get(f"/keys/{created['id']}").json()
    with as_key(server, secret) as client:
        assert chat(client).status_code == 200
    stored = b"".join(path.read_bytes() for path in box["state"].glob("state.sqlite3*"))
    assert created["id"].encode() in stored  # the key's row is there...
    assert secret.encode() not in stored  # ...and its secret is not
    assert secret[12:].encode() not in stored


@pytest.mark.parametrize(
    ("body", "status", "rule"),
    [
        ({"scopes": ["root"]}, 422, "scopes"),
        ({"scopes": []}, 422, "scopes"),
        ({"max_concurrency": 0}, 422, "max_concurrency"),
        ({"requests_per_minute": -5}, 422, "requests_per_minute"),
        ({"tokens_per_minute": 1.5}, 422, "tokens_per_minute"),
        ({"models": "alpha"}, 422, "models"),
        ({"models": ["alpha", 7]}, 422, "models"),
        ({"expires_at": 1000}, 422, "future"),
        ({"name": ""}, 422, "name"),
        ({"name": "a b"}, 422, "name"),
        ({"secret": "mine"}, 422, "secret"),
        ({"name": "taken"}, 409, "exists already"),
    ],
)
def test_bad_key_definitions_are_refused_with_the_rule_and_nothing_stored(
    box: dict[str, Any], body: dict[str, Any], status: int, rule: str
) -> None:
    server = box["server"]
    if not any(key["name"] == "taken" for key in server.client.get("/keys").json()["data"]):
        new_key(server, "taken")
    before = server.client.get("/keys").json()["data"]
    response = server.client.post("/keys", json={"name": "refused", **body})
    assert response.status_code == status, response.text
    assert rule in response.json()["detail"]
    assert server.client.get("/keys").json()["data"] == before


def test_a_key_works_as_bearer_and_as_basic_password(box: dict[str, Any]) -> None:
    server = box["server"]
    secret = new_key(server, "two-ways")["key"]
    basic = "Basic " + base64.b64encode(f"anyone:{secret}".encode()).decode()
    with httpx.Client(base_url=server.url, headers={"Authorization": basic}) as client:
        assert client.get("/v1/models").status_code == 200
    with as_key(server, secret) as client:
        assert client.get("/v1/models").status_code == 200
    with as_key(server, secret + "x") as client:
        assert client.get("/v1/models").status_code == 401


# --- scopes and models ---------------------------------------------------------------------


def test_each_scope_reaches_its_routes_and_403_names_the_missing_one(
    box: dict[str, Any],
) -> None:
    server, alpha = box["server"], box["alpha"]["launch_id"]
    inference = new_key(server, "inference-only")["key"]
    batches = new_key(server, "batches-only", scopes=["batches"])["key"]
    admin = new_key(server, "second-admin", scopes=["admin"])["key"]
    with as_key(server, inference) as client:
        assert chat(client).status_code == 200
        assert client.get(f"/proxy/{alpha}/v1/models").status_code == 200
        for method, path, scope in [
            ("GET", "/v1/files", "batches"),
            ("POST", "/v1/batches", "batches"),
            ("GET", "/launch", "admin"),
            ("POST", "/keys", "admin"),
            ("GET", "/usage", "admin"),
            ("GET", f"/proxy/{alpha}/metrics", "admin"),
            ("POST", f"/proxy/{alpha}/v1/../sleep", "admin"),
            ("POST", "/v1/load_lora_adapter", "admin"),
        ]:
            response = client.request(method, path)
            assert response.status_code == 403, (path, response.text)
            assert f"'{scope}' scope" in response.text, path
        assert client.get("/v1/files").json()["error"]["type"] == "permission_error"
    with as_key(server, batches) as client:
        assert client.get("/v1/files").status_code == 200
        assert chat(client).status_code == 403
    with as_key(server, admin) as client:
        assert client.get("/launch").status_code == 200
        assert client.get("/keys").status_code == 200


def test_a_model_outside_the_keys_list_is_as_if_it_did_not_exist(box: dict[str, Any]) -> None:
    server, beta = box["server"], box["beta"]["launch_id"]
    secret = new_key(server, "alpha-only", models=["alpha"])["key"]
    with as_key(server, secret) as client:
        listed = client.get("/v1/models").json()["data"]
        assert [model["id"] for model in listed] == ["alpha"]
        refused = chat(client, "beta")
        assert refused.status_code == 404
        error = refused.json()["error"]
        assert error["code"] == "model_not_found"
        assert "does not exist" in error["message"]
        assert "Served models: alpha" in error["message"]
        assert client.get(f"/proxy/{beta}/v1/models").status_code == 404
        assert chat(client, "alpha").status_code == 200


# --- limits --------------------------------------------------------------------------------


def test_past_max_concurrency_a_request_gets_429_with_retry_after(box: dict[str, Any]) -> None:
    server = box["server"]
    secret = new_key(server, "one-at-a-time", max_concurrency=1)["key"]
    body = {"model": "beta", "messages": MESSAGES, "max_tokens": 40, "stream": True}
    with as_key(server, secret) as streaming, as_key(server, secret) as other:
        with streaming.stream("POST", "/v1/chat/completions", json=body) as stream:
            assert stream.status_code == 200
            refused = chat(other)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert refused.json()["error"]["type"] == "rate_limit_error"
            assert int(refused.headers["retry-after"]) >= 1
            assert "max_concurrency" in refused.json()["error"]["message"]
            stream.read()
        assert chat(other).status_code == 200  # its place is free again


def test_requests_per_minute_sends_openais_headers_then_429(box: dict[str, Any]) -> None:
    server = box["server"]
    secret = new_key(server, "two-a-minute", requests_per_minute=2, tokens_per_minute=100000)
    with as_key(server, secret["key"]) as client:
        first = chat(client)
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-limit-tokens"] == "100000"
        assert first.headers["x-ratelimit-remaining-tokens"] == "100000"  # charged at the end
        second = chat(client)
        used = first.json()["usage"]["total_tokens"]
        assert second.headers["x-ratelimit-remaining-requests"] == "0"
        assert second.headers["x-ratelimit-remaining-tokens"] == str(100000 - used)
        third = chat(client)
        assert third.status_code == 429
        assert 1 <= int(third.headers["retry-after"]) <= 60
        assert third.headers["x-ratelimit-remaining-requests"] == "0"
        assert "requests per minute" in third.json()["error"]["message"]


def test_tokens_per_minute_refuses_once_vllms_counts_reach_it(box: dict[str, Any]) -> None:
    server = box["server"]
    secret = new_key(server, "few-tokens", tokens_per_minute=5)["key"]
    with as_key(server, secret) as client:
        first = chat(client)
        assert first.status_code == 200
        assert first.json()["usage"]["total_tokens"] >= 5
        refused = chat(client)
        assert refused.status_code == 429
        assert "tokens per minute" in refused.json()["error"]["message"]
        assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


# --- revocation and expiry -----------------------------------------------------------------


def test_a_deleted_key_is_refused_at_once_on_a_kept_alive_connection_and_its_stream_ends(
    box: dict[str, Any],
) -> None:
    server = box["server"]
    created = new_key(server, "revoked")
    body = {"model": "beta", "messages": MESSAGES, "max_tokens": 20, "stream": True}
    with as_key(server, created["key"]) as client, as_key(server, created["key"]) as streamer:
        assert chat(client).status_code == 200
        with streamer.stream("POST", "/v1/chat/completions", json=body) as stream:
            assert server.client.delete(f"/keys/{created['id']}").json()["deleted"] is True
            text = stream.read().decode()
        assert text.rstrip().endswith("data: [DONE]")  # in flight: it finished
        refused = chat(client)  # the same kept-alive connection
        assert refused.status_code == 401
    assert server.client.get(f"/keys/{created['id']}").status_code == 404
    assert server.client.delete(f"/keys/{created['id']}").status_code == 404
    # Its usage stays, found by its name too.
    assert usage_of(server, "revoked")[0]["requests"] == 2
    assert server.client.get("/usage", params={"key": "nobody"}).status_code == 404
    # A secret pasted where a key's name goes is answered, and its value is not logged.
    pasted = {"key": "vb-pasted-secret", "group_by": "model"}
    assert server.client.get("/usage", params=pasted).status_code == 404
    eventually(lambda: "GET /usage?key=***&group_by=model" in server.output())
    assert "vb-pasted-secret" not in server.output()


def test_an_expired_key_is_refused(box: dict[str, Any]) -> None:
    server = box["server"]
    secret = new_key(server, "short-lived", expires_at=time.time() + 1.5)["key"]
    with as_key(server, secret) as client:
        assert chat(client).status_code == 200
        eventually(lambda: chat(client).status_code == 401, timeout=10)
        assert "expired" in chat(client).json()["error"]["message"]


def test_an_expiry_without_a_time_zone_is_utc(box: dict[str, Any]) -> None:
    server = box["server"]
    expiry = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3600))
    created = new_key(server, "utc-expiry", expires_at=expiry)
    assert abs(created["expires_at"] - (time.time() + 3600)) < 5


def test_an_edited_key_applies_to_its_next_request(box: dict[str, Any]) -> None:
    server = box["server"]
    created = new_key(server, "edited")
    with as_key(server, created["key"]) as client:
        assert chat(client).status_code == 200
        changed = server.client.patch(f"/keys/{created['id']}", json={"models": ["beta"]})
        assert changed.status_code == 200
        assert changed.json()["models"] == ["beta"]
        assert chat(client).status_code == 404
        bad = server.client.patch(f"/keys/{created['id']}", json={"max_concurrency": 0})
        assert bad.status_code == 422
        assert server.client.get(f"/keys/{created['id']}").json()["max_concurrency"] is None


# --- usage ---------------------------------------------------------------------------------


def sse_events(text: str) -> list[Any]:
    return [
        json.loads(line[len("data: ") :])
        for line in text.splitlines()
        if line.startswith("data: {")
    ]


def test_usage_counts_plain_and_streamed_requests_as_vllm_reports_them(
    box: dict[str, Any],
) -> None:
    server = box["server"]
    secret = new_key(server, "counted")["key"]
    with as_key(server, secret) as client:
        plain = chat(client).json()["usage"]
        quiet = client.post(
            "/v1/chat/completions",
            json={"model": "alpha", "messages": MESSAGES, "max_tokens": 3, "stream": True},
        )
        asked = client.post(
            "/v1/chat/completions",
            json={
                "model": "alpha",
                "messages": MESSAGES,
                "max_tokens": 3,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
        failed = chat(client, "alpha", max_tokens="many")
    assert failed.status_code == 400  # vLLM's own refusal: an error of the key's
    quiet_events = sse_events(quiet.text)
    assert quiet_events
    assert all(event["choices"] for event in quiet_events)
    assert all("usage" not in event for event in quiet_events)
    usage_chunk = sse_events(asked.text)[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == plain
    (row,) = usage_of(server, "counted", "key,model,day")
    assert row["model"] == "alpha"
    assert row["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert row["requests"] == 4
    assert row["errors"] == 1
    assert row["prompt_tokens"] == 3 * plain["prompt_tokens"]
    assert row["completion_tokens"] == 3 * plain["completion_tokens"]
    assert row["total_tokens"] == 3 * plain["total_tokens"]


def test_a_key_reads_its_own_usage_and_metrics_show_it_by_key_name(
    box: dict[str, Any],
) -> None:
    server = box["server"]
    secret = new_key(server, "reader")["key"]
    with as_key(server, secret) as client:
        assert chat(client).status_code == 200
        mine = client.get("/usage/me")
        assert mine.status_code == 200, mine.text
        assert [(row["model"], row["requests"]) for row in mine.json()["data"]] == [("alpha", 1)]
        assert client.get("/usage").status_code == 403
    assert server.client.get("/usage/me").status_code == 400  # the access key has no usage
    assert server.client.get("/usage", params={"group_by": "planet"}).status_code == 422
    assert server.client.get("/usage", params={"since": "20260101"}).status_code == 422
    metrics = server.client.get("/metrics").text
    assert 'vllm_bootstrap_key_requests_total{key="reader",model="alpha"} 1.0' in metrics
    assert 'vllm_bootstrap_key_prompt_tokens_total{key="reader",model="alpha"}' in metrics


def test_a_keys_priority_reaches_vllm_on_priority_launches_only(box: dict[str, Any]) -> None:
    server = box["server"]
    secret = new_key(server, "urgent", priority=-2)["key"]
    with as_key(server, secret) as client:
        # A client cannot choose its own priority: the key's wins.
        response = client.post(
            "/v1/completions", json={"model": "beta", "prompt": "prio-key", "priority": -100}
        )
        assert response.status_code == 200, response.text
        assert (
            client.post(
                "/v1/completions", json={"model": "alpha", "prompt": "fcfs-key"}
            ).status_code
            == 200
        )  # no priority sent where vLLM would refuse one
    priorities = standin_stats(server, box["beta"]["launch_id"])["priorities"]
    assert [value for prompt, value in priorities.items() if "prio-key" in prompt] == [-2]
    alpha_priorities = standin_stats(server, box["alpha"]["launch_id"])["priorities"]
    assert [value for prompt, value in alpha_priorities.items() if "fcfs-key" in prompt] == [0]


# --- batches -------------------------------------------------------------------------------


def upload(client: httpx.Client, lines: list[dict[str, Any]]) -> str:
    response = client.post(
        "/v1/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def run_batch(client: httpx.Client, file_id: str) -> dict[str, Any]:
    created = client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    )
    assert created.status_code == 200, created.text
    batch_id = created.json()["id"]
    finished: dict[str, Any] = {}

    def ended() -> bool:
        finished.update(client.get(f"/v1/batches/{batch_id}").json())
        return finished["status"] in ("completed", "failed")

    eventually(ended, timeout=30)
    return finished


def test_a_keys_files_and_batches_are_its_own_and_its_lines_count_as_usage(
    box: dict[str, Any],
) -> None:
    server = box["server"]
    owner = new_key(server, "batcher", scopes=["inference", "batches"], max_concurrency=1)
    other = new_key(server, "neighbour", scopes=["batches"])
    with as_key(server, owner["key"]) as client, as_key(server, other["key"]) as neighbour:
        file_id = upload(client, [chat_line(f"line-{n}", "alpha") for n in range(3)])
        batch = run_batch(client, file_id)
        assert batch["status"] == "completed", batch
        assert batch["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
        output = batch["output_file_id"]
        assert client.get(f"/v1/files/{output}/content").status_code == 200
        for path in (f"/v1/files/{file_id}", f"/v1/files/{output}/content"):
            assert neighbour.get(path).status_code == 404, path
        assert neighbour.get(f"/v1/batches/{batch['id']}").status_code == 404
        assert neighbour.post(f"/v1/batches/{batch['id']}/cancel").status_code == 404
        assert neighbour.get("/v1/batches").json()["data"] == []
        assert file_id not in {item["id"] for item in neighbour.get("/v1/files").json()["data"]}
        stolen = neighbour.post(
            "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        )
        assert stolen.status_code == 404
    assert server.client.get(f"/v1/batches/{batch['id']}").status_code == 200  # the admin
    (row,) = usage_of(server, "batcher")
    results = [json.loads(line) for line in _content(server, output).splitlines()]
    assert row["batch_lines"] == 3
    assert row["requests"] == 0
    assert row["errors"] == 0
    assert row["prompt_tokens"] == sum(
        result["response"]["body"]["usage"]["prompt_tokens"] for result in results
    )
    assert row["completion_tokens"] == sum(
        result["response"]["body"]["usage"]["completion_tokens"] for result in results
    )


def test_a_batch_naming_a_model_outside_the_keys_list_fails_validation(
    box: dict[str, Any],
) -> None:
    server = box["server"]
    secret = new_key(server, "narrow-batcher", scopes=["batches"], models=["alpha"])["key"]
    with as_key(server, secret) as client:
        file_id = upload(client, [chat_line("a", "alpha"), chat_line("b", "beta")])
        batch = run_batch(client, file_id)
    assert batch["status"] == "failed"
    (error,) = batch["errors"]["data"]
    assert error["code"] == "model_not_found"
    assert "`beta` does not exist" in error["message"]


def _content(server: Server, file_id: str) -> str:
    return server.client.get(f"/v1/files/{file_id}/content").text


# --- load GPU-seconds, and usage across a kill -9 --------------------------------------------


def test_a_model_load_a_keys_request_started_is_charged_to_it(
    start_server: Any, tmp_path: Path
) -> None:
    server = start_server(VLLM_ACCESS_KEY=ADMIN, FAKE_GPU_COUNT="1")
    assert server.client.put("/models/lazy", json={"model": "org/lazy"}).status_code == 200
    secret = new_key(server, "loader")["key"]
    with as_key(server, secret) as client:
        assert chat(client, "lazy").status_code == 200
    (row,) = usage_of(server, "loader", "key,model")
    # One GPU, for at least the stand-in's load time (FAKE_VLLM_LOAD_SECONDS, 0.5 s).
    assert row["model"] == "lazy"
    assert row["load_gpu_seconds"] >= 0.5


def test_usage_written_before_a_kill_9_is_there_after_the_restart(start_server: Any) -> None:
    server = start_server(
        VLLM_ACCESS_KEY=ADMIN, FAKE_GPU_COUNT="1", VLLM_BOOTSTRAP_USAGE_FLUSH_SECONDS="0.2"
    )
    server.launch_ready(model="alpha", gpu_ids=[0])
    secret = new_key(server, "survivor")["key"]
    with as_key(server, secret) as client:
        for _ in range(3):
            assert chat(client).status_code == 200
    database = Path(server.env["VLLM_BOOTSTRAP_STATE_DIR"]) / "state.sqlite3"
    eventually(lambda: _requests_written(database) == 3, timeout=10)  # the group was written
    server.kill()
    restarted = start_server(env=server.env)
    assert usage_of(restarted, "survivor")[0]["requests"] == 3


def _requests_written(database: Path) -> int:
    import sqlite3

    with sqlite3.connect(database) as db:
        row = db.execute("SELECT sum(requests) FROM key_usage").fetchone()
    return int(row[0] or 0)


def test_concurrent_requests_of_one_key_are_all_counted(box: dict[str, Any]) -> None:
    server = box["server"]
    secret = new_key(server, "parallel")["key"]
    statuses: list[int] = []

    def send() -> None:
        with as_key(server, secret) as client:
            statuses.append(chat(client).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    assert usage_of(server, "parallel")[0]["requests"] == 8


# --- the same rules through /proxy, and the review's cases ---------------------------------


def test_through_proxy_a_keys_model_list_priority_and_usage_hold_too(box: dict[str, Any]) -> None:
    server, beta = box["server"], box["beta"]["launch_id"]
    secret = new_key(server, "proxied", models=["beta"], priority=5)["key"]
    path = f"/proxy/{beta}/v1/chat/completions"
    with as_key(server, secret) as client:
        plain = client.post(
            path,
            json={
                "model": "beta",
                "messages": [{"role": "user", "content": "via-proxy"}],
                "max_tokens": 3,
                "priority": -100,
            },
        )
        assert plain.status_code == 200, plain.text
        other = client.post(path, json={"model": "org/beta", "messages": MESSAGES})
        assert other.status_code == 404  # another name of the same launch: not the key's
        unreadable = client.post(path, content=b"not json")
        assert unreadable.status_code == 400
        assert "JSON object naming its `model`" in unreadable.json()["detail"]
        streamed = client.post(
            path, json={"model": "beta", "messages": MESSAGES, "max_tokens": 3, "stream": True}
        )
    priorities = standin_stats(server, beta)["priorities"]
    assert [value for prompt, value in priorities.items() if "via-proxy" in prompt] == [5]
    assert all(event["choices"] for event in sse_events(streamed.text))  # usage taken out
    (row,) = usage_of(server, "proxied", "key,model")
    assert row["requests"] == 4
    assert row["errors"] == 2
    # Both answered requests' tokens, the stream's read from the chunk it was made to send.
    assert row["prompt_tokens"] > plain.json()["usage"]["prompt_tokens"]
    assert row["completion_tokens"] == 2 * plain.json()["usage"]["completion_tokens"]


@pytest.mark.parametrize("stream", [1, "yes", "true"])
def test_a_stream_spelled_otherwise_is_still_counted(box: dict[str, Any], stream: object) -> None:
    server = box["server"]
    name = f"spelled-{stream}"
    secret = new_key(server, name)["key"]
    with as_key(server, secret) as client:
        response = chat(client, stream=stream)
    assert response.status_code == 200
    assert all(event["choices"] for event in sse_events(response.text))
    (row,) = usage_of(server, name)
    assert row["completion_tokens"] == 3


def test_a_deleted_keys_batch_lines_waiting_for_their_turn_fail_as_revoked(
    box: dict[str, Any],
) -> None:
    server = box["server"]
    created = new_key(server, "batch-revoked", scopes=["batches"], max_concurrency=1)
    lines = [chat_line(f"slow-{n}", "beta", max_tokens=30) for n in range(4)]
    with as_key(server, created["key"]) as client:
        file_id = upload(client, lines)
        batch = client.post(
            "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        ).json()
        eventually(
            lambda: server.client.get(f"/keys/{created['id']}").json()["in_flight"] == 1,
            timeout=10,
        )
        assert server.client.delete(f"/keys/{created['id']}").status_code == 200
    finished: dict[str, Any] = {}

    def ended() -> bool:
        finished.update(server.client.get(f"/v1/batches/{batch['id']}").json())
        return finished["status"] in ("completed", "failed")

    eventually(ended, timeout=30)
    errors = [json.loads(line) for line in _content(server, finished["error_file_id"]).splitlines()]
    assert finished["request_counts"]["completed"] >= 1  # the line in flight finished
    assert len(errors) >= 2
    assert {error["error"]["code"] for error in errors} == {"key_revoked"}


def test_a_failed_load_tells_a_scoped_key_no_more_than_that(start_server: Any) -> None:
    server = start_server(VLLM_ACCESS_KEY=ADMIN, FAKE_GPU_COUNT="1")
    broken = server.client.put("/models/broken", json={"model": "crash-on-start"})
    assert broken.status_code == 200
    secret = new_key(server, "unlucky")["key"]
    with as_key(server, secret) as client:
        refused = chat(client, "broken")
    assert refused.status_code == 503
    assert refused.json()["error"]["message"] == (
        "The model `broken` could not be loaded now; retry later"
    )
    told = server.client.post(  # the access key still reads why
        "/v1/chat/completions", json={"model": "broken", "messages": MESSAGES}
    )
    assert told.status_code == 503
    assert "could not be loaded: " in told.json()["error"]["message"]

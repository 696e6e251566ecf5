"""Writing batch input files and waiting on batches, for the batch tests."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
from openai.types import Batch

from tests.harness import Server

FINAL = {"completed", "failed", "cancelled", "expired"}


def chat_line(custom_id: str, model: str, **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": custom_id}], "max_tokens": 2}
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {**body, **extra},
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def client_for(server: Server) -> openai.OpenAI:
    key = server.env.get("VLLM_ACCESS_KEY", "unused")
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def submit(
    client: openai.OpenAI,
    content: bytes,
    endpoint: str = "/v1/chat/completions",
    metadata: dict[str, str] | None = None,
) -> Batch:
    uploaded = client.files.create(file=("input.jsonl", content), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        metadata=metadata,
    )


def wait_for_batch(
    client: openai.OpenAI, batch_id: str, statuses: set[str] = FINAL, timeout: float = 60
) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch stayed {batch.status}: {batch}")
        time.sleep(0.05)


def result_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines()]


def standin_stats(server: Server, launch_id: str) -> dict[str, Any]:
    response = server.client.get(f"/proxy/{launch_id}/debug/stats")
    assert response.status_code == 200, response.text
    return dict(response.json())


def raw_upload(server: Server, content: bytes, purpose: str = "batch") -> httpx.Response:
    return server.client.post(
        "/v1/files", files={"file": ("input.jsonl", content)}, data={"purpose": purpose}
    )

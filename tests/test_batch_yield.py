"""Batch lines make way for live requests on a launch without priority scheduling: the
stand-in runs two requests at once (--max-num-seqs 2) and queues the rest first come, first
served, as vLLM does, and says how many requests it let in ahead of each one."""

from __future__ import annotations

import json
import re

from tests.batch_helpers import chat_line, client_for, jsonl, standin_stats, submit, wait_for_batch
from tests.conftest import ServerFactory
from tests.harness import Server, eventually

SLOW_LINES = {
    "FAKE_VLLM_TOKEN_DELAY_SECONDS": "0.05",  # two tokens a line: 0.1 s each, two at a time
    "VLLM_BOOTSTRAP_BATCH_YIELD_CHECK_SECONDS": "0.05",
    "VLLM_BOOTSTRAP_BATCH_YIELD_HOLD_SECONDS": "0.5",
}


def _live_request(server: Server) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "live"}],
        "max_tokens": 2,
        "stream": True,
    }
    with server.client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert b"data: [DONE]" in response.read()


def _queued_batch(server: Server, count: int, metadata: dict[str, str] | None = None) -> str:
    """A batch of `count` slow lines, once vLLM's queue holds most of them."""
    launch = server.launch_ready(model="m", gpu_ids=[0], extra_args=["--max-num-seqs", "2"])
    lines = [chat_line(f"r{index}", "m") for index in range(count)]
    submit(client_for(server), jsonl(lines), metadata=metadata)
    launch_id = launch["launch_id"]
    eventually(lambda: standin_stats(server, launch_id)["waiting"] >= count // 2)
    return launch_id


def _window(server: Server, launch_id: str) -> int | None:
    text = server.client.get("/metrics").text
    found = re.search(rf'batch_window_lines{{launch_id="{launch_id}"}} (\S+)', text)
    return int(float(found[1])) if found else None


def test_live_requests_are_not_queued_behind_batch_lines(start_server: ServerFactory) -> None:
    server = start_server(**SLOW_LINES)
    launch_id = _queued_batch(server, 60)

    _live_request(server)

    stats = standin_stats(server, launch_id)
    assert stats["let_in_ahead"][json.dumps("live")] == 0  # the queued lines made way
    assert stats["aborted"] > 0  # taken back from vLLM's queue, to be sent again
    assert (_window(server, launch_id) or 0) >= 1  # held back, and /metrics says so
    # No live request for the hold: back to full speed, and vLLM's queue fills again.
    eventually(lambda: _window(server, launch_id) is None)
    eventually(lambda: standin_stats(server, launch_id)["waiting"] >= 15)
    client = client_for(server)
    [batch] = client.batches.list().data
    done = wait_for_batch(client, batch.id)
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (60, 0)
    prompts = standin_stats(server, launch_id)["prompts"]
    assert sum(prompts.values()) > 61  # lines taken back were sent again...
    assert done.errors is None  # ...at no cost to their attempts


def test_an_urgent_batch_keeps_its_lines_ahead_of_live_ones(start_server: ServerFactory) -> None:
    server = start_server(**SLOW_LINES)
    launch_id = _queued_batch(server, 30, metadata={"priority": "live"})

    _live_request(server)

    stats = standin_stats(server, launch_id)
    assert stats["let_in_ahead"][json.dumps("live")] >= 10
    assert stats["aborted"] == 0
    assert _window(server, launch_id) is None

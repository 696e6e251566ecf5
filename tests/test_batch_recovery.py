"""Batches survive the control plane: a kill -9 mid-batch and a restart lose nothing and
repeat nothing; an unfinished batch past its window expires on resume, keeping its results."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

import openai
from openai.types import Batch

from tests.batch_helpers import (
    chat_line,
    client_for,
    jsonl,
    result_lines,
    standin_stats,
    submit,
    wait_for_batch,
)
from tests.conftest import ServerFactory
from tests.harness import Server, eventually

IN_FLIGHT = 8


def _restart(start_server: ServerFactory, server: Server) -> Server:
    server.kill()  # SIGKILL: no shutdown code runs
    return start_server(env=server.env)  # on the same state directory


def _batch_under_way(
    start_server: ServerFactory, lines: int, in_flight: int, latency: float, done_at_least: int
) -> tuple[Server, dict, Batch]:
    """A server with one ready launch, and a batch of `lines` requests on it that has
    recorded at least `done_at_least` results."""
    server = start_server(
        VLLM_BATCH_IN_FLIGHT_PER_LAUNCH=str(in_flight), FAKE_VLLM_LATENCY_SECONDS=str(latency)
    )
    launch = server.launch_ready(model="org/alpha", gpu_ids=[0])
    client = client_for(server)
    batch = submit(client, jsonl([chat_line(f"r{i}", "org/alpha") for i in range(lines)]))
    eventually(lambda: _completed(client_for(server), batch.id) >= done_at_least)
    return server, launch, batch


def _completed(client: openai.OpenAI, batch_id: str) -> int:
    counts = client.batches.retrieve(batch_id).request_counts
    return counts.completed if counts else 0


def test_a_kill_9_mid_batch_loses_and_repeats_nothing(start_server: ServerFactory) -> None:
    total = 300
    server, launch, batch = _batch_under_way(start_server, total, IN_FLIGHT, 0.1, 60)

    restarted = _restart(start_server, server)
    client = client_for(restarted)
    resumed = client.batches.retrieve(batch.id)
    assert resumed.status == "in_progress"
    assert resumed.request_counts is not None
    assert resumed.request_counts.completed >= 60  # recorded progress survived

    done = wait_for_batch(client, batch.id)
    assert done.status == "completed"
    output = result_lines(client, done.output_file_id)
    assert Counter(line["custom_id"] for line in output) == Counter(f"r{i}" for i in range(total))
    # Only requests in flight (or answered but not yet recorded) at the kill were sent again.
    prompts = standin_stats(restarted, launch["launch_id"])["prompts"]
    assert len(prompts) == total
    sent_again = sum(count - 1 for count in prompts.values())
    assert 0 < sent_again <= 2 * IN_FLIGHT
    assert "resuming (in_progress)" in restarted.output()


def test_a_validation_cut_off_by_a_kill_is_done_again(start_server: ServerFactory) -> None:
    server = start_server(FAKE_VLLM_LATENCY_SECONDS="0.2")
    server.launch_ready(model="org/alpha", gpu_ids=[0])
    client = client_for(server)
    batch = submit(client, jsonl([chat_line(f"r{i}", "org/alpha") for i in range(50)]))
    wait_for_batch(client, batch.id, {"in_progress"})
    server.kill()
    # As the database stood mid-validation: status validating, some rows already recorded.
    state_dir = Path(server.env["VLLM_BOOTSTRAP_STATE_DIR"])
    _edit_batch(state_dir, batch.id, status="validating", completed=0, output_bytes=0)
    with sqlite3.connect(state_dir / "batches.sqlite3") as db:
        db.execute("DELETE FROM batch_requests WHERE line > 20")
        db.execute("UPDATE batch_requests SET done = 0")

    restarted = start_server(env=server.env)
    client = client_for(restarted)
    done = wait_for_batch(client, batch.id)

    assert "resuming (validating)" in restarted.output()
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (50, 50)
    output = result_lines(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(f"r{i}" for i in range(50))


def test_a_batch_past_its_window_expires_on_resume_with_what_finished(
    start_server: ServerFactory,
) -> None:
    server, _, batch = _batch_under_way(start_server, 200, 2, 0.2, 4)
    server.kill()
    state_dir = Path(server.env["VLLM_BOOTSTRAP_STATE_DIR"])
    _edit_batch(state_dir, batch.id, expires_at=int(time.time()) + 1)

    restarted = start_server(env=server.env)
    client = client_for(restarted)
    done = wait_for_batch(client, batch.id, timeout=30)

    assert done.status == "expired"
    assert done.expired_at is not None
    output = result_lines(client, done.output_file_id)
    errors = result_lines(client, done.error_file_id)
    assert len(output) >= 4
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert len(output) + len(errors) == 200


def _edit_batch(state_dir: Path, batch_id: str, **fields: object) -> None:
    """Change a batch's recorded fields, as an operator editing the database would."""
    with sqlite3.connect(state_dir / "batches.sqlite3") as db:
        (document,) = db.execute(
            "SELECT document FROM batches WHERE id = ?", (batch_id,)
        ).fetchone()
        record = {**json.loads(document), **fields}
        db.execute(
            "UPDATE batches SET status = ?, document = ? WHERE id = ?",
            (record["status"], json.dumps(record), batch_id),
        )


def test_result_lines_written_but_not_recorded_are_cut_off_on_resume(
    start_server: ServerFactory,
) -> None:
    server, _, batch = _batch_under_way(start_server, 100, 4, 0.1, 8)
    server.kill()
    # As a kill between appending results and recording them leaves it: lines on disk, for
    # requests that the database still counts as unanswered.
    output = Path(server.env["VLLM_BOOTSTRAP_STATE_DIR"]) / "batches" / batch.id / "output.jsonl"
    with output.open("ab") as appended:
        appended.write(output.read_bytes().splitlines(keepends=True)[0] * 3)

    restarted = start_server(env=server.env)
    client = client_for(restarted)
    done = wait_for_batch(client, batch.id)

    lines = result_lines(client, done.output_file_id)
    assert Counter(line["custom_id"] for line in lines) == Counter(f"r{i}" for i in range(100))


def test_a_locked_database_delays_a_batch_but_loses_and_repeats_nothing(
    start_server: ServerFactory,
) -> None:
    server, _, batch = _batch_under_way(start_server, 300, 8, 0.05, 20)
    client = client_for(server)

    database = Path(server.env["VLLM_BOOTSTRAP_STATE_DIR"]) / "batches.sqlite3"
    with sqlite3.connect(database, isolation_level=None) as operator:
        operator.execute("BEGIN EXCLUSIVE")  # an operator's shell holding the write lock
        refused = server.client.post(
            "/v1/batches",
            json={"input_file_id": batch.input_file_id, "endpoint": "/v1/chat/completions"},
        )
        recording_refused = "results not recorded yet, retrying"
        eventually(lambda: recording_refused in server.output(), message="no write was refused")
        operator.execute("COMMIT")

    done = wait_for_batch(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (300, 0)
    lines = result_lines(client, done.output_file_id)
    assert Counter(line["custom_id"] for line in lines) == Counter(f"r{i}" for i in range(300))
    assert "results not recorded yet, retrying" in server.output()
    assert refused.status_code == 503
    assert "retry shortly" in refused.json()["error"]["message"]
    assert [b.id for b in client.batches.list().data] == [batch.id]  # none was half-made


def test_cancel_during_validation_ends_cancelled_with_no_results(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    client = client_for(server)
    batch = submit(client, jsonl([chat_line(f"r{i}", "org/alpha") for i in range(100_000)]))
    cancelling = client.batches.cancel(batch.id)
    done = wait_for_batch(client, batch.id)
    assert cancelling.status == "cancelling"
    assert done.status == "cancelled"
    assert (done.output_file_id, done.error_file_id) == (None, None)
    assert done.in_progress_at is None  # it never got past validation


def test_the_server_answers_while_a_large_cancelled_batch_is_wrapped_up(
    start_server: ServerFactory,
) -> None:
    """Writing the error lines of 100,000 cancelled requests yields to the event loop
    between pages: requests are answered meanwhile, and show the wrap-up's progress."""
    server = start_server()
    client = client_for(server)
    content = jsonl([chat_line(f"r{i}", "org/nobody") for i in range(100_000)])
    batch = submit(client, content)  # nobody serves the model: every request waits for it
    wait_for_batch(client, batch.id, statuses={"in_progress"}, timeout=120)
    assert client.batches.cancel(batch.id).status == "cancelling"
    seen_while_cancelling = set()
    while (now := client.batches.retrieve(batch.id)).status == "cancelling":
        assert now.request_counts is not None
        seen_while_cancelling.add(now.request_counts.failed)
        assert server.client.get("/health").status_code == 200
    assert now.status == "cancelled"
    assert now.request_counts is not None
    assert now.request_counts.failed == 100_000
    # Answered in the middle of the wrap-up, not only before and after it.
    assert len(seen_while_cancelling - {0, 100_000}) >= 2, sorted(seen_while_cancelling)

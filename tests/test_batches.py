"""Batch jobs end to end with the official `openai` client: upload, create, poll, download,
list, cancel; unknown models, embeddings, bad files, retries, saturation, late models."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import openai
import pytest

from tests.batch_helpers import (
    chat_line,
    client_for,
    jsonl,
    raw_upload,
    result_lines,
    standin_stats,
    submit,
    wait_for_batch,
)
from tests.conftest import ServerFactory
from tests.harness import Server, eventually

KEY = "batch-key"


def test_a_batch_runs_end_to_end_with_the_openai_client(start_server: ServerFactory) -> None:
    server = start_server(VLLM_ACCESS_KEY=KEY, VLLM_BATCH_MODEL_WAIT_SECONDS="1")
    server.launch_ready(model="org/alpha", gpu_ids=[0])
    client = client_for(server)
    lines = [chat_line(f"req-{i}", "org/alpha") for i in range(20)]
    lines[7] = chat_line("req-7", "no-such-model")
    batch = submit(client, jsonl(lines))
    assert batch.status == "validating"

    done = wait_for_batch(client, batch.id)

    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (20, 19)
    assert done.request_counts.failed == 1
    assert None not in (done.in_progress_at, done.finalizing_at, done.completed_at)
    output = result_lines(client, done.output_file_id)
    errors = result_lines(client, done.error_file_id)
    assert sorted(line["custom_id"] for line in output + errors) == sorted(
        f"req-{i}" for i in range(20)
    )
    answer = next(line for line in output if line["custom_id"] == "req-3")
    assert answer["error"] is None
    assert answer["response"]["status_code"] == 200
    assert answer["response"]["body"]["choices"][0]["message"]["content"] == " tok0 tok1"
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("req-7", "model_not_found")]
    assert client.batches.list().data[0].id == batch.id
    listed = {file.id: file.purpose for file in client.files.list()}
    assert listed[done.output_file_id] == "batch_output"
    assert listed[batch.input_file_id] == "batch"


def test_an_embeddings_batch(start_server: ServerFactory) -> None:
    server = start_server()
    server.launch_ready(model="org/embed", gpu_ids=[0])
    client = client_for(server)
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "org/embed", "input": f"text {i}"},
        }
        for i in range(5)
    ]
    done = wait_for_batch(client, submit(client, jsonl(lines), "/v1/embeddings").id)
    assert done.status == "completed"
    output = result_lines(client, done.output_file_id)
    assert len(output) == 5
    assert all(len(o["response"]["body"]["data"][0]["embedding"]) == 8 for o in output)


def test_a_malformed_file_fails_with_line_numbers(start_server: ServerFactory) -> None:
    server = start_server()
    client = client_for(server)
    good = json.dumps(chat_line("a", "m"))
    content = "\n".join(
        [
            good,
            "{not json",
            json.dumps({**chat_line("b", "m"), "url": "/v1/completions"}),
            json.dumps(chat_line("a", "m")),
            json.dumps(chat_line("c", "m", stream=True)),
            json.dumps(
                {
                    "custom_id": "d",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"messages": []},
                }
            ),
            json.dumps({**chat_line("e", "m"), "method": "GET"}),
        ]
    ).encode()
    done = wait_for_batch(client, submit(client, content).id)
    assert done.status == "failed"
    assert done.errors is not None
    found = [(error.line, error.code) for error in done.errors.data or []]
    assert found == [
        (2, "invalid_json_line"),
        (3, "mismatched_url"),
        (5, "unsupported_stream"),
        (6, "missing_model"),
        (7, "invalid_method"),
        (4, "duplicate_custom_id"),
    ]
    assert done.failed_at is not None


def test_an_empty_file_fails(start_server: ServerFactory) -> None:
    server = start_server()
    client = client_for(server)
    done = wait_for_batch(client, submit(client, b"\n\n").id)
    assert done.status == "failed"
    assert done.errors is not None
    assert [error.code for error in done.errors.data or []] == ["empty_file"]


def test_transient_answers_are_retried(start_server: ServerFactory) -> None:
    server = start_server()
    launch = server.launch_ready(model="org/flaky", gpu_ids=[0])
    client = client_for(server)
    done = wait_for_batch(client, submit(client, jsonl([chat_line("x", "org/flaky")])).id)
    assert done.status == "completed"
    assert result_lines(client, done.output_file_id)[0]["response"]["status_code"] == 200
    assert standin_stats(server, launch["launch_id"])["prompts"] == {'"x"': 3}


def test_dropped_connections_are_retried_then_reported(start_server: ServerFactory) -> None:
    server = start_server()
    launch = server.launch_ready(model="org/resets", gpu_ids=[0])
    client = client_for(server)
    done = wait_for_batch(client, submit(client, jsonl([chat_line("x", "org/resets")])).id)
    assert done.status == "completed"
    (error,) = result_lines(client, done.error_file_id)
    assert error["error"]["code"] == "upstream_unavailable"
    assert "5 tries" in error["error"]["message"]
    # Each try reached the stand-in once on a fresh connection; a try that first took an idle
    # connection (left by a /metrics read) was replayed fresh by the pool, and shows twice.
    stats = standin_stats(server, launch["launch_id"])
    assert stats["fresh_prompts"] == {'"x"': 5}
    assert 5 <= stats["prompts"]['"x"'] <= 10


def test_a_line_without_an_answer_is_sent_again_then_reported_as_timed_out(
    start_server: ServerFactory,
) -> None:
    server = start_server(VLLM_BOOTSTRAP_BATCH_REQUEST_TIMEOUT_SECONDS="0.5")
    launch = server.launch_ready(model="org/wedged", gpu_ids=[0])
    client = client_for(server)
    lines = [chat_line("a", "org/wedged"), chat_line("b", "org/wedged")]
    done = wait_for_batch(client, submit(client, jsonl(lines)).id)
    assert done.status == "completed"
    errors = result_lines(client, done.error_file_id)
    assert sorted(error["custom_id"] for error in errors) == ["a", "b"]
    for error in errors:
        assert error["error"]["code"] == "request_timeout"
        assert "no answer within 0.5 s (2 tries" in error["error"]["message"]
    stats = standin_stats(server, launch["launch_id"])
    assert stats["prompts"] == {'"a"': 2, '"b"': 2}  # sent once more, not five times
    eventually(lambda: standin_stats(server, launch["launch_id"])["aborted"] == 4)


def test_a_batch_sets_its_own_request_timeout_in_its_metadata(
    start_server: ServerFactory,
) -> None:
    server = start_server()  # the default timeout is ten minutes
    server.launch_ready(model="org/wedged", gpu_ids=[0])
    client = client_for(server)
    urgent = {"request_timeout_seconds": "0.3"}
    done = wait_for_batch(
        client, submit(client, jsonl([chat_line("a", "org/wedged")]), metadata=urgent).id
    )
    assert done.status == "completed"
    [error] = result_lines(client, done.error_file_id)
    assert "no answer within 0.3 s" in error["error"]["message"]
    for bad in ["soon", "1e-300", "0", "86401", "\u0661\u0662"]:  # "١٢": not ASCII digits
        with pytest.raises(openai.BadRequestError, match="request_timeout_seconds must be"):
            submit(client, jsonl([chat_line("b", "m")]), metadata={"request_timeout_seconds": bad})


def _priorities_after(server: Server, launch_id: str, metadata: dict[str, str] | None) -> dict:
    client = client_for(server)
    lines = [
        chat_line("a", "m"),
        chat_line("b", "m", priority=-5),  # a line's own priority wins
    ]
    done = wait_for_batch(client, submit(client, jsonl(lines), metadata=metadata).id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert done.request_counts.completed == 2
    live = server.client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "live"}]},
    )
    assert live.status_code == 200
    return dict(standin_stats(server, launch_id)["priorities"])


def test_batch_lines_yield_to_live_ones_under_vllms_priority_scheduling(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    launch = server.launch_ready(model="m", gpu_ids=[0], priority_scheduling=True)
    assert launch["extra_args"][-2:] == ["--scheduling-policy", "priority"]
    priorities = _priorities_after(server, launch["launch_id"], None)
    assert priorities == {'"a"': 1, '"b"': -5, '"live"': 0}
    contradicting = {"priority_scheduling": True, "extra_args": ["--scheduling-policy", "fcfs"]}
    refused = server.client.post("/launch", json={"model": "m", "gpu_ids": [1], **contradicting})
    assert refused.status_code == 422
    assert "contradicts --scheduling-policy 'fcfs'" in refused.text


def test_a_profile_turns_on_priority_scheduling_with_one_field(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    body = {"model": "org/m", "priority_scheduling": True}
    assert server.client.put("/models/m", json=body).status_code == 200
    assert server.client.get("/models/m").json()["priority_scheduling"] is True
    loaded = server.client.post("/models/m/load", params={"wait": True}, timeout=30)
    assert loaded.status_code == 200, loaded.text
    launch_id = server.client.get("/models/m").json()["status"]["launch_id"]
    launch = server.client.get(f"/status/{launch_id}").json()
    assert "--scheduling-policy" in launch["extra_args"]
    assert _priorities_after(server, launch_id, None) == {'"a"': 1, '"b"': -5, '"live"': 0}


def test_an_urgent_batch_does_not_yield(start_server: ServerFactory) -> None:
    server = start_server()
    launch = server.launch_ready(
        model="m", gpu_ids=[0], extra_args=["--scheduling-policy=priority"]
    )
    priorities = _priorities_after(server, launch["launch_id"], {"priority": "live"})
    assert priorities == {'"a"': 0, '"b"': -5, '"live"': 0}
    client = client_for(server)
    with pytest.raises(openai.BadRequestError, match=r"metadata\.priority must be one of"):
        submit(client, jsonl([chat_line("c", "m")]), metadata={"priority": "asap"})


def test_without_priority_scheduling_batch_lines_say_no_priority(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    launch = server.launch_ready(model="m", gpu_ids=[0])
    client = client_for(server)
    done = wait_for_batch(client, submit(client, jsonl([chat_line("a", "m")])).id)
    assert done.request_counts is not None
    assert done.request_counts.completed == 1
    # vLLM refuses a priority other than 0 without priority scheduling: none was sent.
    assert standin_stats(server, launch["launch_id"])["priorities"] == {'"a"': 0}


def test_each_launch_is_kept_at_its_in_flight_limit(start_server: ServerFactory) -> None:
    server = start_server(VLLM_BATCH_IN_FLIGHT_PER_LAUNCH="12", FAKE_VLLM_LATENCY_SECONDS="0.3")
    replicas = [server.launch_ready(model="org/alpha", gpu_ids=[gpu]) for gpu in (0, 1)]
    client = client_for(server)
    lines = [chat_line(f"r{i}", "org/alpha") for i in range(120)]
    done = wait_for_batch(client, submit(client, jsonl(lines)).id)
    assert done.status == "completed"
    for replica in replicas:
        stats = standin_stats(server, replica["launch_id"])
        assert stats["peak_running"] == 12
        assert stats["requests_total"] == 60


def test_a_batch_waits_for_a_model_that_becomes_ready_later(start_server: ServerFactory) -> None:
    server = start_server(FAKE_VLLM_LOAD_SECONDS="1.5")
    client = client_for(server)
    batch = submit(client, jsonl([chat_line(f"r{i}", "org/late") for i in range(5)]))
    wait_for_batch(client, batch.id, {"in_progress"})
    server.launch(model="org/late", gpu_ids=[0])
    done = wait_for_batch(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert done.request_counts.completed == 5


def test_cancel_aborts_in_flight_requests_and_keeps_what_finished(
    start_server: ServerFactory,
) -> None:
    server = start_server(VLLM_BATCH_IN_FLIGHT_PER_LAUNCH="4", FAKE_VLLM_LATENCY_SECONDS="0.4")
    launch = server.launch_ready(model="org/alpha", gpu_ids=[0])
    client = client_for(server)
    batch = submit(client, jsonl([chat_line(f"r{i}", "org/alpha") for i in range(40)]))
    eventually(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 4)  # type: ignore[union-attr]

    cancelling = client.batches.cancel(batch.id)

    assert cancelling.status == "cancelling"
    done = wait_for_batch(client, batch.id)
    assert done.status == "cancelled"
    assert done.cancelled_at is not None
    output = result_lines(client, done.output_file_id)
    errors = result_lines(client, done.error_file_id)
    assert 4 <= len(output) < 40
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert Counter(line["custom_id"] for line in output + errors) == Counter(
        f"r{i}" for i in range(40)
    )

    def aborted_and_idle() -> bool:
        stats = standin_stats(server, launch["launch_id"])
        return stats["aborted"] >= 1 and stats["running"] == 0

    eventually(aborted_and_idle)  # each abort lands on its own: poll until the last did
    assert client.batches.cancel(batch.id).status == "cancelled"  # a retried cancel is fine
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(wait_for_batch(client, submit(client, jsonl([])).id).id)


def test_cancel_gives_every_slot_back(start_server: ServerFactory) -> None:
    server = start_server(VLLM_BATCH_IN_FLIGHT_PER_LAUNCH="4", FAKE_VLLM_LATENCY_SECONDS="0.5")
    launch = server.launch_ready(model="org/alpha", gpu_ids=[0])
    client = client_for(server)
    for attempt in range(3):
        lines = [chat_line(f"{attempt}-{i}", "org/alpha") for i in range(40)]
        batch = submit(client, jsonl(lines))
        eventually(lambda: standin_stats(server, launch["launch_id"])["running"] == 4)
        client.batches.cancel(batch.id)
        assert wait_for_batch(client, batch.id).status == "cancelled"


def test_the_input_of_a_running_batch_cannot_be_deleted(start_server: ServerFactory) -> None:
    server = start_server(FAKE_VLLM_LATENCY_SECONDS="0.5")
    server.launch_ready(model="org/alpha", gpu_ids=[0])
    client = client_for(server)
    batch = submit(client, jsonl([chat_line("r", "org/alpha")]))
    with pytest.raises(openai.ConflictError, match="cancel it first"):
        client.files.delete(batch.input_file_id)
    wait_for_batch(client, batch.id)
    assert client.files.delete(batch.input_file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(batch.input_file_id)


def test_two_batches_share_a_model_fairly(start_server: ServerFactory) -> None:
    server = start_server(VLLM_BATCH_IN_FLIGHT_PER_LAUNCH="4", FAKE_VLLM_LATENCY_SECONDS="0.1")
    server.launch_ready(model="org/alpha", gpu_ids=[0])
    client = client_for(server)
    large = submit(client, jsonl([chat_line(f"a{i}", "org/alpha") for i in range(200)]))
    wait_for_batch(client, large.id, {"in_progress"})
    small = submit(client, jsonl([chat_line(f"b{i}", "org/alpha") for i in range(20)]))
    assert wait_for_batch(client, small.id).status == "completed"
    # Taking turns, the small batch finished after about 40 of the large one's requests.
    still_running = client.batches.retrieve(large.id)
    assert still_running.status == "in_progress"
    assert still_running.request_counts is not None
    assert still_running.request_counts.completed < 150


def test_an_upload_over_the_file_limit_is_refused(start_server: ServerFactory) -> None:
    server = start_server(VLLM_BOOTSTRAP_MAX_FILE_BYTES="2048")
    response = raw_upload(server, b"x" * 4096)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert list((Path(server.env["VLLM_BOOTSTRAP_STATE_DIR"]) / "files").iterdir()) == []

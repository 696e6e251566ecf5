"""Reading a scoped key's usage from the responses it gets, in-process: JSON answers, and
streams cut anywhere, with the usage chunk asked for on the client's behalf taken out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vllm_bootstrap.keys.metering import Meter, usage_in, with_usage_asked

USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
CONTENT = [
    {"choices": [{"index": 0, "delta": {"content": 'say "usage":{"prompt_tokens":99}'}}]},
    {"choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": "length"}]},
]
USAGE_CHUNK = {"choices": [], "usage": USAGE}


def stream_bytes(events: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events) + (
        b"data: [DONE]\n\n"
    )


def relay(chunks: list[bytes], strip: bool, content_type: bytes) -> tuple[bytes, Meter]:
    """What the forwarder sends of a body that came in `chunks`, as it feeds the meter."""
    meter = Meter([(b"x-ratelimit-limit-requests", b"10")])
    meter.strip_usage = strip
    meter.started(200, [(b"Content-Type", content_type)])
    if len(chunks) == 1:  # a body of known length, read whole
        return meter.whole(chunks[0]), meter
    sent = [meter.part(chunk) for chunk in chunks]
    return b"".join([*sent, meter.end()]), meter


def cut_every(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_a_streams_usage_chunk_is_read_and_taken_out_wherever_the_stream_is_cut(
    size: int,
) -> None:
    full = stream_bytes([*CONTENT, USAGE_CHUNK])
    seen, meter = relay(cut_every(full, size), True, b"text/event-stream")
    assert seen == stream_bytes(CONTENT)  # the client never asked for usage
    assert (meter.prompt_tokens, meter.completion_tokens) == (5, 3)
    assert meter.complete


def test_a_usage_chunk_the_client_asked_for_is_kept() -> None:
    full = stream_bytes([*CONTENT, USAGE_CHUNK])
    seen, meter = relay(cut_every(full, 13), False, b"text/event-stream")
    assert seen == full
    assert meter.tokens == 8


@pytest.mark.parametrize("size", [3, 1 << 20])
def test_a_json_answers_usage_is_its_own_not_one_quoted_in_its_text(size: int) -> None:
    answer = json.dumps({"choices": CONTENT, "usage": USAGE, "prompt_logprobs": None}).encode()
    seen, meter = relay(cut_every(answer, size), False, b"application/json")
    assert seen == answer
    assert (meter.prompt_tokens, meter.completion_tokens) == (5, 3)


def test_usage_reads_the_responses_apis_names_and_ignores_details() -> None:
    text = (
        b'{"usage":{"input_tokens":4,"input_tokens_details":{"cached_tokens":2},"output_tokens":6}}'
    )
    assert usage_in(text) == (4, 6)
    assert usage_in(b'{"usage": null}') is None


@pytest.mark.parametrize("stream", [1, "yes", "True", " on ", 1.0])
def test_a_stream_spelled_any_way_vllm_reads_as_true_is_asked_for_its_usage(
    stream: object,
) -> None:
    rewritten = with_usage_asked({"model": "m", "stream": stream})
    assert rewritten is not None
    assert json.loads(rewritten)["stream"] is True
    assert json.loads(rewritten)["stream_options"] == {"include_usage": True}


def test_a_usage_the_client_asked_for_in_its_own_spelling_is_not_asked_again() -> None:
    asked = {"model": "m", "stream": True, "stream_options": {"include_usage": 1}}
    assert with_usage_asked(asked) is None


def test_usage_is_read_past_a_token_whose_text_is_usage_and_past_a_long_tail() -> None:
    logprobs = [{"1": {"decoded_token": "usage", "logprob": -1.0}}] * 5000  # ~250 KB
    answer = json.dumps(
        {"choices": CONTENT, "usage": USAGE, "prompt_logprobs": logprobs}, separators=(",", ":")
    ).encode()
    assert usage_in(answer) == (5, 3)
    seen, meter = relay(cut_every(answer, 4096), False, b"application/json")
    assert seen == answer
    assert (meter.prompt_tokens, meter.completion_tokens) == (5, 3)


def test_the_responses_apis_last_event_is_counted() -> None:
    events = [
        {"type": "response.output_text.delta", "delta": "hi"},
        {
            "type": "response.completed",
            "response": {"usage": {"input_tokens": 9, "output_tokens": 2}},
        },
    ]
    full = b"".join(b"event: x\ndata: " + json.dumps(event).encode() + b"\n\n" for event in events)
    seen, meter = relay(cut_every(full, 50), False, b"text/event-stream")
    assert seen == full
    assert (meter.prompt_tokens, meter.completion_tokens) == (9, 2)


@pytest.mark.parametrize(
    ("payload", "asked"),
    [
        ({"model": "m", "stream": True}, {"include_usage": True}),
        (
            {"model": "m", "stream": True, "stream_options": {"continuous_usage_stats": False}},
            {"continuous_usage_stats": False, "include_usage": True},
        ),
        ({"model": "m", "stream": True, "stream_options": {"include_usage": True}}, None),
        ({"model": "m"}, None),
        ({"model": "m", "stream": False}, None),
        ({"model": "m", "stream": "no"}, None),
        ({"model": "m", "stream": 0}, None),
    ],
)
def test_a_stream_asks_vllm_for_its_usage_only_when_it_does_not_already(
    payload: dict[str, Any], asked: dict[str, Any] | None
) -> None:
    rewritten = with_usage_asked(payload)
    if asked is None:
        assert rewritten is None
    else:
        assert rewritten is not None
        assert json.loads(rewritten) == {**payload, "stream_options": asked}

"""Request lines are parsed exactly as json.loads parses them, and the recorded span of each
member (the body's, in particular) holds exactly that member's bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vllm_bootstrap.batches.jsonl import InvalidLine, parse_line
from vllm_bootstrap.serving.priority import uses_priority_scheduling, with_priority

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(
    line=st.dictionaries(st.text(), values, max_size=5),
    ensure_ascii=st.booleans(),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,  ", " :\t")]),
)
def test_a_line_parses_as_json_loads_and_each_span_holds_its_value(
    line: dict, ensure_ascii: bool, separators: tuple[str, str]
) -> None:
    raw = json.dumps(line, ensure_ascii=ensure_ascii, separators=separators).encode()
    parsed, spans = parse_line(b"  " + raw + b" \r\n")
    assert parsed == json.loads(raw)
    for key, (start, end) in spans.items():
        assert json.loads((b"  " + raw)[start:end]) == parsed[key]


def test_a_repeated_key_keeps_the_last_value_and_its_span() -> None:
    raw = b'{"body": {"a": 1}, "body": {"model": "m"}}'
    parsed, spans = parse_line(raw)
    start, end = spans["body"]
    assert parsed == {"body": {"model": "m"}}
    assert raw[start:end] == b'{"model": "m"}'


def test_a_line_that_is_not_an_object_parses_without_spans() -> None:
    assert parse_line(b"[1, 2]") == ([1, 2], {})


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"a" 1}', b'{"a": 1,}', b'{"a": 1} x', b"{1: 2}", b'{"a": 1', b"\xff", b"[" * 5000],
)
def test_broken_lines_are_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidLine):
        parse_line(raw)


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        (b'{"model": "m"}', {"priority": 1, "model": "m"}),
        (b'  {"model": "m", "priority": -3}', {"priority": -3, "model": "m"}),  # its own wins
        (b"{ }", {"priority": 1}),
        (b'{"messages": [{"role": "user", "content": "{"}]}', None),
    ],
)
def test_a_batch_line_gets_its_priority_spliced_in(body: bytes, sent: dict | None) -> None:
    spliced = json.loads(with_priority(body, 1))
    if sent is None:
        assert spliced == {"priority": 1, **json.loads(body)}
    else:
        assert spliced == sent


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        (b'{"model": "m"}', {"model": "m", "priority": 5}),
        (b'{"model": "m", "priority": -3}  ', {"model": "m", "priority": 5}),  # the key's wins
        (b"{ }", {"priority": 5}),
    ],
)
def test_a_scoped_keys_priority_is_forced_over_the_requests_own(body: bytes, sent: dict) -> None:
    assert json.loads(with_priority(body, 5, forced=True)) == sent


@pytest.mark.parametrize(
    ("extra_args", "uses"),
    [
        (["--scheduling-policy", "priority"], True),
        (["--scheduling-policy=priority"], True),
        (["--scheduling-policy", "fcfs"], False),
        (["--scheduling-policy"], False),
        ([], False),
        (["--scheduling-policy", "priority", "--scheduling-policy", "fcfs"], False),  # last wins
        (["--scheduling_policy", "priority"], True),  # spellings vLLM's parser takes
        (["--scheduling-pol=priority"], True),
    ],
)
def test_priority_scheduling_is_read_from_the_launch_arguments(
    extra_args: list[str], uses: bool
) -> None:
    assert uses_priority_scheduling(extra_args) is uses

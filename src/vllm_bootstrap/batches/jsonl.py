"""Reading one request line: its JSON value, and where its `body` lies in the line.

Validation parses each line once and records the byte span of the `body` member, so that
dispatching sends those bytes as the user wrote them: no second parse, no re-encoding (which
cost an eighth of the batch runner's CPU), and nothing of the body changed on the way.
The top-level object is walked member by member with the standard library's own scanner;
each value is parsed by it exactly as `json.loads` would (a repeated key: the last wins).
"""

from __future__ import annotations

import json
import re
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class InvalidLine(ValueError):
    pass


def parse_line(raw: bytes) -> tuple[Any, dict[str, tuple[int, int]]]:
    """The line's JSON value and, for an object, each member's value span in bytes."""
    try:
        text = raw.decode()
        start = _skip(text, 0)
        if not text.startswith("{", start):
            return json.loads(text), {}
        value, spans, end = _object(text, start)
    except (ValueError, IndexError, RecursionError):
        raise InvalidLine("the line is not valid JSON") from None
    if _skip(text, end) != len(text):
        raise InvalidLine("the line has more after its JSON value")
    if not raw.isascii():  # character positions differ from byte positions
        spans = _in_bytes(text, spans)
    return value, spans


def _object(text: str, index: int) -> tuple[dict[str, Any], dict[str, tuple[int, int]], int]:
    members: dict[str, Any] = {}
    spans: dict[str, tuple[int, int]] = {}
    index = _skip(text, index + 1)
    if text[index] == "}":
        return members, spans, index + 1
    while True:
        if text[index] != '"':
            raise ValueError("a member name must be a string")
        key, index = scanstring(text, index + 1)
        index = _skip(text, index)
        if text[index] != ":":
            raise ValueError("':' expected")
        index = _skip(text, index + 1)
        members[key], end = _DECODER.raw_decode(text, index)
        spans[key] = (index, end)
        index = _skip(text, end)
        if text[index] == "}":
            return members, spans, index + 1
        if text[index] != ",":
            raise ValueError("',' or '}' expected")
        index = _skip(text, index + 1)


def _skip(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _in_bytes(text: str, spans: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Character spans as byte spans, in one pass over the text whatever the member count."""
    positions = sorted({index for span in spans.values() for index in span})
    in_bytes, previous, total = {}, 0, 0
    for index in positions:
        total += len(text[previous:index].encode())
        in_bytes[index], previous = total, index
    return {key: (in_bytes[start], in_bytes[end]) for key, (start, end) in spans.items()}

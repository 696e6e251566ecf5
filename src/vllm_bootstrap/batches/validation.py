"""Checking a batch's input file before anything is sent: all or nothing.

Each line must be `{"custom_id": str, "method": "POST", "url": <the batch's endpoint>,
"body": {"model": str, ...}}`, with custom_ids unique and no `stream: true`. The file is read
a line at a time (a line longer than the limit is skipped over, not read into memory) and
every valid line is recorded as a request row; uniqueness is checked by the database, so
memory stays flat whatever the file's size. A row records where the line's `body` lies in
the file, so that it is sent as written (jsonl.py). Errors carry 1-based line numbers, as
OpenAI's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from vllm_bootstrap.batches.jsonl import InvalidLine, parse_line
from vllm_bootstrap.batches.store import BatchStore, RequestRow, clear_requests, until_written

MAX_ERRORS = 100
ROWS_PER_CHUNK = 1000
# The event loop gets a turn at least this often, whatever the lines are (blank, bad, long).
YIELD_EVERY_LINES = 1000
YIELD_EVERY_BYTES = 4 * 1024 * 1024
# Lines larger than this are decoded in a thread, off the event loop.
DECODE_IN_THREAD_BYTES = 1024 * 1024
MAX_CUSTOM_ID_CHARS = 512
# Each model is a lane with its own task: a batch may name this many.
MAX_MODELS = 64
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass
class Validation:
    total: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, line: int, code: str, message: str, param: str | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})


class _LineError(ValueError):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


async def validate(
    store: BatchStore, batch_id: str, path: Path, endpoint: str, max_line_bytes: int
) -> Validation:
    """Record every line of `path` as a request row of `batch_id`, or say why not."""
    result = Validation()
    chunk: list[RequestRow] = []
    models: set[str] = set()
    pace = _Pace()
    with path.open("rb") as source:
        async for number, offset, raw in _lines(source, max_line_bytes):
            await pace.step(offset)
            if len(result.errors) >= MAX_ERRORS:
                break
            if raw is None:
                result.fail(number, "line_too_long", f"line over {max_line_bytes} bytes")
                continue
            try:
                request, spans = await _decode(raw)
                row = _request_row(number, offset, endpoint, request, spans)
                _check_models(models, row.model)
                chunk.append(row)
            except _LineError as bad:
                result.fail(number, bad.code, bad.message, bad.param)
            if len(chunk) >= ROWS_PER_CHUNK:
                await _record(store, batch_id, chunk, result)
                chunk = []
    await _record(store, batch_id, chunk, result)
    if result.total == 0 and not result.errors:
        result.fail(1, "empty_file", "the input file has no request lines")
    if result.errors:
        await clear_requests(store, batch_id)
    return result


class _Pace:
    """Gives the event loop a turn every so many lines or bytes."""

    def __init__(self) -> None:
        self.lines = 0
        self.next_offset = YIELD_EVERY_BYTES

    async def step(self, offset: int) -> None:
        self.lines += 1
        if self.lines % YIELD_EVERY_LINES == 0 or offset >= self.next_offset:
            self.next_offset = offset + YIELD_EVERY_BYTES
            await asyncio.sleep(0)


async def _decode(raw: bytes) -> tuple[Any, dict[str, tuple[int, int]]]:
    """The line's JSON value and its members' spans, or _LineError."""
    try:
        if len(raw) > DECODE_IN_THREAD_BYTES:
            return await asyncio.to_thread(parse_line, raw)
        return parse_line(raw)
    except InvalidLine as invalid:
        raise _LineError("invalid_json_line", str(invalid)) from None


def _check_models(models: set[str], model: str) -> None:
    if model not in models:
        if len(models) >= MAX_MODELS:
            raise _LineError(
                "too_many_models", f"a batch may name at most {MAX_MODELS} models", "body.model"
            )
        models.add(model)


async def _record(
    store: BatchStore, batch_id: str, rows: list[RequestRow], result: Validation
) -> None:
    if not rows:
        return
    repeated = await until_written(lambda: store.add_requests(batch_id, rows), batch_id)
    by_line = {row.line: row for row in rows}
    for line in repeated:
        result.fail(
            line,
            "duplicate_custom_id",
            f"custom_id {_shown(by_line[line].custom_id)} is used earlier",
            "custom_id",
        )
    result.total += len(rows) - len(repeated)


async def _lines(source: BinaryIO, max_bytes: int):  # type: ignore[no-untyped-def]
    """(line number, offset, bytes or None when too long) for each non-blank line."""
    number, offset = 0, 0
    while True:
        raw = source.readline(max_bytes + 1)
        if not raw:
            return
        number += 1
        start, offset = offset, offset + len(raw)
        if number == 1 and raw.startswith(UTF8_BOM):  # as Windows tools write files
            raw, start = raw[len(UTF8_BOM) :], start + len(UTF8_BOM)
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            offset += await _skip_rest_of_line(source)
            yield number, start, None
            continue
        if raw.strip():
            yield number, start, raw


async def _skip_rest_of_line(source: BinaryIO) -> int:
    skipped = 0
    while True:
        for _ in range(64):  # 4 MiB, then the event loop gets a turn
            piece = source.readline(64 * 1024)
            skipped += len(piece)
            if not piece or piece.endswith(b"\n"):
                return skipped
        await asyncio.sleep(0)


def _shown(text: str) -> str:
    """User text quoted in an error, cut short: errors are stored and listed."""
    return repr(text) if len(text) <= 64 else repr(text[:64]) + "..."


def _request_row(
    number: int, offset: int, endpoint: str, request: Any, spans: dict[str, tuple[int, int]]
) -> RequestRow:
    if not isinstance(request, dict):
        raise _LineError("invalid_json_line", "the line is not a JSON object")
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise _LineError("missing_custom_id", "`custom_id` must be a non-empty string", "custom_id")
    if len(custom_id) > MAX_CUSTOM_ID_CHARS:
        raise _LineError(
            "invalid_custom_id", f"`custom_id` over {MAX_CUSTOM_ID_CHARS} characters", "custom_id"
        )
    if request.get("method") != "POST":
        raise _LineError("invalid_method", '`method` must be "POST"', "method")
    if request.get("url") != endpoint:
        raise _LineError("mismatched_url", f"`url` must be the batch's endpoint, {endpoint}", "url")
    body = request.get("body")
    if not isinstance(body, dict):
        raise _LineError("invalid_body", "`body` must be a JSON object", "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _LineError("missing_model", "`body.model` must name a model", "body.model")
    if body.get("stream"):
        raise _LineError(
            "unsupported_stream", "`body.stream` must not be true in a batch", "body.stream"
        )
    start, end = spans["body"]
    return RequestRow(number, offset + start, end - start, model, custom_id)

"""Sending one request line of a batch to a launch, with retries; the line it leaves behind.

A request goes to a ready launch of its model through the same router as /v1 (so the
least busy replica gets it) and is sent by the same forwarder, which counts it in the usage
ledger (so interactive traffic and idle clocks see the batch's load). Failures that
say nothing about the request itself (connection refused or reset, 429, 502, 503, 504, or
no ready launch for a moment) are retried with backoff; any other answer is final. A request
that gets no answer within the batch's request timeout is cut off (closing its connection
makes vLLM drop it) and sent once more; a second timeout is its final outcome.

A launch that runs vLLM's priority scheduling (`--scheduling-policy priority`) gets each
line with `"priority": BATCH_PRIORITY` added, so vLLM serves live requests (its default
priority, 0) first; a line's own `priority` wins, and an urgent batch adds none. On any
other launch a line may be taken back to make way for live requests (yielding.py): it is
sent again later, and that costs it no attempt.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vllm_bootstrap.batches.yielding import BatchYield
from vllm_bootstrap.keys import ApiKey
from vllm_bootstrap.serving import (
    Forwarder,
    ModelRouter,
    NoReadyReplica,
    UnknownModel,
    uses_priority_scheduling,
    with_priority,
)
from vllm_bootstrap.upstream import UpstreamError, UpstreamResponse

if TYPE_CHECKING:
    from vllm_bootstrap.batches.keyed import KeyedLines

RETRY_STATUSES = frozenset({429, 502, 503, 504})
ATTEMPTS = 5
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 8.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_JSON_HEADERS = [(b"content-type", b"application/json"), (b"accept", b"application/json")]
# vLLM serves lower priorities first; requests that say none have 0.
BATCH_PRIORITY = 1


@dataclass(frozen=True)
class Outcome:
    """The JSON line for the output file (`ok`) or the error file."""

    line: bytes
    ok: bool


@dataclass(frozen=True)
class Retry:
    """Nothing final was learnt: send again later. `counts` is False when the request never
    reached a launch (none was ready), which costs no attempt."""

    code: str
    message: str
    counts: bool = True
    last_chance: bool = False  # the next attempt is the final one (after a timeout)


class _TooLarge(Exception):
    pass


class RequestSender:
    def __init__(
        self,
        router: ModelRouter,
        forwarder: Forwarder,
        yielding: BatchYield,
        keyed: KeyedLines,
    ) -> None:
        self._router = router
        self._forwarder = forwarder
        self._yield = yielding
        self.keyed = keyed  # the lines of scoped keys' batches wait for their key's turn

    async def attempt(
        self,
        custom_id: str,
        model: str,
        url: str,
        body: bytes,
        request_id: str,
        final: bool,
        timeout: float,
        urgent: bool = False,
        tries: int = ATTEMPTS,
        key: ApiKey | None = None,
    ) -> Outcome | Retry:
        """Send once, waiting at most `timeout` seconds for the whole answer. A retryable
        answer is final when `final` (the last attempt, try number `tries`); an `urgent`
        line does not yield to live requests. A scoped `key`'s line reaches only its models,
        at its priority."""
        if key is not None and not key.allows_model(model):
            message = f"The model `{model}` does not exist"
            return error_outcome(request_id, custom_id, "model_not_found", message)
        try:
            launch = self._router.choose(model, None if urgent else self._yield.has_room)
        except (UnknownModel, NoReadyReplica):
            return Retry("model_not_found", f"no ready launch serves {model!r}", counts=False)
        headers = [*_JSON_HEADERS, (b"x-request-id", request_id.encode())]
        prioritised = uses_priority_scheduling(launch.extra_args)
        if prioritised and key is not None:  # the key's priority, not what its lines say
            body = with_priority(body, key.priority + (0 if urgent else BATCH_PRIORITY), True)
        elif prioritised and not urgent:
            body = with_priority(body, BATCH_PRIORITY)
        line = None if urgent or prioritised else self._yield.track(launch)
        try:
            async with asyncio.timeout(timeout) as deadline:
                if line is not None:
                    line.deadline = deadline
                async with self._forwarder.request(
                    launch, "batch", model, url.encode(), headers, body, live=urgent
                ) as response:
                    status, payload = response.status, await _read_capped(response)
        except TimeoutError:
            if line is not None and line.taken_back:
                message = f"taken back from launch {launch.launch_id} for live requests"
                return Retry("made_way", message, counts=False)
            message = f"launch {launch.launch_id} gave no answer within {timeout:g} s"
            if final:
                message = f"{message} ({tries} tries; the batch's request timeout)"
                return error_outcome(request_id, custom_id, "request_timeout", message)
            return Retry("request_timeout", message, last_chance=True)
        except UpstreamError as exc:
            message = f"launch {launch.launch_id} did not answer: {exc}"
            if final:
                message = f"{message} ({tries} tries)"
                return error_outcome(request_id, custom_id, "upstream_unavailable", message)
            return Retry("upstream_unavailable", message)
        except _TooLarge:
            message = f"the response was over {MAX_RESPONSE_BYTES} bytes"
            return error_outcome(request_id, custom_id, "response_too_large", message)
        finally:
            if line is not None:
                self._yield.untrack(line)
        if status in RETRY_STATUSES and not final:
            return Retry("upstream_unavailable", f"launch {launch.launch_id} answered {status}")
        return response_outcome(request_id, custom_id, status, payload)


async def _read_capped(response: UpstreamResponse) -> bytes:
    body = await response.read_at_most(MAX_RESPONSE_BYTES)
    if body is None:
        raise _TooLarge
    return body


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt number `attempt` (1 = the first retry), jittered."""
    delay = min(FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
    return delay * random.uniform(0.75, 1.25)


def response_outcome(request_id: str, custom_id: str, status: int, payload: bytes) -> Outcome:
    """OpenAI's result line for an answer; the body spliced in as vLLM wrote it when it is
    one line of JSON (parsing it checks that; writing it again would cost as much again)."""
    try:
        parsed = json.loads(payload)
        body = payload if b"\n" not in payload else json.dumps(parsed).encode()
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = json.dumps(payload.decode(errors="replace")).encode()
    line = b"".join(
        (
            b'{"id":"',
            request_id.encode(),
            b'","custom_id":',
            json.dumps(custom_id).encode(),
            b',"response":{"status_code":',
            str(status).encode(),
            b',"request_id":"',
            request_id.encode(),
            b'","body":',
            body,
            b'},"error":null}\n',
        )
    )
    return Outcome(line, 200 <= status < 300)


def error_outcome(request_id: str, custom_id: str, code: str, message: str) -> Outcome:
    line = {
        "id": request_id,
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
    return Outcome(json.dumps(line).encode() + b"\n", False)


def request_id(batch_id: str, line: int) -> str:
    """The id of a batch's request line: unique, and the same when it is sent again."""
    return f"batch_req_{batch_id.removeprefix('batch_')}_{line}"

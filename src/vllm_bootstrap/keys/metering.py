"""Reading a response's token usage as it passes, for a scoped key's requests.

A JSON answer carries `usage` at its end (vLLM writes it after the choices); a stream carries
it in one chunk with no choices just before `data: [DONE]`, when the request asked for it
(`stream_options.include_usage`). /v1 asks for it on a scoped key's streams (openai.py);
when the client had not, that chunk is taken out here, before the client sees it.
"""

from __future__ import annotations

import json
import re

# vLLM's own order (and OpenAI's), read in one match: prompt, total, completion tokens.
_USUAL_USAGE = re.compile(
    rb'"usage"\s*:\s*\{\s*"prompt_tokens"\s*:\s*(\d{1,12})\s*,\s*'
    rb'(?:"total_tokens"\s*:\s*\d{1,12}\s*,\s*)?"completion_tokens"\s*:\s*(\d{1,12})'
)
# Any other: after a "usage" key, the object it names (a null one counts nothing), and
# after a count's name, its number.
_OBJECT_FOLLOWS = re.compile(rb"\s*:\s*\{")
_KEY_FOLLOWS = re.compile(rb"\s*:")
_USAGE_OBJECT = re.compile(rb'(?<!\\)"usage"\s*:\s*\{')
_NUMBER_FOLLOWS = re.compile(rb"\s*:\s*(\d{1,12})")
# The counts come first in the object; what follows them (the details objects) is not read.
USAGE_BYTES = 1024
# A chunked JSON answer is read for usage in its last part only.
TAIL_BYTES = 64 * 1024


def usage_in(text: bytes) -> tuple[int, int] | None:
    """(prompt, completion) tokens of the last `usage` object in the JSON `text`, if any.
    Searched from the end, where vLLM writes it; a quote inside a string is escaped, so a
    `"usage"` after a backslash is text, not a key. No parsing: this runs for every answer
    a scoped key gets (one search and one match, in vLLM's usual order)."""
    end = len(text)
    while (at := text.rfind(b'"usage"', 0, end)) >= 0:
        end = at
        if at and text[at - 1] == 0x5C:  # a backslash: inside a string
            continue
        usual = _USUAL_USAGE.match(text, at)
        if usual is not None:
            return int(usual[1]), int(usual[2])
        if _KEY_FOLLOWS.match(text, at + 7) is None:
            continue  # "usage" as a string's whole value (a token's text), not a key
        found = _OBJECT_FOLLOWS.match(text, at + 7)
        if found is None:
            return None  # "usage": null
        start, stop = found.end(), found.end() + USAGE_BYTES
        prompt = _count(text, b'"prompt_tokens"', start, stop)
        if prompt is None:
            prompt = _count(text, b'"input_tokens"', start, stop)
        completion = _count(text, b'"completion_tokens"', start, stop)
        if completion is None:
            completion = _count(text, b'"output_tokens"', start, stop)
        return prompt or 0, completion or 0
    return None


def _count(text: bytes, name: bytes, start: int, stop: int) -> int | None:
    at = text.find(name, start, stop)
    if at < 0:
        return None
    number = _NUMBER_FOLLOWS.match(text, at + len(name))
    return int(number[1]) if number else None


class Meter:
    """One scoped key's request, as the forwarder relays its answer: the status, the headers
    to add to it, the usage read from its body, and (`strip_usage`) the usage chunk taken
    out of a stream. Called by the forwarder itself, not wrapped around `send`: a wrapper
    cost every message a coroutine and a copy."""

    __slots__ = (
        "_held",
        "_stream",
        "_window",
        "complete",
        "completion_tokens",
        "headers",
        "model",
        "prompt_tokens",
        "status",
        "strip_usage",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers  # added to the response (the key's x-ratelimit-*)
        self.status: int | None = None
        self.complete = False
        self.model = "-"
        self.strip_usage = False
        self.prompt_tokens = 0
        self.completion_tokens = 0
        # Whether the body is server-sent events; the response's headers until that is known.
        self._stream: bool | list[tuple[bytes, bytes]] = False
        self._held = b""  # a stream's unfinished event, or a JSON answer's tail
        self._window = b""  # a JSON answer in parts: from its last "usage" on

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def answered(self, status: int) -> None:
        """Answered by the control plane itself (GET /v1/models), whole."""
        self.status, self.complete = status, True

    def started(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """The response starts with `status` and (vLLM's) `headers` (read only if its body
        comes in parts: most answers come whole, and need no more than their status)."""
        self.status = status
        self._stream = headers

    def whole(self, body: bytes) -> bytes:
        """The whole body, in one piece; what of it to send."""
        self.complete = True
        if body[:1] == b"{":  # JSON (vLLM's answers start so): its headers need no reading
            self._note(usage_in(body))
            return body
        if isinstance(self._stream, list):
            self._stream = _is_event_stream(self._stream)
        return self._events(body, more=False) if self._stream else body

    def part(self, chunk: bytes) -> bytes:
        """A part of the body as it came; what of it to send on."""
        if isinstance(self._stream, list):
            self._stream = _is_event_stream(self._stream)
        if self._stream:
            return self._events(chunk, more=True)
        if b'"usage"' in chunk or self._window:
            self._watch_usage(chunk)
        self._held = (self._held + chunk)[-TAIL_BYTES:]
        return chunk

    def _watch_usage(self, chunk: bytes) -> None:
        """A JSON answer in parts: the bytes from its last "usage" on (and a little before,
        for a name cut between parts), so that what vLLM writes after its usage (prompt
        logprobs, token ids), however long, cannot push it out of sight."""
        text = self._held[-16:] + chunk if not self._window else self._window + chunk
        starts = [found.start() for found in _USAGE_OBJECT.finditer(text)]
        if starts:
            self._window = text[max(starts[-1] - 1, 0) :][: USAGE_BYTES + 64]
        elif len(self._window) < USAGE_BYTES + 64:
            self._window = text[: USAGE_BYTES + 64]

    def end(self) -> bytes:
        """The body is over; what is left to send (a stream's held part)."""
        self.complete = True
        if isinstance(self._stream, list):
            self._stream = _is_event_stream(self._stream)
        if self._stream:
            return self._events(b"", more=False)
        self._note(usage_in(self._held) or usage_in(self._window))
        return b""

    def _events(self, body: bytes, more: bool) -> bytes:
        """The complete events of what came so far, the usage chunk left out if asked; an
        unfinished one is held until its end comes (vLLM writes whole events)."""
        text = self._held + body if self._held else body
        last = text.rfind(b"\n\n")
        end = last + 2 if last >= 0 else 0
        if more:
            text, self._held = text[:end], text[end:]
        else:
            self._held = b""
        if b'"usage"' not in text:
            return text
        kept = []
        for event in text.split(b"\n\n"):
            usage = usage_in(event)
            if usage is not None and b'"choices":[]' in event.replace(b" ", b""):
                self._note(usage)  # chat and completions: the chunk asked for usage
                if self.strip_usage:
                    continue
            elif usage is not None and b'"response.completed"' in event:
                self._note(usage)  # the Responses API: its last event
            kept.append(event)
        return b"\n\n".join(kept)

    def _note(self, usage: tuple[int, int] | None) -> None:
        if usage is not None:
            self.prompt_tokens, self.completion_tokens = usage


def _is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"content-type" and value.startswith(b"text/event-stream")
        for name, value in headers
    )


# What vLLM's request models (pydantic, lax) read as true.
_TRUE_TEXTS = frozenset({"1", "true", "t", "yes", "y", "on"})


def as_flag(value: object) -> bool:
    """`value` as vLLM will read a boolean field: a client must not stream past the meter
    by writing `"stream": 1` or `"stream": "yes"`."""
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_TEXTS
    return value is True or (isinstance(value, int | float) and value == 1)


def with_usage_asked(payload: dict[str, object]) -> bytes | None:
    """The request body again with `stream_options.include_usage` set, when it streams
    without asking for usage; None when it needs nothing added."""
    if not as_flag(payload.get("stream")):
        return None
    options = payload.get("stream_options")
    if isinstance(options, dict) and as_flag(options.get("include_usage")):
        return None
    asked = (
        {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    )
    return json.dumps({**payload, "stream": True, "stream_options": asked}).encode()

"""Reading a response's token usage as it passes, for a scoped key's requests.

A JSON answer carries `usage` at its end (vLLM writes it after the choices); a stream carries
it in one chunk with no choices just before `data: [DONE]`, when the request asked for it
(`stream_options.include_usage`). /v1 asks for it on a scoped key's streams (openai.py);
when the client had not, that chunk is taken out here, before the client sees it.
"""

from __future__ import annotations

import json
import re

from starlette.types import Message, Send

# The last "usage" key of a JSON text; a quote inside a string is escaped, so one that is
# not preceded by a backslash is the document's own.
_USAGE = re.compile(rb'(?<!\\)"usage"\s*:\s*\{')
# Its counts come first; what follows them (the details objects) is not read.
USAGE_BYTES = 1024
_PROMPT = re.compile(rb'"(?:prompt_tokens|input_tokens)"\s*:\s*(\d{1,12})')
_COMPLETION = re.compile(rb'"(?:completion_tokens|output_tokens)"\s*:\s*(\d{1,12})')
# A chunked JSON answer is read for usage in its last part only.
TAIL_BYTES = 64 * 1024
STRIP_USAGE_KEY = "vllm_bootstrap.strip_usage"


def usage_in(text: bytes) -> tuple[int, int] | None:
    """(prompt, completion) tokens of the last usage object in `text`, if any."""
    found = None
    for found in _USAGE.finditer(text):  # noqa: B007 (the last one is wanted)
        pass
    if found is None:
        return None
    inner = text[found.end() : found.end() + USAGE_BYTES]
    prompt = _PROMPT.search(inner)
    completion = _COMPLETION.search(inner)
    return (
        int(prompt.group(1)) if prompt else 0,
        int(completion.group(1)) if completion else 0,
    )


class Meter:
    """Wraps `send` for one request: notes the status, adds headers to the response's
    start, reads the usage and (`strip_usage`) takes the usage chunk out of a stream."""

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self._headers = headers
        self.status: int | None = None
        self.complete = False
        self.model = "-"
        self.strip_usage = False
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._stream = False
        self._held = b""  # a stream's unfinished event, or a JSON answer's tail

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", ()):
                if name.lower() == b"content-type":
                    self._stream = value.startswith(b"text/event-stream")
            if self._headers:
                message = {**message, "headers": [*message.get("headers", ()), *self._headers]}
            await self._send(message)
            return
        if message["type"] != "http.response.body":
            await self._send(message)
            return
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        if self._stream:
            body = self._events(body, more)
        else:
            self._read_json(body, more)
        if not more:
            self.complete = True
        if body or not more:
            await self._send({**message, "body": body})

    def _read_json(self, body: bytes, more: bool) -> None:
        if more or self._held:
            self._held = (self._held + body)[-TAIL_BYTES:]
            body = self._held
        if not more:
            self._note(usage_in(body))

    def _events(self, body: bytes, more: bool) -> bytes:
        """The complete events of what came so far, the usage chunk left out if asked; an
        unfinished one is held until its end comes (vLLM writes whole events)."""
        text = self._held + body if self._held else body
        end = text.rfind(b"\n\n") + 2
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
                self._note(usage)
                if self.strip_usage:
                    continue
            kept.append(event)
        return b"\n\n".join(kept)

    def _note(self, usage: tuple[int, int] | None) -> None:
        if usage is not None:
            self.prompt_tokens, self.completion_tokens = usage


def with_usage_asked(payload: dict[str, object]) -> bytes | None:
    """The request body again with `stream_options.include_usage` set, when it streams
    without asking for usage; None when it needs nothing added."""
    if payload.get("stream") is not True:
        return None
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    asked = (
        {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    )
    return json.dumps({**payload, "stream_options": asked}).encode()

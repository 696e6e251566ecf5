"""Plain ASGI helpers shared by the layers that run before (or instead of) FastAPI:
a request header, JSON responses and reading request bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable

from starlette.types import Message, Receive, Scope, Send


class ClientGone(Exception):
    """The client disconnected before its request was complete."""


class BodyTooLarge(Exception):
    """The request body is longer than the reader allows."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header `name` (lower case, as ASGI gives names)."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def send_json(
    send: Send, status: int, payload: object, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_body(
    receive: Receive,
    max_bytes: int | None = None,
    charge: Callable[[int], None] | None = None,
) -> bytes:
    """The whole request body. Past `max_bytes` it stops reading and raises BodyTooLarge,
    so an oversized upload costs at most that much memory. `charge` is told each part's
    size before it is kept (it may raise to refuse it)."""
    first = await _next_part(receive)
    body = bytes(first.get("body", b""))
    if charge is not None:
        charge(len(body))
    if first.get("more_body", False):
        buffer = bytearray(body)
        async for part in _rest(receive):
            if charge is not None:
                charge(len(part))
            buffer += part
            if max_bytes is not None and len(buffer) > max_bytes:
                raise BodyTooLarge
        body = bytes(buffer)
    if max_bytes is not None and len(body) > max_bytes:
        raise BodyTooLarge
    return body


async def body_or_stream(receive: Receive) -> bytes | AsyncIterator[bytes]:
    """The whole body if it came in one message (the common case), else a stream of it."""
    first = await _next_part(receive)
    if not first.get("more_body", False):
        return bytes(first.get("body", b""))
    return _stream(first, receive)


async def _stream(first: Message, receive: Receive) -> AsyncIterator[bytes]:
    yield first.get("body", b"")
    async for part in _rest(receive):
        yield part


async def _rest(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await _next_part(receive)
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _next_part(receive: Receive) -> Message:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    return message

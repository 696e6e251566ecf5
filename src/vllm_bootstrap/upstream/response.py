"""One exchange on a connection: the response as it arrives, and who owns the connection.

The response owns its connection until the body has been read to the end, when it hands a
reusable connection back to its pool, or until it is closed (`aclose`, or leaving
`async with`): a connection whose response was not read to the end is closed, never reused.
Callers never handle connections.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import httptools

# Response bytes buffered before the upstream is asked to pause, and resumed below a quarter.
HIGH_WATER_BYTES = 1024 * 1024


class UpstreamError(ConnectionError):
    """The upstream refused, reset or broke the connection."""


class ExchangeConnection(Protocol):
    """What an exchange needs of the connection it runs on (connection.py has the real one)."""

    exchange: Any

    @property
    def is_open(self) -> bool: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


class _UnrequestedResponse(Exception):
    """Bytes of a response nobody asked for arrived on the connection."""


class _FinishedParser:
    """Stands in for the parser once the exchange is over; any late bytes are an error."""

    def feed_data(self, data: bytes) -> None:
        raise httptools.HttpParserError("data after the exchange ended")


_NO_PARSER = _FinishedParser()


class UpstreamResponse:
    """Status and raw headers once they arrived; the body as it arrives."""

    def __init__(
        self, connection: ExchangeConnection, head_only: bool, release: Callable[[Any], None]
    ) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.received_any = False
        self._connection = connection
        self._release = release
        self._head_only = head_only
        self._parser: httptools.HttpResponseParser | _FinishedParser = httptools.HttpResponseParser(
            self
        )
        self._headers_arrived = asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: Exception | None = None
        self._keep_alive = False
        self._closed = False
        self._message_began = False
        self._interim = False

    # --- the caller's side ----------------------------------------------------------------

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._next_chunk()
            if chunk is None:
                return
            yield chunk

    async def read(self) -> bytes:
        if self._complete and self._error is None:
            # Small answers usually arrive whole with their headers: no waiting, no iterator.
            body = b"".join(self._chunks)
            self._chunks.clear()
            self._close()
            return body
        return b"".join([chunk async for chunk in self.chunks()])

    async def read_at_most(self, limit: int) -> bytes | None:
        """The whole body, or None once it says or proves to be over `limit` bytes."""
        if self.content_length is not None and self.content_length > limit:
            return None
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                return None
            parts.append(chunk)
        return b"".join(parts)

    async def aclose(self) -> None:
        self._close()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._close()

    async def headers_arrived(self) -> None:
        await self._headers_arrived

    async def _next_chunk(self) -> bytes | None:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                self._close()
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered <= HIGH_WATER_BYTES // 4:
            self._connection.resume_reading()
        return chunk

    def _close(self) -> None:
        """Give the connection back if the exchange ended cleanly, else close it."""
        if self._closed:
            return
        self._closed = True
        # The parser calls back into this response: dropping it breaks that reference cycle,
        # so a finished exchange is freed at once instead of waiting for the cyclic GC
        # (it was 11 objects a request).
        self._parser = _NO_PARSER
        connection = self._connection
        connection.exchange = None
        # Reused only once everything that arrived was read: unread bytes mean an abandoned
        # response, and its connection may still have reading paused.
        reusable = (
            self._complete
            and not self._chunks
            and self._error is None
            and self._keep_alive
            and connection.is_open
        )
        if reusable:
            connection.resume_reading()
            self._release(connection)
        else:
            connection.close()

    # --- the connection's side ------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._keep_alive = False
            self._fail(UpstreamError(f"malformed response from vLLM: {exc}"))
            self._connection.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # Without a length or chunking, a body ends when the connection does.
        if (
            self.status
            and not self._complete
            and self.content_length is None
            and not _is_chunked(self.headers)
        ):
            self._finish()
            return
        self._fail(UpstreamError(f"vLLM closed the connection ({exc or 'end of stream'})"))

    # --- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._interim:
            self._interim = False  # the final response follows its 1xx
            return
        if self._message_began:
            # A second response on one request: the upstream's framing cannot be trusted.
            # Parsing stops here and the connection is never reused.
            raise _UnrequestedResponse
        self._message_began = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if name.lower() == b"content-length" and value.strip().isdigit():
            self.content_length = int(value)

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim response (103 Early Hints, 100 Continue): not ours to relay, and its
            # headers are not the final response's.
            self._interim = True
            self.headers = []
            self.content_length = None
            return
        self.status = status
        # Asked now: once the message is complete the parser has reset and no longer knows.
        self._keep_alive = self._parser.should_keep_alive()
        if not self._headers_arrived.done():
            self._headers_arrived.set_result(None)
        if self._head_only:
            # A HEAD response has no body whatever its headers say; the parser cannot be
            # told so, and this connection is not reused.
            self._keep_alive = False
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER_BYTES:
            self._connection.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self._interim:
            self._finish()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: Exception) -> None:
        if self._complete:
            return
        self._error = error
        if not self._headers_arrived.done():
            self._headers_arrived.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _is_chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
        for name, value in headers
    )

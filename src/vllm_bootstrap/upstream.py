"""A small HTTP/1.1 client for the proxy's upstream requests, built for one job.

The proxy talks to vLLM servers on this machine, over plain HTTP/1.1, with raw headers that
it passes through untouched. A general-purpose client spends most of its time on what that
job does not need (URL objects, header dictionaries, cookie jars, redirects, automatic
headers): with aiohttp its client machinery was a third of the proxy's CPU under load. This
one writes the request head as bytes, parses the response with httptools (the parser uvicorn
uses), keeps idle connections per upstream, and relays body chunks as they arrive, with flow
control both ways.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import cast

import httptools

from vllm_bootstrap.ports import url_host

# vLLM's HTTP server closes idle connections after 5 s; one it is about to close fails the
# request that reuses it, so idle connections are retired sooner.
IDLE_SECONDS = 3.0
MAX_IDLE_PER_UPSTREAM = 256
# Response bytes buffered before the upstream is asked to pause.
HIGH_WATER_BYTES = 1024 * 1024


class UpstreamError(ConnectionError):
    """The upstream refused, reset or broke the connection."""


class UpstreamResponse:
    """Status and raw headers once they arrived; the body as it arrives."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            chunk = await connection.next_chunk()
            if chunk is None:
                return
            yield chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._response: UpstreamResponse | None = None
        self._headers_arrived: asyncio.Future[None] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: Exception | None = None
        self._received_any = False
        self._keep_alive = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.head_only = False

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, though they behave like one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed response from vLLM: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._can_write.set()
        response = self._response
        # Without a length or chunking, a body ends when the connection does.
        if (
            response is not None
            and response.status
            and not self._complete
            and response.content_length is None
            and not _is_chunked(response.headers)
        ):
            self._finish()
            return
        self._fail(UpstreamError(f"vLLM closed the connection ({exc or 'end of stream'})"))

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # --- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response.headers.append((name, value))
        if name.lower() == b"content-length" and value.strip().isdigit():
            self._response.content_length = int(value)

    def on_headers_complete(self) -> None:
        assert self._response is not None
        assert self._headers_arrived is not None
        self._response.status = self._parser.get_status_code()
        # Asked now: once the message is complete the parser has reset and no longer knows.
        self._keep_alive = self._parser.should_keep_alive()
        if not self._headers_arrived.done():
            self._headers_arrived.set_result(None)
        if self.head_only:
            # A HEAD response has no body whatever its headers say; the parser cannot be
            # told so, and this connection is not reused.
            self._finish()
            self.close()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER_BYTES and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self._finish()

    # --- used by the client -------------------------------------------------------------

    def begin(self, head_only: bool) -> UpstreamResponse:
        self._parser = httptools.HttpResponseParser(self)
        self._response = UpstreamResponse(self)
        self._headers_arrived = asyncio.get_running_loop().create_future()
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._error = None
        self._received_any = False
        self._keep_alive = False
        self.head_only = head_only
        return self._response

    async def headers_arrived(self) -> None:
        assert self._headers_arrived is not None
        await self._headers_arrived

    async def next_chunk(self) -> bytes | None:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered <= HIGH_WATER_BYTES // 4 and self.transport is not None:
            self.transport.resume_reading()
        return chunk

    async def write(self, data: bytes) -> None:
        if self.transport is None:
            raise self._error or UpstreamError("vLLM closed the connection")
        self.transport.write(data)
        await self._can_write.wait()

    @property
    def reusable(self) -> bool:
        return (
            self._complete
            and self._error is None
            and self.transport is not None
            and not self.transport.is_closing()
            and self._keep_alive
        )

    @property
    def received_any(self) -> bool:
        return self._received_any

    @property
    def awaiting_response(self) -> bool:
        """True until the response's headers arrived."""
        arrived = self._headers_arrived
        return (
            arrived is None
            or not arrived.done()
            or arrived.cancelled()
            or arrived.exception() is not None
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: Exception) -> None:
        if self._complete:
            return
        self._error = error
        if self._headers_arrived is not None and not self._headers_arrived.done():
            self._headers_arrived.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class UpstreamPool:
    """Idle connections per upstream (host, port), most recently used first."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def request(
        self,
        host: str,
        port: int,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes],
    ) -> tuple[UpstreamResponse, _Connection]:
        """Send a request; return once the response's status and headers have arrived.

        A reused idle connection that the upstream had already closed fails before any
        response byte arrives: then the request is sent once more on a fresh connection
        (only possible when the body is bytes, which it is for all but streamed uploads).
        """
        head = _request_head(method, target, host, port, headers, body)
        connection, reused = await self._acquire(host, port)
        try:
            return await self._send(connection, head, body, method == b"HEAD"), connection
        except UpstreamError:
            if not (reused and isinstance(body, bytes) and not connection.received_any):
                raise
        finally:
            if connection.awaiting_response:
                # Failed or cancelled (the client hung up): closing the connection is what
                # tells vLLM to abort the request.
                connection.close()
        connection = await self._open(host, port)
        try:
            return await self._send(connection, head, body, method == b"HEAD"), connection
        finally:
            if connection.awaiting_response:
                connection.close()

    def release(self, host: str, port: int, connection: _Connection) -> None:
        """Give a connection back after its response was read to the end, or drop it."""
        if not connection.reusable:
            connection.close()
            return
        idle = self._idle.setdefault((host, port), [])
        if len(idle) >= MAX_IDLE_PER_UPSTREAM:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()

    async def _acquire(self, host: str, port: int) -> tuple[_Connection, bool]:
        idle = self._idle.get((host, port))
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < IDLE_SECONDS and connection.transport is not None:
                return connection, True
            connection.close()
        return await self._open(host, port), False

    async def _open(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(_Connection, host, port)
        except OSError as exc:
            raise UpstreamError(f"cannot connect to vLLM at {host}:{port}: {exc}") from exc
        return connection

    async def _send(
        self,
        connection: _Connection,
        head: bytes,
        body: bytes | AsyncIterator[bytes],
        head_only: bool,
    ) -> UpstreamResponse:
        response = connection.begin(head_only)
        if isinstance(body, bytes):
            await connection.write(head + body)
        else:
            await connection.write(head)
            async for chunk in body:
                if chunk:
                    await connection.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await connection.write(b"0\r\n\r\n")
        await connection.headers_arrived()
        return response


def _request_head(
    method: bytes,
    target: bytes,
    host: str,
    port: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes | AsyncIterator[bytes],
) -> bytes:
    authority = f"{url_host(host)}:{port}"
    lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method, target, authority.encode())]
    lines += [b"%s: %s\r\n" % (name, value) for name, value in headers]
    if isinstance(body, bytes):
        if body or method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
            lines.append(b"content-length: %d\r\n" % len(body))
    else:
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def _is_chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
        for name, value in headers
    )

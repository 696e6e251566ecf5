"""One TCP connection to a vLLM server: per-connection state only.

The connection owns the transport, flow control in both directions and the exchange in
progress; everything about one request/response lives in that exchange (response.py), as
uvicorn keeps its protocol apart from its request cycle. A connection carries one exchange
at a time and is reused only after its response was read to the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

from vllm_bootstrap.upstream.addresses import url_host
from vllm_bootstrap.upstream.response import UpstreamError, UpstreamResponse


@dataclass
class ConnectionStats:
    """What a pool's connections did, for tests and benchmarks to observe."""

    opened: int = 0
    reused: int = 0
    retried: int = 0
    read_pauses: int = 0
    write_pauses: int = 0


class Connection(asyncio.Protocol):
    def __init__(self, stats: ConnectionStats) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.pool_key: tuple[str, int] = ("", 0)
        self.exchange: UpstreamResponse | None = None
        self._stats = stats
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._reading_paused = False

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, though they behave like one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:
            self.close()  # bytes nobody asked for: this connection can no longer be trusted
            return
        self.exchange.feed(data)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._can_write.set()
        if self.exchange is not None:
            self.exchange.connection_lost(exc)

    def pause_writing(self) -> None:
        self._stats.write_pauses += 1
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # --- flow control, used by the exchange ---------------------------------------------

    def pause_reading(self) -> None:
        if self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._stats.read_pauses += 1
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()

    async def write(self, data: bytes) -> None:
        if self.transport is None:
            raise UpstreamError("vLLM closed the connection")
        self.transport.write(data)
        await self._can_write.wait()

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_connection(host: str, port: int, stats: ConnectionStats) -> Connection:
    loop = asyncio.get_running_loop()
    try:
        _, connection = await loop.create_connection(lambda: Connection(stats), host, port)
    except OSError as exc:
        raise UpstreamError(f"cannot connect to vLLM at {host}:{port}: {exc}") from exc
    stats.opened += 1
    return connection


async def exchange(
    connection: Connection,
    head: bytes,
    body: bytes | AsyncIterator[bytes],
    head_only: bool,
    release: Callable[[Connection], None],
) -> UpstreamResponse:
    """Send one request; return once the response's status and headers have arrived.

    Failed or cancelled before that (the client hung up), the connection is closed: that
    is what tells vLLM to abort the request.
    """
    response = UpstreamResponse(connection, head_only, release)
    connection.exchange = response
    try:
        if isinstance(body, bytes):
            await connection.write(head + body)
        else:
            await connection.write(head)
            async for chunk in body:
                if chunk:
                    await connection.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await connection.write(b"0\r\n\r\n")
        await response.headers_arrived()
    except BaseException:
        connection.close()
        raise
    return response


def request_head(
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

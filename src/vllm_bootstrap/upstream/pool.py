"""A small HTTP/1.1 client for requests to vLLM servers, built for one job.

The proxy talks to vLLM servers on this machine, over plain HTTP/1.1, with raw headers that
it passes through untouched. A general-purpose client spends most of its time on what that
job does not need (URL objects, header dictionaries, cookie jars, redirects, automatic
headers): with aiohttp its client machinery was a third of the proxy's CPU under load. This
one writes the request head as bytes, parses the response with httptools (the parser uvicorn
uses), keeps idle connections per upstream, and relays body chunks as they arrive, with flow
control both ways.

    response = await pool.request(host, port, b"POST", b"/v1/completions", headers, body)
    async with response:
        async for chunk in response.chunks(): ...

`fetch_fresh` asks once on a connection of its own (readiness probes: a kept-alive socket to
a child that died says nothing true about its successor on the same port).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from vllm_bootstrap.upstream.connection import (
    Connection,
    ConnectionStats,
    exchange,
    open_connection,
    request_head,
)
from vllm_bootstrap.upstream.response import UpstreamError, UpstreamResponse

# vLLM's HTTP server closes idle connections after 5 s; one it is about to close fails the
# request that reuses it, so idle connections are retired sooner.
IDLE_SECONDS = 3.0
MAX_IDLE_PER_UPSTREAM = 256


class UpstreamPool:
    """Idle connections per upstream (host, port), most recently used first."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[Connection]] = {}
        self.stats = ConnectionStats()

    async def request(
        self,
        host: str,
        port: int,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes],
    ) -> UpstreamResponse:
        """Send a request; return once the response's status and headers have arrived.

        A reused idle connection that the upstream had already closed fails before any
        response byte arrives: then the request is sent once more on a fresh connection
        (only possible when the body is bytes, which it is for all but streamed uploads).
        """
        head = request_head(method, target, host, port, headers, body)
        head_only = method == b"HEAD"
        connection = self._take_idle(host, port)
        if connection is not None:
            try:
                return await exchange(connection, head, body, head_only, self._release)
            except UpstreamError:
                if not isinstance(body, bytes) or _answered(connection):
                    raise
            self.stats.retried += 1
        connection = await open_connection(host, port, self.stats)
        connection.pool_key = (host, port)
        return await exchange(connection, head, body, head_only, self._release)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()

    def _take_idle(self, host: str, port: int) -> Connection | None:
        idle = self._idle.get((host, port))
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < IDLE_SECONDS and connection.is_open:
                self.stats.reused += 1
                return connection
            connection.close()
        return None

    def _release(self, connection: Connection) -> None:
        """Keep a connection whose response was read to the end, up to the idle limit."""
        idle = self._idle.setdefault(connection.pool_key, [])
        if len(idle) >= MAX_IDLE_PER_UPSTREAM:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)


def _answered(connection: Connection) -> bool:
    return connection.exchange is not None and connection.exchange.received_any


async def fetch_fresh(host: str, port: int, target: bytes, timeout: float) -> tuple[int, bytes]:
    """GET `target` on a new connection, closed afterwards; status and body."""
    async with asyncio.timeout(timeout):
        connection = await open_connection(host, port, ConnectionStats())
        try:
            head = request_head(b"GET", target, host, port, [], b"")
            response = await exchange(connection, head, b"", False, _close)
            return response.status, await response.read()
        finally:
            connection.close()


def _close(connection: Connection) -> None:
    connection.close()

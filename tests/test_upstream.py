"""The proxy's HTTP/1.1 client against small real servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from vllm_bootstrap.upstream import UpstreamError, UpstreamPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return head + await reader.readexactly(int(line.split(b":")[1]))
    return head


async def fetch(
    pool: UpstreamPool, port: int, method: bytes = b"GET", body: bytes = b""
) -> tuple[int, bytes]:
    response, connection = await pool.request("127.0.0.1", port, method, b"/", [], body)
    content = await response.read()
    pool.release("127.0.0.1", port, connection)
    return response.status, content


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


def test_idle_connections_are_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(OK)
        writer.close()

    async def scenario() -> None:
        server, port = await serve(handler)
        pool = UpstreamPool()
        for _ in range(5):
            assert await fetch(pool, port) == (200, b"ok")
        pool.close()
        server.close()

    run(scenario)
    assert connections == 1


def test_a_connection_the_upstream_closed_while_idle_is_retried_fresh() -> None:
    async def answer_once_then_hang_up(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(OK)  # says keep-alive (HTTP/1.1), then closes anyway
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, port = await serve(answer_once_then_hang_up)
        pool = UpstreamPool()
        assert await fetch(pool, port) == (200, b"ok")
        await asyncio.sleep(0.05)
        assert await fetch(pool, port, b"POST", b"{}") == (200, b"ok")
        pool.close()
        server.close()

    run(scenario)


def test_a_body_without_length_ends_with_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, port = await serve(handler)
        assert await fetch(UpstreamPool(), port) == (200, b"all of it")
        server.close()

    run(scenario)


def test_head_responses_have_no_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async def scenario() -> None:
        server, port = await serve(handler)
        assert await fetch(UpstreamPool(), port, b"HEAD") == (200, b"")
        server.close()

    run(scenario)


def test_chunked_uploads_arrive_whole() -> None:
    received = bytearray()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head
        while (size := int((await reader.readline()).strip(), 16)) > 0:
            received.extend(await reader.readexactly(size))
            await reader.readline()
        await reader.readline()
        writer.write(OK)
        await writer.drain()

    async def pieces() -> AsyncIterator[bytes]:
        for index in range(50):
            yield bytes([index]) * 10_000

    async def scenario() -> None:
        server, port = await serve(handler)
        pool = UpstreamPool()
        response, connection = await pool.request("127.0.0.1", port, b"PUT", b"/", [], pieces())
        assert await response.read() == b"ok"
        connection.close()
        server.close()

    run(scenario)
    assert bytes(received) == b"".join(bytes([index]) * 10_000 for index in range(50))


@pytest.mark.parametrize(
    "reply",
    [b"", b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
    ids=["silence", "garbage", "truncated"],
)
def test_broken_upstreams_raise_upstream_error(reply: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, port = await serve(handler)
        with pytest.raises(UpstreamError):
            await fetch(UpstreamPool(), port)
        server.close()

    run(scenario)


def test_refused_connections_raise_upstream_error() -> None:
    async def scenario() -> None:
        server, port = await serve(read_request)  # type: ignore[arg-type]
        server.close()
        await server.wait_closed()
        with pytest.raises(UpstreamError, match="cannot connect"):
            await fetch(UpstreamPool(), port)

    run(scenario)

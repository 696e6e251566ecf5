"""The proxy's HTTP/1.1 client against small real servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from vllm_bootstrap.upstream import UpstreamError, UpstreamPool, fetch_fresh
from vllm_bootstrap.upstream.response import HIGH_WATER_BYTES

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The pool closing a connection mid-answer is what several tests provoke: the
        # handler's end, not a failure (anything else still fails the test).
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await handler(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return head + await reader.readexactly(int(line.split(b":")[1]))
    return head


async def answer_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *replies: bytes
) -> None:
    """Answer every request on the connection with `replies`, written one after the other,
    until the client closes it (a close with unread data arrives as a reset)."""
    while True:
        try:
            await read_request(reader)
            for reply in replies:
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return


async def answer_ok_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await answer_until_closed(reader, writer, OK)


async def fetch(
    pool: UpstreamPool, port: int, method: bytes = b"GET", body: bytes = b""
) -> tuple[int, bytes]:
    response = await pool.request("127.0.0.1", port, method, b"/", [], body)
    return response.status, await response.read()  # read to the end: the connection goes back


@pytest.mark.anyio
async def test_idle_connections_are_reused() -> None:
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

    server, port = await serve(handler)
    pool = UpstreamPool()
    for _ in range(5):
        assert await fetch(pool, port) == (200, b"ok")
    pool.close()
    server.close()

    assert connections == 1


@pytest.mark.anyio
async def test_a_connection_closed_while_idle_is_replaced_before_use() -> None:
    async def answer_once_then_hang_up(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(OK)  # says keep-alive (HTTP/1.1), then closes anyway
        await writer.drain()
        writer.close()

    server, port = await serve(answer_once_then_hang_up)
    pool = UpstreamPool()
    assert await fetch(pool, port) == (200, b"ok")
    await asyncio.sleep(0.05)  # the close has arrived: the idle connection is known dead
    assert await fetch(pool, port, b"POST", b"{}") == (200, b"ok")
    assert (pool.stats.opened, pool.stats.reused, pool.stats.retried) == (2, 0, 0)
    pool.close()
    server.close()


@pytest.mark.anyio
async def test_a_reused_connection_closed_under_the_request_is_retried_fresh() -> None:
    """The race the retry exists for: the upstream closes an idle connection just as a
    request is written to it, so the request fails before any response byte."""
    requests_seen: list[int] = []

    async def answer_once_then_drop_the_next(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection = len(requests_seen)
        requests_seen.append(0)
        await read_request(reader)
        requests_seen[connection] += 1
        writer.write(OK)
        await writer.drain()
        await read_request(reader)  # the reused connection's request: dropped unanswered
        requests_seen[connection] += 1
        writer.close()

    server, port = await serve(answer_once_then_drop_the_next)
    pool = UpstreamPool()
    assert await fetch(pool, port) == (200, b"ok")
    assert await fetch(pool, port, b"POST", b"{}") == (200, b"ok")
    assert (pool.stats.opened, pool.stats.reused, pool.stats.retried) == (2, 1, 1)
    pool.close()
    server.close()

    assert requests_seen == [2, 1]


@pytest.mark.anyio
async def test_a_streamed_upload_is_not_retried() -> None:
    async def drop_the_second_request(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def one_piece() -> AsyncIterator[bytes]:
        yield b"{}"

    server, port = await serve(drop_the_second_request)
    pool = UpstreamPool()
    assert await fetch(pool, port) == (200, b"ok")
    with pytest.raises(UpstreamError):
        await pool.request("127.0.0.1", port, b"POST", b"/", [], one_piece())
    assert pool.stats.retried == 0
    pool.close()
    server.close()


@pytest.mark.anyio
async def test_a_slow_reader_pauses_the_upstream_and_still_gets_every_byte() -> None:
    body = bytes(range(256)) * (16 * 1024)  # 4 MiB, several times the high-water mark

    async def big_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    server, port = await serve(big_answer)
    pool = UpstreamPool()
    response = await pool.request("127.0.0.1", port, b"GET", b"/", [], b"")
    await asyncio.sleep(0.3)  # nobody reads: the buffer fills past the high-water mark
    assert pool.stats.read_pauses == 1
    assert await response.read() == body
    pool.close()
    server.close()


@pytest.mark.anyio
async def test_an_upstream_that_reads_slowly_pauses_a_streamed_upload() -> None:
    received = hashlib.sha256()
    piece = b"x" * 65536

    async def read_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.3)  # the upload backs up into the client's write buffer
        while (size := int((await reader.readline()).strip(), 16)) > 0:
            received.update(await reader.readexactly(size))
            await reader.readline()
        await reader.readline()
        writer.write(OK)
        await writer.drain()

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(256):  # 16 MiB: more than the kernel's socket buffers hold
            yield piece

    server, port = await serve(read_late)
    pool = UpstreamPool()
    async with await pool.request("127.0.0.1", port, b"PUT", b"/", [], pieces()) as response:
        assert await response.read() == b"ok"
    assert pool.stats.write_pauses >= 1
    pool.close()
    server.close()

    assert received.hexdigest() == hashlib.sha256(piece * 256).hexdigest()


@pytest.mark.anyio
async def test_closing_an_unfinished_response_closes_its_connection() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\npart")
            await writer.drain()
            await reader.read()  # until the client closes the connection
            return
        await answer_ok_until_closed(reader, writer)

    server, port = await serve(handler)
    pool = UpstreamPool()
    async with await pool.request("127.0.0.1", port, b"GET", b"/", [], b"") as response:
        assert response.status == 200  # left with its body unfinished
    assert await fetch(pool, port) == (200, b"ok")
    assert await fetch(pool, port) == (200, b"ok")
    assert (pool.stats.opened, pool.stats.reused) == (2, 1)
    pool.close()
    server.close()

    assert connections == 2


@pytest.mark.anyio
async def test_a_response_that_arrived_but_was_not_read_is_not_reused() -> None:
    """Over the high-water mark, reading was paused: reusing that connection would hang."""
    big = b"x" * (HIGH_WATER_BYTES + 100_000)
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        reply = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(big), big)
        await answer_until_closed(reader, writer, reply)

    server, port = await serve(handler)
    pool = UpstreamPool()
    async with await pool.request("127.0.0.1", port, b"GET", b"/", [], b""):
        await asyncio.sleep(0.3)  # it all arrives (reading paused past the mark), unread
    assert pool.stats.read_pauses == 1
    assert await fetch(pool, port) == (200, big)
    assert pool.stats.opened == 2
    pool.close()
    server.close()

    assert connections == 2


@pytest.mark.anyio
async def test_finished_exchanges_leave_no_garbage_for_the_cyclic_collector() -> None:
    """Freed by reference counting at once: no collector pauses on the proxy's hot path."""

    server, port = await serve(answer_ok_until_closed)
    pool = UpstreamPool()
    assert await fetch(pool, port) == (200, b"ok")
    gc.collect()
    gc.disable()
    try:
        for _ in range(200):
            async with await pool.request("127.0.0.1", port, b"POST", b"/", [], b"{}") as r:
                assert await r.read() == b"ok"
        assert gc.collect() == 0
    finally:
        gc.enable()
    pool.close()
    server.close()


@pytest.mark.anyio
async def test_fetch_fresh_uses_a_connection_of_its_own_and_closes_it() -> None:
    closed_by_client = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal closed_by_client
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await reader.read()  # returns once the client closed its side
        closed_by_client += 1
        writer.close()

    server, port = await serve(handler)
    assert await fetch_fresh("127.0.0.1", port, b"/health", 2.0) == (200, b"ok")
    assert await fetch_fresh("127.0.0.1", port, b"/health", 2.0) == (200, b"ok")
    for _ in range(100):
        if closed_by_client == 2:
            break
        await asyncio.sleep(0.01)
    server.close()

    assert closed_by_client == 2


@pytest.mark.anyio
async def test_fetch_fresh_gives_up_after_its_timeout() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes

    server, port = await serve(never_answer)
    with pytest.raises(TimeoutError):
        await fetch_fresh("127.0.0.1", port, b"/health", 0.2)
    server.close()


@pytest.mark.anyio
async def test_a_body_without_length_ends_with_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    assert await fetch(UpstreamPool(), port) == (200, b"all of it")
    server.close()


@pytest.mark.anyio
async def test_head_responses_have_no_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        await writer.drain()
        await reader.read()  # no body follows: a client that waited for one would hang

    server, port = await serve(handler)
    assert await fetch(UpstreamPool(), port, b"HEAD") == (200, b"")
    server.close()


@pytest.mark.anyio
async def test_chunked_uploads_arrive_whole() -> None:
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

    server, port = await serve(handler)
    pool = UpstreamPool()
    async with await pool.request("127.0.0.1", port, b"PUT", b"/", [], pieces()) as response:
        assert await response.read() == b"ok"
    server.close()

    assert bytes(received) == b"".join(bytes([index]) * 10_000 for index in range(50))


@pytest.mark.parametrize(
    "reply",
    [b"", b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
    ids=["silence", "garbage", "truncated"],
)
@pytest.mark.anyio
async def test_broken_upstreams_raise_upstream_error(reply: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    with pytest.raises(UpstreamError):
        await fetch(UpstreamPool(), port)
    server.close()


@pytest.mark.anyio
async def test_refused_connections_raise_upstream_error() -> None:
    server, port = await serve(read_request)  # type: ignore[arg-type]
    server.close()
    await server.wait_closed()
    with pytest.raises(UpstreamError, match="cannot connect"):
        await fetch(UpstreamPool(), port)

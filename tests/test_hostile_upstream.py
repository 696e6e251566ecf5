"""Upstreams that misbehave on purpose, and what the proxy's client does about each (issue 9)."""

from __future__ import annotations

import asyncio

from tests.test_upstream import OK, fetch, read_request, run, serve
from vllm_bootstrap.upstream import UpstreamPool


def test_a_response_nobody_asked_for_is_never_given_to_the_next_request() -> None:
    evil = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nEVIL"

    async def answer_twice_then_normally(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(OK + evil)  # one response too many, in the same packet
        await writer.drain()
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(OK)
            await writer.drain()

    async def scenario() -> None:
        server, port = await serve(answer_twice_then_normally)
        pool = UpstreamPool()
        assert await fetch(pool, port) == (200, b"ok")
        assert await fetch(pool, port) == (200, b"ok")
        assert pool.stats.opened == 2  # the first connection was discarded
        pool.close()
        server.close()

    run(scenario)


def test_a_response_nobody_asked_for_arriving_late_discards_the_connection() -> None:
    async def answer_then_add_one(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nEVIL")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        server, port = await serve(answer_then_add_one)
        pool = UpstreamPool()
        assert await fetch(pool, port) == (200, b"ok")
        await asyncio.sleep(0.3)  # the extra response reaches the idle connection
        assert await fetch(pool, port) == (200, b"ok")
        assert pool.stats.opened == 2
        pool.close()
        server.close()

    run(scenario)

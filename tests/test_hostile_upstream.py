"""Upstreams that misbehave on purpose, and what the proxy's client does about each (issue 9)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.harness import Server
from tests.test_upstream import OK, answer_until_closed, fetch, read_request, serve
from vllm_bootstrap.serving.forward import end_to_end
from vllm_bootstrap.upstream import UpstreamPool


@pytest.mark.anyio
async def test_a_response_nobody_asked_for_is_never_given_to_the_next_request() -> None:
    evil = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nEVIL"

    async def answer_twice_then_normally(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(OK + evil)  # one response too many, in the same packet
        await writer.drain()
        await answer_until_closed(reader, writer, OK)

    server, port = await serve(answer_twice_then_normally)
    pool = UpstreamPool()
    assert await fetch(pool, port) == (200, b"ok")
    assert await fetch(pool, port) == (200, b"ok")
    assert pool.stats.opened == 2  # the first connection was discarded
    pool.close()
    server.close()


@pytest.mark.anyio
async def test_a_response_nobody_asked_for_arriving_late_discards_the_connection() -> None:
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

    server, port = await serve(answer_then_add_one)
    pool = UpstreamPool()
    assert await fetch(pool, port) == (200, b"ok")
    await asyncio.sleep(0.3)  # the extra response reaches the idle connection
    assert await fetch(pool, port) == (200, b"ok")
    assert pool.stats.opened == 2
    pool.close()
    server.close()


@pytest.mark.anyio
async def test_an_interim_response_is_skipped_and_its_headers_are_not_merged() -> None:
    async def early_hints_then_ok(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await answer_until_closed(
            reader,
            writer,
            b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-final: 1\r\ncontent-length: 2\r\n\r\nok",
        )

    server, port = await serve(early_hints_then_ok)
    pool = UpstreamPool()
    response = await pool.request("127.0.0.1", port, b"GET", b"/", [], b"")
    assert response.status == 200
    assert response.headers == [(b"x-final", b"1"), (b"content-length", b"2")]
    assert await response.read() == b"ok"
    assert await fetch(pool, port) == (200, b"ok")
    assert (pool.stats.opened, pool.stats.reused) == (1, 1)  # framing stayed trusted
    pool.close()
    server.close()


def test_headers_named_in_connection_do_not_cross_the_proxy() -> None:
    headers = [
        (b"Connection", b"keep-alive, X-Hop-Secret"),
        (b"X-Hop-Secret", b"for this hop only"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-End-To-End", b"kept"),
    ]
    assert end_to_end(headers, frozenset({b"connection", b"keep-alive"})) == [
        (b"X-End-To-End", b"kept")
    ]


@pytest.mark.parametrize("status", [204, 304])
def test_a_bodiless_status_is_forwarded_without_a_length(server: Server, status: int) -> None:
    ready = server.launch_ready(model="m", gpu_ids=[0])
    for _ in range(2):  # and the connections on both sides stay usable
        response = server.client.get(f"/proxy/{ready['launch_id']}/debug/status/{status}")
        assert response.status_code == status
        assert "content-length" not in response.headers
        assert response.content == b""


def test_vllm_dying_mid_response_is_one_warning_not_a_traceback(server: Server) -> None:
    ready = server.launch_ready(model="m", gpu_ids=[0])
    url = f"/proxy/{ready['launch_id']}/debug/abort-mid-stream"
    with server.client.stream("GET", url) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    assert f"launch {ready['launch_id']}: vLLM broke off a response" in server.output()
    assert "Traceback" not in server.output()

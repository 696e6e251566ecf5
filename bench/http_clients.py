"""Which HTTP client should the proxy use? Ours (upstream.py) against pooled aiohttp and httpx.

Each client, in one process on uvloop as the server runs, sends small completions to a
stand-in vLLM for a few seconds from 1 task and from 32 concurrent tasks (the shape of the
proxy's upstream traffic under load). Prints requests/s and the ratio to aiohttp.

    uv run python bench/http_clients.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import Server, standin_env
from vllm_bootstrap.upstream import UpstreamPool

BODY = b'{"model": "bench", "prompt": "Say hi", "max_tokens": 4}'
HEADERS = {"Content-Type": "application/json"}


async def drive(send_one: Callable[[], Awaitable[None]], seconds: float, concurrency: int) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await send_one()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def with_aiohttp(url: str, seconds: float, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def send_one() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()

        return await drive(send_one, seconds, concurrency)


async def with_ours(url: str, seconds: float, concurrency: int) -> float:
    address = url.split("//", 1)[1].split("/", 1)[0]
    host, port = address.rsplit(":", 1)
    pool = UpstreamPool()
    headers = [(b"content-type", b"application/json")]

    async def send_one() -> None:
        response, connection = await pool.request(
            host, int(port), b"POST", b"/v1/completions", headers, BODY
        )
        await response.read()
        pool.release(host, int(port), connection)

    try:
        return await drive(send_one, seconds, concurrency)
    finally:
        pool.close()


async def with_httpx(url: str, seconds: float, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def send_one() -> None:
            response = await client.post(url, content=BODY, headers=HEADERS)
            await response.aread()

        return await drive(send_one, seconds, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(standin_env(Path(tmp)), Path(tmp) / "server.log").start()
        try:
            launch = server.launch_ready(model="bench", gpu_ids=[0])
            url = f"http://127.0.0.1:{launch['port']}/v1/completions"
            results = {
                (name, concurrency): uvloop.run(client(url, args.seconds, concurrency))
                for concurrency in (1, 32)
                for name, client in (
                    ("aiohttp", with_aiohttp),
                    ("httpx", with_httpx),
                    ("ours", with_ours),
                )
            }
        finally:
            server.terminate()
            server.client.close()
    print(f"{'client':<10}{'tasks':>6}{'req/s':>10}{'x aiohttp':>11}")
    for (name, concurrency), rate in results.items():
        baseline = results[("aiohttp", concurrency)]
        print(f"{name:<10}{concurrency:>6}{rate:>10.0f}{rate / baseline:>11.2f}")


if __name__ == "__main__":
    main()

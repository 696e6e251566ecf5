"""Which HTTP client should the proxy use? Ours (upstream/) against pooled aiohttp and httpx.

Each client, in one process on uvloop as the server runs, sends small completions to a fast
upstream (nginx answering canned completions, canned_vllm.py) for a few seconds from 1 task
and from 32 concurrent tasks (the shape of the proxy's upstream traffic under load). Prints
requests/s and the ratio to aiohttp.

    uv run python bench/http_clients.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import uvloop
from harness import canned_vllm_command, free_port

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
        response = await pool.request(host, int(port), b"POST", b"/v1/completions", headers, BODY)
        await response.read()

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


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    port = free_port()
    upstream = subprocess.Popen(
        [*canned_vllm_command().split(), "--model", "bench", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/v1/completions"
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
        upstream.terminate()
        upstream.wait()
    print(f"{'client':<10}{'tasks':>6}{'req/s':>10}{'x aiohttp':>11}")
    for (name, concurrency), rate in results.items():
        baseline = results[("aiohttp", concurrency)]
        print(f"{name:<10}{concurrency:>6}{rate:>10.0f}{rate / baseline:>11.2f}")


if __name__ == "__main__":
    main()

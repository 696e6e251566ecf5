"""Batch throughput: our Batches API against an ideal client, and memory for a large batch.

Launches answer after a fixed latency (latency_vllm.py), so a runner that keeps every launch
at its in-flight limit reaches `launches * in_flight / latency` requests per second. In one
run, against the same launches:

- ideal: an asyncio client that has parsed the whole file beforehand and keeps exactly
  `in_flight` requests open to each launch, sent straight to its port with the leanest
  client we have (our own HTTP/1.1 client, vllm_bootstrap.upstream, on uvloop: 5x fewer
  CPU cycles per request than aiohttp), so at low latencies, where both sides run out of
  CPU, the ratio is the cost of the batch machinery itself;
- ours: the same file uploaded to /v1/files and run through /v1/batches at
  VLLM_BATCH_IN_FLIGHT_PER_LAUNCH = in_flight, timed from create to `completed` (so
  validation, result recording and polling are inside the figure).

Then a large batch (`--large` lines, 100,000 by default) with the server's peak resident
memory over the run (VmHWM, reset just before it) against its memory before.

    uv run python bench/batch.py [--requests 20000] [--latency 0.5] [--in-flight 256]
                                 [--launches 2] [--large 100000] [--large-latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import uvloop
from harness import BenchServer

from vllm_bootstrap.upstream import UpstreamPool

MODEL = "bench-model"


def request_lines(count: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"request-{index}",
                "method": "POST",
                "url": "/v1/completions",
                "body": {"model": MODEL, "prompt": f"Say hello, number {index}", "max_tokens": 8},
            }
        ).encode()
        + b"\n"
        for index in range(count)
    )


async def ideal_client(
    content: bytes, ports: list[int], in_flight: int, hosts: list[str] | None = None
) -> float:
    """Seconds to send every line straight to the launches at `ports` (on `hosts`, by
    default this machine's loopback), `in_flight` at a time to each."""
    addresses = list(zip(hosts or ["127.0.0.1"] * len(ports), ports, strict=True))
    bodies = [json.dumps(json.loads(line)["body"]).encode() for line in content.splitlines()]
    pool = UpstreamPool()
    headers = [(b"content-type", b"application/json")]

    async def worker(address: tuple[str, int], share: list[bytes]) -> None:
        for body in share:
            response = await pool.request(*address, b"POST", b"/v1/completions", headers, body)
            async with response:
                await response.read()
            assert response.status == 200

    # `in_flight` workers per launch, each sending its share of the requests in turn.
    workers = len(addresses) * in_flight
    shares = [bodies[index::workers] for index in range(workers)]
    started = time.perf_counter()
    await asyncio.gather(
        *(worker(addresses[index % len(addresses)], share) for index, share in enumerate(shares))
    )
    elapsed = time.perf_counter() - started
    pool.close()
    return elapsed


def upload(server: BenchServer, content: bytes) -> str:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="input.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    connection = http.client.HTTPConnection(server.host, server.port, timeout=300)
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    if server.access_key:
        headers["authorization"] = f"Bearer {server.access_key}"
    connection.request("POST", "/v1/files", body=body, headers=headers)
    response = connection.getresponse()
    payload = json.loads(response.read())
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"upload failed: {payload}")
    return str(payload["id"])


def run_batch(
    server: BenchServer, file_id: str, endpoint: str = "/v1/completions"
) -> tuple[float, dict]:
    started = time.perf_counter()
    batch = server.request("POST", "/v1/batches", {"input_file_id": file_id, "endpoint": endpoint})
    while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.05)
        batch = server.request("GET", f"/v1/batches/{batch['id']}")
    elapsed = time.perf_counter() - started
    if batch["status"] != "completed" or batch["request_counts"]["failed"]:
        raise RuntimeError(f"the batch did not complete cleanly: {batch}")
    return elapsed, batch


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--launches", type=int, default=2)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--large-latency", type=float, default=0.05)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        compare(Path(folder), args)
        if args.large:
            large(Path(folder), args)


def _server(workdir: Path, args: argparse.Namespace, latency: float) -> BenchServer:
    command = f"{sys.executable} {Path(__file__).parent / 'latency_vllm.py'}"
    env = {
        "BENCH_LATENCY_SECONDS": str(latency),
        "VLLM_BATCH_IN_FLIGHT_PER_LAUNCH": str(args.in_flight),
    }
    return BenchServer(workdir, command, gpus=args.launches, extra_env=env)


def compare(workdir: Path, args: argparse.Namespace) -> None:
    server = _server(workdir, args, args.latency)
    try:
        launches = [server.launch_ready(MODEL, gpu=gpu) for gpu in range(args.launches)]
        content = request_lines(args.requests)
        ceiling = args.launches * args.in_flight / args.latency
        ports = [launch["port"] for launch in launches]
        ideal = uvloop.run(ideal_client(content, ports, args.in_flight))
        file_id = upload(server, content)
        ours, _ = run_batch(server, file_id)
    finally:
        server.stop()
    print(
        f"{args.requests} requests, {args.launches} launches answering in {args.latency} s, "
        f"{args.in_flight} in flight per launch (ceiling {ceiling:.0f} req/s)"
    )
    print(f"  ideal client       {args.requests / ideal:8.0f} req/s  ({ideal:.2f} s)")
    print(f"  our Batches API    {args.requests / ours:8.0f} req/s  ({ours:.2f} s)")
    print(f"  ours / ideal       {ideal / ours:8.2f}")


def large(workdir: Path, args: argparse.Namespace) -> None:
    server = _server(workdir, args, args.large_latency)
    try:
        for gpu in range(args.launches):
            server.launch_ready(MODEL, gpu=gpu)
        content = request_lines(args.large)
        pid = server.process.pid
        before = memory_kib(pid, "VmRSS")
        started = time.perf_counter()
        file_id = upload(server, content)
        uploaded = time.perf_counter() - started
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
        elapsed, _ = run_batch(server, file_id)
        peak = memory_kib(pid, "VmHWM")
    finally:
        server.stop()
    print(
        f"{args.large} requests ({len(content) / 1e6:.1f} MB file, uploaded in {uploaded:.2f} s), "
        f"{args.launches} launches answering in {args.large_latency} s"
    )
    print(f"  our Batches API    {args.large / elapsed:8.0f} req/s  ({elapsed:.1f} s)")
    print(
        f"  server memory      {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB "
        f"during the batch"
    )


if __name__ == "__main__":
    main()

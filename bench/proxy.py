"""Proxy overhead: a fast upstream hit directly, through nginx, /proxy/{id} and /v1.

The upstream is nginx answering canned completions (canned_vllm.py), launched by the real
server as its vLLM, so every figure is the proxy's own ceiling rather than the upstream's.
Beside our two paths, in the same run:

- nginx as the reference reverse proxy (keep-alive upstream, response buffering off, one
  worker: our server is one process too). Its request buffering stays on, as our proxy also
  forwards a small body whole; unbuffered, nginx drops client connections when the canned
  upstream answers before reading the body;
- a bare ASGI app under uvicorn that answers every request itself (bare_asgi.py): the
  ceiling of any proxy that uvicorn serves on this machine.

Every path is measured for throughput (`wrk`, 32 connections, small non-streaming
completions), latency (a sequential keep-alive client, p50 and p99) and time to the first
SSE event. `--rounds N` measures every path N times, interleaved, and prints medians (the
machine is noisy). `--compare-with DIR` also measures another checkout's server (its `src/`)
in the same run, for before/after figures of a change. `--keys` runs our server with an
access key and measures both of its paths twice: with the admin key, and with a scoped key
whose limits are set high (so every request is admitted, metered and counted in usage),
and prints what the scoped key's checks and accounting cost.

Needs `nginx` and `wrk` (apt-get install nginx wrk).

    uv run python bench/proxy.py [--seconds 10] [--requests 2000] [--rounds 3] [--compare-with DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import BenchServer, canned_vllm_command, free_port, nginx_config

BODY = json.dumps({"model": "bench", "prompt": "Say hi", "max_tokens": 4}).encode()
STREAM_BODY = json.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "x"}], "stream": True}
).encode()
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'
{authorization}
"""
ADMIN_KEY = "bench-admin-key"
# High enough that no request of the benchmark is refused: only their cost is measured.
HIGH_LIMITS = {
    "max_concurrency": 100_000,
    "requests_per_minute": 1_000_000_000,
    "tokens_per_minute": 1_000_000_000,
}
NGINX_PROXY_HTTP_BLOCK = """
    upstream vllm {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://vllm;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
"""


@dataclass
class Result:
    name: str
    requests_per_second: float
    wrk_p50_ms: float
    sequential_p50_ms: float
    sequential_p99_ms: float
    first_event_ms: float


def headers_with(key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def run_wrk(url: str, seconds: int, workdir: Path, key: str | None = None) -> tuple[float, float]:
    script = workdir / "post.lua"
    authorization = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    script.write_text(WRK_SCRIPT.format(body=BODY.decode(), authorization=authorization))
    output = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([0-9.]+)(us|ms|s)", output)
    assert p50 is not None, output
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        raise RuntimeError(f"{url}: {non_2xx.group(1)} failed requests\n{output}")
    return rps, float(p50.group(1)) * scale


def sequential(port: int, path: str, count: int, key: str | None = None) -> tuple[float, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("POST", path, body=BODY, headers=headers_with(key))
        response = connection.getresponse()
        response.read()
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, response.status
    connection.close()
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.99)]


def first_event(port: int, path: str, count: int, key: str | None = None) -> float:
    """Median time from sending a streaming request to reading its first SSE event."""
    timings = []
    for _ in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", port)
        started = time.perf_counter()
        connection.request("POST", path, body=STREAM_BODY, headers=headers_with(key))
        response = connection.getresponse()
        assert response.status == 200, response.status
        while not response.readline().startswith(b"data:"):
            pass
        timings.append((time.perf_counter() - started) * 1000)
        response.read()
        connection.close()
    return statistics.median(timings)


def measure(
    name: str,
    port: int,
    prefix: str,
    args: argparse.Namespace,
    workdir: Path,
    key: str | None = None,
) -> Result:
    completions, chat = f"{prefix}/v1/completions", f"{prefix}/v1/chat/completions"
    sequential(port, completions, 200, key)  # warm up pools and caches
    rps, wrk_p50 = run_wrk(f"http://127.0.0.1:{port}{completions}", args.seconds, workdir, key)
    p50, p99 = sequential(port, completions, args.requests, key)
    ttfe = first_event(port, chat, 200, key)
    print(f"  measured {name}", file=sys.stderr)
    return Result(name, rps, wrk_p50, p50, p99, ttfe)


def start_nginx_proxy(upstream_port: int, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = workdir / "nginx.conf"
    http_block = NGINX_PROXY_HTTP_BLOCK.format(upstream_port=upstream_port, port=port)
    conf.write_text(nginx_config(workdir, http_block))
    process = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"])
    wait_for_port(port)
    return process, port


def start_bare_uvicorn() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "bare_asgi.py"), str(port)]
    )
    wait_for_port(port)
    return process, port


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def measure_server(
    label: str, server: BenchServer, args: argparse.Namespace, workdir: Path, flip: bool
) -> list[Result]:
    """Our two paths (with --keys, with either key; `flip`: the scoped key first, so that
    neither key always runs second on a machine that drifts)."""
    proxy = f"/proxy/{server.launched['launch_id']}"
    keys = [("", server.access_key)]
    if args.keys:
        keys = [(" admin key", server.access_key), (" scoped key", server.scoped_key)]
    measured = {}
    for suffix, key in keys[::-1] if flip else keys:
        measured[suffix] = [
            measure(f"{label}/proxy/{{id}}{suffix}", server.port, proxy, args, workdir, key),
            measure(f"{label}/v1{suffix}", server.port, "", args, workdir, key),
        ]
    return [result for suffix, _ in keys for result in measured[suffix]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per path")
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests")
    parser.add_argument("--compare-with", type=Path, help="another checkout to measure too")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every path this often, interleaved; medians"
    )
    parser.add_argument(
        "--keys", action="store_true", help="measure our paths with the admin and a scoped key"
    )
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: apt-get install nginx wrk")

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        keyed = {"VLLM_ACCESS_KEY": ADMIN_KEY} if args.keys else {}
        servers = [("", BenchServer(workdir, canned_vllm_command(), extra_env=keyed))]
        if args.compare_with is not None:
            servers.append(
                ("before ", BenchServer(workdir, canned_vllm_command(), args.compare_with))
            )
        nginx = bare = None
        try:
            for _, server in servers:
                server.launched = server.launch_ready(model="bench")
                if args.keys:
                    made = server.request("POST", "/keys", {"name": "bench", **HIGH_LIMITS})
                    server.scoped_key = made["key"]
            upstream = int(servers[0][1].launched["port"])
            nginx, nginx_port = start_nginx_proxy(upstream, workdir)
            bare, bare_port = start_bare_uvicorn()
            rounds = []
            for round_number in range(args.rounds):
                results = [
                    measure("direct (upstream)", upstream, "", args, workdir),
                    measure("nginx", nginx_port, "", args, workdir),
                    measure("bare uvicorn (no proxy)", bare_port, "", args, workdir),
                ]
                # Every other round measures the servers in the opposite order, so that
                # neither always runs right after wrk has left the machine warm or busy.
                order = servers if round_number % 2 == 0 else servers[::-1]
                measured = {
                    label: measure_server(label, server, args, workdir, round_number % 2 == 1)
                    for label, server in order
                }
                for label, _ in servers:
                    results += measured[label]
                rounds.append(results)
        finally:
            for process in (nginx, bare):
                if process is not None:
                    process.terminate()
                    process.wait()
            for _, server in servers:
                server.stop()
    report(medians(rounds))


def medians(rounds: list[list[Result]]) -> list[Result]:
    """Each path's median figures over the rounds (paths in the same order every round)."""
    return [
        Result(
            runs[0].name,
            *(
                statistics.median(getattr(run, figure) for run in runs)
                for figure in (
                    "requests_per_second",
                    "wrk_p50_ms",
                    "sequential_p50_ms",
                    "sequential_p99_ms",
                    "first_event_ms",
                )
            ),
        )
        for runs in zip(*rounds, strict=True)
    ]


def report(results: list[Result]) -> None:
    direct, nginx = results[0], results[1]
    print(
        f"{'path':<26}{'req/s':>9}{'x nginx':>9}{'wrk p50':>9}{'seq p50':>9}{'+p50':>8}"
        f"{'seq p99':>9}{'1st SSE':>9}{'+1st':>8}"
    )
    for result in results:
        print(
            f"{result.name:<26}{result.requests_per_second:>9.0f}"
            f"{result.requests_per_second / nginx.requests_per_second:>9.2f}"
            f"{result.wrk_p50_ms:>9.2f}{result.sequential_p50_ms:>9.3f}"
            f"{result.sequential_p50_ms - direct.sequential_p50_ms:>8.3f}"
            f"{result.sequential_p99_ms:>9.3f}{result.first_event_ms:>9.3f}"
            f"{result.first_event_ms - direct.first_event_ms:>8.3f}"
        )
    print("times in ms; +p50 and +1st are added over the direct path (nginx's canned answers)")
    by_name = {result.name: result for result in results}
    for path in ("/proxy/{id}", "/v1"):
        admin, scoped = by_name.get(f"{path} admin key"), by_name.get(f"{path} scoped key")
        if admin is not None and scoped is not None:
            print(
                f"{path}: a scoped key (limits, metering, usage) keeps "
                f"{scoped.requests_per_second / admin.requests_per_second:.3f}x of the admin "
                f"key's throughput, {scoped.sequential_p50_ms - admin.sequential_p50_ms:+.3f} ms "
                f"p50, {scoped.first_event_ms - admin.first_event_ms:+.3f} ms to the first event"
            )


if __name__ == "__main__":
    main()

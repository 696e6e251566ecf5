"""How long a swap between two model profiles takes, cold and with vLLM's sleep mode.

Starts the real server with one (fake) GPU and a stand-in vLLM that takes fixed times and
no CPU (sleepy_vllm.py): loading BENCH_LOAD_SECONDS, falling asleep and waking up as set
below. Requests alternate between two profiles, so each request after the first two must
swap: stop one launch and start the other cold, or put one to sleep and wake the other.
Each swap's request time is printed next to the stand-in's own time for it; the difference
is what the control plane adds (detecting readiness, stopping, bookkeeping).

    uv run python bench/swap.py [--rounds 6] [--load-seconds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import BenchServer

SLEEP_SECONDS = 0.1
WAKE_SECONDS = 0.3
# The swapper does not evict a launch used in the last second: wait that out between requests.
PAUSE_SECONDS = 1.1


def timed_request(server: BenchServer, model: str) -> float:
    body = json.dumps({"model": model, "prompt": "hi", "max_tokens": 1}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    started = time.perf_counter()
    connection.request("POST", "/v1/completions", body, {"content-type": "application/json"})
    response = connection.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"{model}: {response.status}")
    return elapsed


def swaps(server: BenchServer, sleep: bool, rounds: int) -> list[float]:
    names = ["sleepy-a", "sleepy-b"] if sleep else ["cold-a", "cold-b"]
    for name in names:
        server.request("PUT", f"/models/{name}", {"model": f"org/{name}", "sleep": sleep})
    times = []
    for index in range(rounds + 2):
        time.sleep(PAUSE_SECONDS)
        elapsed = timed_request(server, names[index % 2])
        if index >= 2:  # the first two loads evict nothing (the first) or sleep a cold one
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--load-seconds", type=float, default=3.0)
    args = parser.parse_args()
    os.environ.update(
        BENCH_LOAD_SECONDS=str(args.load_seconds),
        BENCH_SLEEP_SECONDS=str(SLEEP_SECONDS),
        BENCH_WAKE_SECONDS=str(WAKE_SECONDS),
    )
    command = f"{sys.executable} {Path(__file__).parent / 'sleepy_vllm.py'}"
    with tempfile.TemporaryDirectory() as workdir:
        server = BenchServer(Path(workdir), command, gpus=1)
        try:
            cold = swaps(server, sleep=False, rounds=args.rounds)
            warm = swaps(server, sleep=True, rounds=args.rounds)
        finally:
            server.stop()
    own = {"cold": args.load_seconds, "sleep": SLEEP_SECONDS + WAKE_SECONDS}
    print(f"{'swap':<28}{'median s':>10}{'max s':>8}{'stand-in s':>12}{'added s':>9}")
    for label, key, times in (
        ("stop + cold start", "cold", cold),
        ("sleep + wake (sleep mode)", "sleep", warm),
    ):
        median, added = statistics.median(times), statistics.median(times) - own[key]
        print(f"{label:<28}{median:>10.2f}{max(times):>8.2f}{own[key]:>12.2f}{added:>9.2f}")
    print(f"wake swap / cold swap: {statistics.median(warm) / statistics.median(cold):.2f}")


if __name__ == "__main__":
    main()

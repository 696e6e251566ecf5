"""How fast does the control plane notice that vLLM answers?

Starts the real server with a slowly loading stand-in for vLLM (slow_vllm.py), launches it
repeatedly and compares the launch's `ready_at` with the moment the stand-in started
answering HTTP (it prints that instant). Both bind modes are measured: refusing
connections while loading (current vLLM) and binding early with connections left hanging
(older vLLM).

    uv run python bench/readiness.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from harness import BenchServer

SINCE = re.compile(r"standin: answering HTTP since ([0-9.]+)")


def measure(bind_early: bool, rounds: int, workdir: Path) -> list[float]:
    os.environ["BENCH_LOAD_SECONDS"] = "1.5"
    os.environ["BENCH_BIND_EARLY"] = "1" if bind_early else "0"
    server = BenchServer(workdir, f"{sys.executable} {Path(__file__).parent / 'slow_vllm.py'}")
    lags = []
    try:
        for _ in range(rounds):
            launch = server.launch_ready(model="bench")
            log = Path(launch["log_path"]).read_text()
            since = float(SINCE.search(log).group(1))  # type: ignore[union-attr]
            ready_at = datetime.fromisoformat(launch["ready_at"]).timestamp()
            lags.append((ready_at - since) * 1000)
            server.request("POST", f"/stop/{launch['launch_id']}?wait=true")
    finally:
        server.stop()
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(f"{'mode':<24}{'p50 ms':>10}{'max ms':>10}")
    for bind_early in (False, True):
        with tempfile.TemporaryDirectory() as workdir:
            lags = measure(bind_early, args.rounds, Path(workdir))
        mode = "binds early (old vLLM)" if bind_early else "refuses (current vLLM)"
        print(f"{mode:<24}{statistics.median(lags):>10.1f}{max(lags):>10.1f}")


if __name__ == "__main__":
    main()

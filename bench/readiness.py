"""How fast does the control plane notice that vLLM answers?

Starts the real server with the stand-in vLLM, launches it repeatedly and compares the
launch's `ready_at` with the moment the stand-in started answering HTTP (it prints that
instant). Both bind modes are measured: refusing connections while loading (current vLLM)
and binding early with connections left hanging (older vLLM).

    uv run python bench/readiness.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import Server, standin_env

SINCE = re.compile(r"standin: answering HTTP since ([0-9.]+)")


def measure(bind_early: bool, rounds: int, workdir: Path) -> list[float]:
    overrides = {"FAKE_VLLM_LOAD_SECONDS": "1.5"}
    if bind_early:
        overrides["FAKE_VLLM_BIND_EARLY"] = "1"
    env = standin_env(workdir, **overrides)
    server = Server(env, workdir / "server.log").start()
    lags = []
    try:
        for _ in range(rounds):
            launch = server.launch_ready(model="bench", gpu_ids=[0])
            since = float(SINCE.search(server.logs(launch["launch_id"])).group(1))  # type: ignore[union-attr]
            ready_at = datetime.fromisoformat(launch["ready_at"]).timestamp()
            lags.append((ready_at - since) * 1000)
            server.stop(launch["launch_id"])
    finally:
        server.terminate()
        server.client.close()
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

"""A batch and live traffic on one real vLLM (CPU build): what each costs the other.

One launch of the tiny model (`--max-num-seqs 16`), measured in one run, in rounds:

- live alone: sequential streamed chat requests through /v1, time to their first token;
- batch alone: a batch of `--lines` chat lines, its rate (lines per second, create to done);
- both: the same batch again, with the live requests sent while it runs; its lines yield
  to them (batches/yielding.py, or vLLM's priority scheduling with `--priority`);
- both, not yielding: the batch created urgent (`metadata={"priority": "live"}`), as every
  batch was sent before batches yielded: the baseline, in the same run.

Then the ratios: live time to first token during the batch over alone (the goal is at most
1.5), and the batch's rate with live traffic over alone (the goal is at least 0.8). Run it
with `--priority` to start vLLM with `--scheduling-policy priority`, so that batch lines
carry a priority after live requests'. Needs the real-vLLM environment that
`make real-vllm-env` builds; takes several minutes (the box's two cores are shared by vLLM,
the control plane and this script, so each figure is the median of the rounds).

    uv run python bench/coexist.py [--lines 400] [--live 20] [--rounds 3] [--priority]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from batch import upload
from batch_real_vllm import ENVIRONMENT, SERVED_NAME, VLLM_ENV
from harness import BenchServer

ENGINE_FLAGS = ["--dtype", "float32", "--max-model-len", "256", "--max-num-seqs", "16"]
LIVE_MAX_TOKENS = 8
BATCH_MAX_TOKENS = 32


def batch_lines(count: int, round_number: int) -> bytes:
    lines = []
    for index in range(count):
        message = {"role": "user", "content": f"Round {round_number}, story {index}."}
        body = {"model": SERVED_NAME, "messages": [message], "max_tokens": BATCH_MAX_TOKENS}
        lines.append(
            {
                "custom_id": f"r{index}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {**body, "ignore_eos": True},
            }
        )
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def first_token_seconds(client: httpx.Client, index: int) -> float:
    """One streamed chat request through /v1: seconds until its first content arrives."""
    body = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": f"Live question {index}?"}],
        "max_tokens": LIVE_MAX_TOKENS,
        "ignore_eos": True,  # a random tiny model may end at once otherwise
        "stream": True,
    }
    started = time.perf_counter()
    first = None
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line.startswith("data: {"):
                choices = json.loads(line[6:])["choices"]
                delta = choices[0].get("delta", {}) if choices else {}
                if "content" in delta and "role" not in delta:  # a token, not the preamble
                    first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("a live request streamed no content")
    return first


def live_requests(client: httpx.Client, count: int, gap: float) -> list[float]:
    times = []
    for index in range(count):
        times.append(first_token_seconds(client, index))
        time.sleep(gap)  # people and apps pause between requests
    return times


def run_batch(server: BenchServer, content: bytes, urgent: bool = False) -> float:
    """Lines per second from create to completed."""
    file_id = upload(server, content)
    started = time.perf_counter()
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
    if urgent:
        body["metadata"] = {"priority": "live"}
    batch = server.request("POST", "/v1/batches", body)
    while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.1)
        batch = server.request("GET", f"/v1/batches/{batch['id']}")
    elapsed = time.perf_counter() - started
    counts = batch["request_counts"]
    if batch["status"] != "completed" or counts["failed"]:
        raise RuntimeError(f"the batch did not complete cleanly: {batch}")
    return counts["total"] / elapsed


def one_round(
    server: BenchServer, client: httpx.Client, args: argparse.Namespace, number: int
) -> dict[str, float]:
    alone = statistics.median(live_requests(client, args.live, args.gap))
    batch_alone = run_batch(server, batch_lines(args.lines, 3 * number))
    yielding = with_live_traffic(server, client, args, 3 * number + 1, urgent=False)
    urgent = with_live_traffic(server, client, args, 3 * number + 2, urgent=True)
    return {
        "ttft_alone": alone,
        "batch_alone": batch_alone,
        **{f"{key}_yielding": value for key, value in yielding.items()},
        **{f"{key}_urgent": value for key, value in urgent.items()},
    }


def with_live_traffic(
    server: BenchServer, client: httpx.Client, args: argparse.Namespace, seed: int, urgent: bool
) -> dict[str, float]:
    """A batch with live requests sent while it runs: their time to first token (median),
    how many there were, and the batch's rate."""
    during: list[float] = []
    stop = threading.Event()

    def live_while_batch() -> None:
        index = 0
        while not stop.is_set():
            during.append(first_token_seconds(client, 1000 + index))
            index += 1
            time.sleep(args.gap)

    thread = threading.Thread(target=live_while_batch)
    thread.start()
    rate = run_batch(server, batch_lines(args.lines, seed), urgent)
    stop.set()
    thread.join()
    return {"ttft": statistics.median(during), "live": len(during), "rate": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=400, help="batch lines per batch")
    parser.add_argument("--live", type=int, default=20, help="live requests measured alone")
    parser.add_argument("--gap", type=float, default=0.2, help="pause between live requests")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--priority", action="store_true", help="vLLM's priority scheduling")
    parser.add_argument("--in-flight", type=int, help="VLLM_BATCH_IN_FLIGHT_PER_LAUNCH")
    parser.add_argument("--environment", type=Path, default=ENVIRONMENT)
    args = parser.parse_args()
    python = args.environment / "venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"no real-vLLM environment at {args.environment}: make real-vllm-env")
    flags = [*ENGINE_FLAGS, "--served-model-name", SERVED_NAME]
    if args.priority:
        flags += ["--scheduling-policy", "priority"]
    env = {
        **VLLM_ENV,
        "VLLM_CACHE_ROOT": str(args.environment / "vllm-cache"),
        "VLLM_STARTUP_TIMEOUT_SECONDS": "900",
    }
    if args.in_flight:
        env["VLLM_BATCH_IN_FLIGHT_PER_LAUNCH"] = str(args.in_flight)
    with tempfile.TemporaryDirectory(prefix="bench-coexist-") as folder:
        server = BenchServer(
            Path(folder), f"{python} -m vllm.entrypoints.openai.api_server", extra_env=env
        )
        try:
            launch = server.request(
                "POST",
                "/launch",
                {"model": str(args.environment / "model"), "gpu_ids": [0], "extra_args": flags},
            )
            while launch["state"] != "ready":
                if launch["state"] in ("failed", "stopped"):
                    raise RuntimeError(f"the launch did not become ready: {launch}")
                time.sleep(0.5)
                launch = server.request("GET", f"/status/{launch['launch_id']}")
            base = f"http://127.0.0.1:{server.port}"
            with httpx.Client(base_url=base, timeout=300) as client:
                first_token_seconds(client, -1)  # warm-up
                rounds = [one_round(server, client, args, number) for number in range(args.rounds)]
        finally:
            server.stop()
    report(rounds, args)


def report(rounds: list[dict[str, float]], args: argparse.Namespace) -> None:
    def median(key: str) -> float:
        return statistics.median(round_[key] for round_ in rounds)

    policy = "priority" if args.priority else "fcfs"
    print(
        f"tiny model, vLLM CPU build, --max-num-seqs 16, scheduling {policy}; "
        f"{args.lines}-line batches of {BATCH_MAX_TOKENS} tokens; live: streamed chat of "
        f"{LIVE_MAX_TOKENS} tokens, {args.gap:g} s apart; medians of {args.rounds} rounds"
    )
    alone, rate_alone = median("ttft_alone"), median("batch_alone")
    print(f"  live time to first token, alone            {alone * 1000:8.1f} ms")
    print(f"  batch rate, alone                          {rate_alone:8.1f} lines/s")
    for mode, title in (("yielding", "batch yielding"), ("urgent", "urgent batch (baseline)")):
        during, rate = median(f"ttft_{mode}"), median(f"rate_{mode}")
        print(f"  with an {title}:" if mode == "urgent" else f"  with a {title}:")
        print(
            f"    live time to first token               {during * 1000:8.1f} ms  "
            f"({during / alone:.2f}x alone; goal <= 1.5)"
        )
        print(
            f"    batch rate                             {rate:8.1f} lines/s  "
            f"({rate / rate_alone:.2f}x alone; goal >= 0.8)"
        )
        print(f"    live requests measured                 {median(f'live_{mode}'):8.0f}")


if __name__ == "__main__":
    main()

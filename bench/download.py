"""Download throughput: vllm-bootstrap's POST /downloads against huggingface_hub's own
download (what `hf download` runs: snapshot_download with 8 workers, timed around the call),
both fetching the same repository of about 1 GB from the stand-in Hub on loopback, into
empty caches, turn about.

    uv run python bench/download.py [--size-mb 1024] [--rounds 3]

The stand-in Hub (tests/standins/hub/server.py, run as a program: nothing is imported from
tests/) sends files with sendfile, faster than either client receives them, so the
figures measure the clients. Prints each run's MiB/s and the ratio ours / hf (the goal is
at least 0.9).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import ROOT, BenchServer, canned_vllm_command, free_port

HUB_SERVER = ROOT / "tests" / "standins" / "hub" / "server.py"
REPO = "bench/one-gb"
MIB = 1024 * 1024
# Two shards, as a 1 GB model has them, and the small files beside them.
SMALL_FILES = {"config.json": b"{}", "tokenizer.json": b"{}", "generation_config.json": b"{}"}


def make_repo(root: Path, size_mb: int) -> int:
    folder = root / REPO
    folder.mkdir(parents=True)
    for name, content in SMALL_FILES.items():
        (folder / name).write_bytes(content)
    shard_mb = size_mb // 2
    block = os.urandom(MIB)
    for index in (1, 2):
        with (folder / f"model-0000{index}-of-00002.safetensors").open("wb") as out:
            for _ in range(shard_mb):
                out.write(block)
    return sum(path.stat().st_size for path in folder.iterdir())


def start_hub(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HUB_SERVER), "--root", str(root), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_hub/requests", timeout=1).read()
            return process, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the stand-in Hub did not start")


# What `hf download REPO` runs, timed around the call alone: the CLI's start-up (a second
# of imports) would flatter us.
HF_DOWNLOAD = """
import sys, time
from huggingface_hub import snapshot_download
began = time.perf_counter()
snapshot_download(sys.argv[1], max_workers=8)
print(time.perf_counter() - began)
"""


def time_hf(hub_url: str, cache: Path) -> float:
    env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_HUB_CACHE": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", HF_DOWNLOAD, REPO],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def time_ours(server: BenchServer, cache: Path) -> float:
    began = time.perf_counter()
    download = server.request("POST", "/downloads", {"model": REPO})
    while download["state"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.01)
        download = server.request("GET", f"/downloads/{download['id']}")
    elapsed = time.perf_counter() - began
    if download["state"] != "completed":
        raise RuntimeError(f"our download ended {download['state']}: {download['error']}")
    shutil.rmtree(cache, ignore_errors=True)  # the next round starts from an empty cache
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-download-") as scratch:
        work = Path(scratch)
        size = make_repo(work / "hub", args.size_mb)
        hub, hub_url = start_hub(work / "hub")
        our_cache = work / "ours" / "hub"
        server = BenchServer(
            work,
            canned_vllm_command(),
            extra_env={"HF_ENDPOINT": hub_url, "HF_HOME": str(work / "ours")},
        )
        try:
            print(f"repository: {size / MIB:.0f} MiB in {len(SMALL_FILES) + 2} files, loopback")
            ours, theirs = [], []
            for round_number in range(args.rounds):
                hf_cache = work / f"hf-{round_number}"
                theirs.append(size / MIB / time_hf(hub_url, hf_cache))
                shutil.rmtree(hf_cache, ignore_errors=True)
                ours.append(size / MIB / time_ours(server, our_cache))
                print(
                    f"round {round_number + 1}: hf download {theirs[-1]:7.0f} MiB/s   "
                    f"vllm-bootstrap {ours[-1]:7.0f} MiB/s"
                )
        finally:
            server.stop()
            hub.kill()
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(
            f"median: hf download {statistics.median(theirs):.0f} MiB/s, vllm-bootstrap "
            f"{statistics.median(ours):.0f} MiB/s: ratio {ratio:.2f} (goal >= 0.9)"
        )


if __name__ == "__main__":
    main()

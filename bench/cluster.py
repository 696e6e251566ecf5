"""Batch throughput on one box against the same launches spread over two boxes of a cluster.

Two boxes on a private network made on this machine (each a network namespace with its own
address on a bridge: root and `ip` from iproute2), each running the real server: the head
(VLLM_BOOTSTRAP_RAY_HEAD=1) and a worker that joins it (VLLM_BOOTSTRAP_JOIN). Launches are
bench/latency_vllm.py, which answers after a fixed latency, so their throughput is
`in flight / latency` and never their CPU. In one run, for each layout:

- one box: both launches on the head;
- two boxes: one launch on the head, one on the worker (started there through its Ray
  actor; the head reaches it over the private network);

the ideal client (batch.py's: the whole file parsed beforehand, exactly `in_flight` requests
open to each launch, straight to its address) against our Batches API on the head, timed
from create to `completed`. `ours / ideal` is the control plane's own cost; the issue asks
that it stay within 5% of the ideal client's rate on the cluster too.

    sudo uv run python bench/cluster.py [--requests 20000] [--latency 0.5] [--in-flight 256]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import uvloop
from batch import MODEL, ideal_client, request_lines, run_batch, upload
from harness import BENCH, BenchServer

KEY = "bench-cluster-key"
RAY_PORT = 6379


@contextlib.contextmanager
def two_boxes() -> Iterator[list[tuple[str, str]]]:
    """Two network namespaces on a bridge of this machine: (namespace, address) each."""
    tag = secrets.token_hex(2)
    subnet = f"10.214.{secrets.randbelow(250) + 1}"
    bridge, boxes = f"bcbr{tag}", [(f"bc{tag}n{n}", f"{subnet}.{10 + n}") for n in range(2)]
    outside = [f"link add {bridge} type bridge", f"addr add {subnet}.1/24 dev {bridge}"]
    outside.append(f"link set {bridge} up")
    inside: dict[str, list[str]] = {}
    for number, (namespace, address) in enumerate(boxes):
        veth = f"bc{tag}v{number}"
        outside += [
            f"netns add {namespace}",
            f"link add {veth} type veth peer name eth0 netns {namespace}",
            f"link set {veth} master {bridge}",
            f"link set {veth} up",
        ]
        inside[namespace] = [
            f"addr add {address}/24 dev eth0",
            "link set eth0 up",
            "link set lo up",
        ]
    try:
        _ip_batch([], outside)
        for namespace, commands in inside.items():
            _ip_batch(["-n", namespace], commands)
        yield boxes
    finally:
        for namespace, _address in boxes:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


def _ip_batch(options: list[str], commands: list[str]) -> None:
    subprocess.run(
        ["ip", *options, "-batch", "-"], input="\n".join(commands), text=True, check=True
    )


def start_box(
    workdir: Path, box: tuple[str, str], role: dict[str, str], args: argparse.Namespace
) -> BenchServer:
    namespace, address = box
    folder = workdir / namespace
    folder.mkdir()
    env = {
        **role,
        "VLLM_ACCESS_KEY": KEY,
        "VLLM_BOOTSTRAP_NODE_ADDRESS": address,
        "VLLM_BOOTSTRAP_RAY_PORT": str(RAY_PORT),
        "VLLM_BOOTSTRAP_RAY_TEMP_DIR": f"/tmp/{namespace}",  # Ray's socket paths stay short
        "VLLM_BOOTSTRAP_RAY_START_ARGS": "--num-cpus 1 --object-store-memory 100000000",
        "VLLM_LAUNCH_HOST": address,  # the head's launches too: the ideal client reaches them
        "VLLM_BATCH_IN_FLIGHT_PER_LAUNCH": str(args.in_flight),
        "BENCH_LATENCY_SECONDS": str(args.latency),
        "VLLM_BOOTSTRAP_DOWNLOAD_MODELS": "0",  # a name, not a Hub model
    }
    command = f"{sys.executable} {BENCH / 'latency_vllm.py'}"
    return BenchServer(
        folder,
        command,
        gpus=2,
        extra_env=env,
        host=address,
        wrapper=("ip", "netns", "exec", namespace),
        start_timeout=90,
    )


def node_ids(head: BenchServer, count: int) -> dict[str, str]:
    """Box address -> Ray node id, once `count` boxes are in."""
    deadline = time.monotonic() + 90
    while True:
        alive = [node for node in head.request("GET", "/nodes") if node["alive"]]
        if len(alive) == count:
            return {node["address"]: node["node_id"] for node in alive}
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker never joined: {alive}")
        time.sleep(0.2)


def measure(
    head: BenchServer, places: list[tuple[str, int]], args: argparse.Namespace
) -> tuple[float, float]:
    """Seconds for the ideal client and for our Batches API, on launches at `places`
    ((node id, GPU) each); the launches are stopped afterwards."""
    launches = [head.launch_ready(MODEL, gpu=gpu, node=node) for node, gpu in places]
    try:
        content = request_lines(args.requests)
        hosts, ports = [one["host"] for one in launches], [one["port"] for one in launches]
        ideal = uvloop.run(ideal_client(content, ports, args.in_flight, hosts))
        ours, _batch = run_batch(head, upload(head, content))
    finally:
        for one in launches:
            head.request("POST", f"/stop/{one['launch_id']}?wait=true")
    return ideal, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--in-flight", type=int, default=256)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise SystemExit("bench/cluster.py makes network namespaces: run it as root, with `ip`")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as folder, two_boxes() as boxes:
        workdir = Path(folder)
        head = start_box(workdir, boxes[0], {"VLLM_BOOTSTRAP_RAY_HEAD": "1"}, args)
        worker = None
        try:
            join = {"VLLM_BOOTSTRAP_JOIN": f"{boxes[0][1]}:{RAY_PORT}"}
            worker = start_box(workdir, boxes[1], join, args)
            ids = node_ids(head, 2)
            head_id, worker_id = ids[boxes[0][1]], ids[boxes[1][1]]
            one_box = measure(head, [(head_id, 0), (head_id, 1)], args)
            two_boxes_ = measure(head, [(head_id, 0), (worker_id, 0)], args)
        finally:
            if worker is not None:
                worker.stop(timeout=90)
            head.stop(timeout=90)
    report(args, one_box, two_boxes_)


def report(
    args: argparse.Namespace, one_box: tuple[float, float], two_boxes_: tuple[float, float]
) -> None:
    ceiling = 2 * args.in_flight / args.latency
    print(
        f"{args.requests} requests, 2 launches answering in {args.latency} s, "
        f"{args.in_flight} in flight per launch (ceiling {ceiling:.0f} req/s)"
    )
    print(f"  {'layout':<28}{'ideal client':>14}{'our Batches API':>18}{'ours / ideal':>14}")
    for name, (ideal, ours) in (("one box (both on the head)", one_box), ("two boxes", two_boxes_)):
        rate_ideal, rate_ours = args.requests / ideal, args.requests / ours
        print(f"  {name:<28}{rate_ideal:>10.0f} r/s{rate_ours:>14.0f} r/s{ideal / ours:>14.3f}")
    cost = 1 - two_boxes_[0] / two_boxes_[1]
    print(f"  two boxes / one box (ours) {one_box[1] / two_boxes_[1]:8.3f}")
    verdict = "within" if cost < 0.05 else "OVER"
    print(f"  control plane's cost on two boxes: {cost:.1%} of the ideal rate ({verdict} 5%)")


if __name__ == "__main__":
    main()

"""A launch's actor on a worker box: it starts vLLM (the stand-in) there, in a process
group of its own and with that box's environment, listening on the box's address; a driver
that comes later (a restarted head) finds it by name, reads its log and stops it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import KEY, RAY_PORT, BoxFactory, BoxServer
from tests.harness import eventually
from vllm_bootstrap.cluster.ray_env import ray_environment, ray_token
from vllm_bootstrap.supervision.processes import group_members

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
DRIVER = Path(__file__).with_name("drive.py")
VLLM_PORT = 8123


def drive(head: BoxServer, *args: str) -> Any:
    """Run the test driver in the head's box; what it printed."""
    env = {**head.env, **ray_environment(KEY)}
    address = f"{head.box.address}:{RAY_PORT}"
    command = ["ip", "netns", "exec", head.box.namespace, sys.executable, str(DRIVER), address]
    done = subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def vllm_on_the_worker(head: BoxServer, worker: BoxServer, launch_id: str) -> tuple[Any, str]:
    """The stand-in vLLM started on the worker through its actor, once it answers there:
    what the actor said, and its health URL."""
    nodes = lambda: [n for n in head.client.get("/nodes").json() if n["alive"]]  # noqa: E731
    eventually(lambda: len(nodes()) == 2, timeout=60, message="the worker never joined")
    argv = [
        *(sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", "org/remote"),
        *("--host", worker.box.address, "--port", str(VLLM_PORT)),
    ]
    started = drive(head, "start", launch_id, worker.box.address, json.dumps(argv))
    health = f"http://{worker.box.address}:{VLLM_PORT}/health"
    eventually(lambda: answers(health), timeout=60, message="vLLM never answered on the worker")
    return started, health


def test_a_launch_runs_on_a_worker_box_and_a_later_driver_finds_and_stops_it(
    start_box: BoxFactory,
) -> None:
    head, worker = start_box(0), start_box(1)
    started, health = vllm_on_the_worker(head, worker, "remote1")
    assert started["address"] == worker.box.address
    log = drive(head, "log", "remote1")  # another driver: found by name
    assert "Application startup complete." in log["text"]
    assert log["size"] >= len(log["text"])
    # The worker's own log folder, and its environment with the launch's additions; never
    # the access key, nor the worker's own settings.
    assert (worker.log_path.parent / "logs" / "node-launches" / "remote1.log").exists()
    environ = Path(f"/proc/{started['pid']}/environ").read_bytes().split(b"\0")
    assert b"FROM_THE_HEAD=1" in environ
    assert b"CUDA_VISIBLE_DEVICES=0" in environ
    assert not any(KEY.encode() in item or item.startswith(b"VLLM_BOOTSTRAP_") for item in environ)
    # Nor the cluster's token: model code there could run tasks on every box with it.
    assert not any(ray_token(KEY).encode() in item for item in environ)
    assert not any(item.startswith(b"RAY_AUTH") for item in environ)

    stopped = drive(head, "stop", "remote1")
    assert stopped["return_code"] is not None
    assert not answers(health)
    assert drive(head, "log", "remote1") is None  # the actor is gone with it


def test_a_worker_box_that_stops_ends_the_launches_it_ran(start_box: BoxFactory) -> None:
    head, worker = start_box(0), start_box(1)
    started, _health = vllm_on_the_worker(head, worker, "remote2")
    # Its actor dies with the worker's Ray node; vLLM, in a session of its own, must not
    # run on holding the box's GPUs.
    worker.terminate(timeout=90)
    assert group_members(started["pid"]) == []
    assert "started here through Ray" in worker.output()

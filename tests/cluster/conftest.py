"""Boxes joined on Ray, each a network namespace of this machine (network.py) running the
real server: the head (VLLM_BOOTSTRAP_RAY_HEAD=1) and workers (VLLM_BOOTSTRAP_JOIN)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.network import Box, private_network, usable
from tests.harness import Server, standin_env

KEY = "cluster-key"
RAY_PORT = 6379
# Ray's object store takes 30% of memory by default: a few boxes on one machine need less.
RAY_START_ARGS = "--num-cpus 1 --object-store-memory 100000000"


class BoxServer(Server):
    """The server inside a box: reached at the box's address."""

    def __init__(self, box: Box, env: dict[str, str], log_path: Path) -> None:
        super().__init__(env, log_path)
        self.box = box
        self.host = box.address
        self.url = f"http://{box.address}:{self.port}"
        self.client = httpx.Client(base_url=self.url, headers=self.client.headers, timeout=30)

    def command(self) -> list[str]:
        return ["ip", "netns", "exec", self.box.namespace, *super().command()]


BoxFactory = Callable[..., BoxServer]


@pytest.fixture
def network() -> Iterator[list[Box]]:
    if (why := usable()) is not None:
        pytest.skip(why)  # .ci/run runs these as root
    with private_network(3) as boxes:
        yield boxes


@pytest.fixture
def start_box(network: list[Box], tmp_path: Path) -> Iterator[BoxFactory]:
    """Start the server in box `index` (0 is the head's); environment overrides as keywords.
    Every box started is stopped at the end, its Ray node with it."""
    started: list[BoxServer] = []
    run = secrets.token_hex(3)

    def start(index: int, **overrides: str) -> BoxServer:
        box = network[index]
        folder = tmp_path / f"box{index}"
        folder.mkdir(exist_ok=True)
        role = (
            {"VLLM_BOOTSTRAP_RAY_HEAD": "1"}
            if index == 0
            else {"VLLM_BOOTSTRAP_JOIN": f"{network[0].address}:{RAY_PORT}"}
        )
        env = standin_env(
            folder,
            VLLM_ACCESS_KEY=KEY,
            VLLM_BOOTSTRAP_NODE_ADDRESS=box.address,
            VLLM_BOOTSTRAP_RAY_PORT=str(RAY_PORT),
            # Short: Ray's socket paths under it must stay below 108 bytes.
            VLLM_BOOTSTRAP_RAY_TEMP_DIR=f"/tmp/vbray-{run}-{index}",
            VLLM_BOOTSTRAP_RAY_START_ARGS=RAY_START_ARGS,
            **role,
        )
        env.update(overrides)
        server = BoxServer(box, env, folder / "server.log")
        started.append(server)
        return server.start(timeout=60)

    yield start
    for server in reversed(started):  # workers before the head
        try:
            server.terminate(timeout=60)
        finally:
            server.kill()
            server.client.close()
    for folder in Path("/tmp").glob(f"vbray-{run}-*"):
        shutil.rmtree(folder, ignore_errors=True)

"""Boxes joined on Ray: a worker joins the head, the head lists every node with its GPUs,
a box without the key is kept out, and stopping a box stops its Ray node."""

from __future__ import annotations

import re
import signal
from typing import Any

import pytest

from tests.cluster.conftest import KEY, BoxFactory
from tests.harness import eventually
from tests.test_cli import cli
from vllm_bootstrap.supervision.processes import group_members, signal_group

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def alive_nodes(head: Any) -> list[dict[str, Any]]:
    return [node for node in head.client.get("/nodes").json() if node["alive"]]


def test_a_worker_joins_and_the_head_lists_every_node_with_its_gpus(
    start_box: BoxFactory,
) -> None:
    head = start_box(0, FAKE_GPU_COUNT="2")
    worker = start_box(1, FAKE_GPU_COUNT="4")
    assert worker.client.get("/health").json() == {"status": "ok", "role": "worker"}

    eventually(lambda: len(alive_nodes(head)) == 2, timeout=60, message="the worker never joined")
    nodes = {node["address"]: node for node in alive_nodes(head)}
    assert nodes[head.box.address]["head"] is True
    assert [gpu["index"] for gpu in nodes[head.box.address]["gpus"]] == [0, 1]
    joined = nodes[worker.box.address]
    assert joined["head"] is False
    assert joined["error"] is None
    assert [gpu["index"] for gpu in joined["gpus"]] == [0, 1, 2, 3]  # read on that box
    assert joined["gpus"][0]["memory_total_mib"] > 0
    stats = head.client.get("/stats").json()
    assert {node["address"] for node in stats["nodes"]} == set(nodes)
    # The command line, as a user on another machine runs it against the head.
    listed = cli(head, "nodes", key=KEY).stdout.splitlines()[1:]
    assert sorted(row.split()[1:4] for row in listed) == [
        [head.box.address, "yes", "head"],
        [worker.box.address, "yes", "worker"],
    ]
    assert sorted(cli(head, "nodes", "-q", key=KEY).stdout.split()) == sorted(
        node["node_id"] for node in nodes.values()
    )


def test_a_box_with_another_key_is_kept_out(start_box: BoxFactory) -> None:
    head = start_box(0)
    intruder = start_box(1, VLLM_ACCESS_KEY="not-the-cluster-key")
    # Ray refuses its node (the token differs), so `ray start` ends and the box says so.
    eventually(
        lambda: intruder.client.get("/health").status_code == 503,
        timeout=60,
        message="a box with another key stayed up",
    )
    assert [node["head"] for node in alive_nodes(head)] == [True]
    refused = (intruder.log_path.parent / "logs" / "ray.log").read_text(errors="replace")
    assert "Authentication token is missing or incorrect" in refused
    # The box says so, and tries again (a head that comes back is rejoined).
    eventually(lambda: "Ray node ended with code" in intruder.output(), timeout=30)


def test_stopping_a_box_stops_its_ray_node(start_box: BoxFactory) -> None:
    head = start_box(0)
    worker = start_box(1)
    eventually(lambda: len(alive_nodes(head)) == 2, timeout=60, message="the worker never joined")
    groups = [ray_group(box.output()) for box in (head, worker)]
    assert all(group_members(group) for group in groups)
    worker.terminate(timeout=60)
    head.terminate(timeout=60)
    assert [group_members(group) for group in groups] == [[], []]


def ray_group(output: str) -> int:
    """The process group of the box's `ray start`, from its start-up line."""
    return _ray_groups(output)[0]


def _ray_groups(output: str) -> list[int]:
    """Every `ray start` of the box, in order, from their start-up lines."""
    found = [int(pid) for pid in re.findall(r"Ray node \([^)]*\) started, pid (\d+)", output)]
    assert found, output
    return found


def test_a_head_whose_ray_node_dies_starts_it_again_and_stays_up(start_box: BoxFactory) -> None:
    head = start_box(0)
    first = ray_group(head.output())
    signal_group(first, signal.SIGKILL)  # out of memory, say
    eventually(lambda: "the Ray head node ended with code" in head.output(), timeout=30)
    assert head.client.get("/health").status_code == 200  # the endpoint stays up

    def back() -> bool:
        nodes = alive_nodes(head)
        return [(node["head"], node["error"]) for node in nodes] == [(True, None)]

    eventually(back, timeout=90, message="the head's Ray node never came back")
    assert group_members(first) == []
    assert _ray_groups(head.output())[-1] != first

"""What each node of the cluster has: Ray's node table (alive or not, its address), and its
GPUs, read on the node itself by a small Ray task pinned there that runs the head's own
nvidia-smi reading (`query_gpu_stats`), so every node's GPUs look alike.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Any

from vllm_bootstrap.supervision import Box

READ_TIMEOUT_SECONDS = 10.0


@dataclass
class NodeView:
    """One node as GET /nodes (and /stats) show it."""

    node_id: str
    address: str
    alive: bool
    head: bool
    gpus: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    cpu_only: bool = False  # no nvidia-smi there: launches run on its CPU

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "address": self.address,
            "alive": self.alive,
            "head": self.head,
            "gpus": self.gpus,
            "error": self.error,
        }

    def as_box(self) -> Box:
        return Box(self.node_id, self.address, [gpu["index"] for gpu in self.gpus], self.cpu_only)


def read_nodes(head_node_id: str | None) -> list[NodeView]:
    """Every node Ray knows, alive or not, each other alive one with its GPUs as read there
    (blocking: the caller takes its turn with Ray's driver state, in a thread)."""
    import ray

    if not ray.is_initialized():
        raise ConnectionError("the Ray head node is being started again")
    views = [
        NodeView(
            node_id=node["NodeID"],
            address=node["NodeManagerAddress"],
            alive=bool(node["Alive"]),
            head=node["NodeID"] == head_node_id,
        )
        for node in ray.nodes()
    ]
    asked = {
        view.node_id: _reading_on(view.node_id) for view in views if view.alive and not view.head
    }
    if not asked:
        return views
    # One wait for all: a node that hangs costs the reading READ_TIMEOUT_SECONDS once.
    refs = list(asked.values())
    answered, _ = ray.wait(refs, num_returns=len(refs), timeout=READ_TIMEOUT_SECONDS)
    for view in views:
        ref = asked.get(view.node_id)
        if ref is None:
            continue
        if ref in answered:
            view.gpus, view.error, view.cpu_only = _result(ref)
        else:
            ray.cancel(ref, force=True)
            view.error = f"its GPUs were not read within {READ_TIMEOUT_SECONDS:g} s"
    return views


def alive_node_ids() -> set[str]:
    """The nodes Ray counts alive now (blocking)."""
    import ray

    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}


def pinned_to(node_id: str) -> Any:
    """Ray's scheduling strategy for an actor or task that must run on that node, or fail
    (never placed elsewhere)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def _reading_on(node_id: str) -> Any:
    return _remote_reading().options(scheduling_strategy=pinned_to(node_id)).remote()


@functools.cache
def _remote_reading() -> Any:
    import ray

    return ray.remote(num_cpus=0, max_retries=0)(_read_gpus)


def _result(ref: Any) -> tuple[list[dict[str, Any]], str | None, bool]:
    import ray

    try:
        gpus, error, cpu_only = ray.get(ref)
    except Exception as exc:  # the node died meanwhile: said in its row, not a 500
        return [], f"no reading from this node: {type(exc).__name__}", False
    return gpus, error, cpu_only


def _read_gpus() -> tuple[list[dict[str, Any]], str | None, bool]:
    """On the node: its GPUs as the head reads its own (nvidia-smi), or why none, and
    whether it has no nvidia-smi at all; in the head's rows' shape (the head fills in the
    owners)."""
    from vllm_bootstrap.supervision import GPUDiscoveryError, NoNvidiaSmi, query_gpu_stats

    try:
        gpus = asyncio.run(query_gpu_stats())
    except NoNvidiaSmi as exc:
        return [], str(exc), True
    except GPUDiscoveryError as exc:
        return [], str(exc), False
    return [{**gpu, "launch_id": None, "sleeping_launch_ids": []} for gpu in gpus], None, False

"""The head's view of the cluster: its Ray node, the control plane's connection to Ray (a
driver), and what each node has.

Membership is Ray's (`ray.nodes()`: alive or not, its address). A node's GPUs are read
there, by a task pinned to it that runs the same nvidia-smi reading as the head's own
(`query_gpu_stats`), so every node's GPUs look alike. Ray's calls block: they run in
threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm_bootstrap.cluster.ray_env import ray_environment
from vllm_bootstrap.cluster.ray_node import NodeSpec, RayNode

logger = logging.getLogger("vllm_bootstrap.cluster")
NAMESPACE = "vllm-bootstrap"
CONNECT_TIMEOUT_SECONDS = 60.0
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "address": self.address,
            "alive": self.alive,
            "head": self.head,
            "gpus": self.gpus,
            "error": self.error,
        }


class Cluster:
    """Started and stopped by the head's lifespan; `nodes()` for the routes."""

    def __init__(self, spec: NodeSpec, access_key: str, log_path: Path, grace: float) -> None:
        self._spec = spec
        self._access_key = access_key
        self._log_path = log_path
        self._grace = grace
        self.node: RayNode | None = None
        self._head_node_id: str | None = None
        self._address = f"{spec.node_address or '127.0.0.1'}:{spec.head_port}"

    async def start(self, gpu_count: int) -> None:
        """Start the head's Ray node, declaring `gpu_count` GPUs, and connect to it."""
        spec = dataclasses.replace(self._spec, gpu_count=gpu_count)
        self.node = RayNode(spec, self._access_key, self._log_path)
        self.node.start()
        await asyncio.to_thread(self._connect)

    async def stop(self) -> None:
        await asyncio.to_thread(self._disconnect)
        if self.node is not None:
            await asyncio.to_thread(self.node.stop, self._grace)

    async def nodes(self, local_gpus: list[dict[str, Any]]) -> list[NodeView]:
        """Every node Ray knows; the head's GPUs are `local_gpus` (read by the head)."""
        return await asyncio.to_thread(self._nodes, local_gpus)

    # ----------------------------------------------------------------- in threads

    def _connect(self) -> None:
        # The driver is a Ray process like the nodes: it presents the token too (read by
        # Ray once, as it is imported).
        os.environ.update(ray_environment(self._access_key))
        # Ray's crash handler would take SIGTERM too: after logging it, it ends the process
        # midway through our graceful shutdown (the launches, the Ray node left running).
        os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
        import ray  # the cluster extra: imported by a head alone

        deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
        while True:
            if self.node is None or not self.node.running:
                raise RuntimeError("the Ray head node exited at start-up (see its log)")
            try:
                ray.init(
                    address=self._address,
                    namespace=NAMESPACE,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                )
                break
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self._head_node_id = ray.get_runtime_context().get_node_id()
        logger.info("Ray head at %s: this box is node %s", self._address, self._head_node_id)

    def _disconnect(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()

    def _nodes(self, local_gpus: list[dict[str, Any]]) -> list[NodeView]:
        import ray

        views = []
        pending = {}
        for node in ray.nodes():
            node_id = node["NodeID"]
            view = NodeView(
                node_id=node_id,
                address=node["NodeManagerAddress"],
                alive=bool(node["Alive"]),
                head=node_id == self._head_node_id,
            )
            views.append(view)
            if view.head:
                view.gpus = local_gpus
            elif view.alive:
                pending[node_id] = _reading_on(node_id)
        for view in views:
            if view.node_id in pending:
                view.gpus, view.error = _result(pending[view.node_id])
        return views


def _reading_on(node_id: str) -> Any:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
    remote = ray.remote(num_cpus=0, max_retries=0)(_read_gpus)
    return remote.options(scheduling_strategy=strategy).remote()


def _result(ref: Any) -> tuple[list[dict[str, Any]], str | None]:
    import ray

    try:
        return ray.get(ref, timeout=READ_TIMEOUT_SECONDS)
    except Exception as exc:  # a node that died or hangs: said in its row, not a 500
        ray.cancel(ref, force=True)
        return [], f"no reading from this node: {type(exc).__name__}"


def _read_gpus() -> tuple[list[dict[str, Any]], str | None]:
    """On the node: its GPUs as the head reads its own (nvidia-smi), or why none."""
    from vllm_bootstrap.supervision import GPUDiscoveryError, query_gpu_stats

    try:
        return asyncio.run(query_gpu_stats()), None
    except GPUDiscoveryError as exc:
        return [], str(exc)

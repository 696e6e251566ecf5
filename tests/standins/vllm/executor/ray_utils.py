"""The stand-in's Ray executor, as vLLM's `--distributed-executor-backend ray` behaves at
start-up: it joins the running cluster (RAY_ADDRESS, with the cluster's token), asks for a
placement group of one GPU per worker (tensor x pipeline parallel), the first on the box it
runs on, packed onto as few boxes as Ray can, and waits for Ray to place it. It starts no
workers: the group holding the GPUs is what the control plane must get right."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

PLACEMENT_TIMEOUT_SECONDS = float(os.environ.get("FAKE_VLLM_RAY_PLACEMENT_SECONDS", "30"))


@dataclass
class RayWorkers:
    group: Any
    node_ids: list[str]  # the box of each worker, in rank order

    def remove(self) -> None:
        import ray
        from ray.util import remove_placement_group

        remove_placement_group(self.group)
        ray.shutdown()


def initialize_ray_cluster(world_size: int) -> RayWorkers:
    import ray
    from ray.util import placement_group, placement_group_table

    address = os.environ.get("RAY_ADDRESS", "auto")
    # vLLM lets Ray find the raylet of its box; the test's boxes share one process table,
    # where Ray would pick the head's, so the stand-in names its box (VLLM_HOST_IP).
    ray.init(
        address=address,
        logging_level=logging.ERROR,
        log_to_driver=False,
        _node_ip_address=os.environ.get("VLLM_HOST_IP"),
    )
    here = ray.util.get_node_ip_address()
    bundles: list[dict[str, float]] = [{"GPU": 1.0} for _ in range(world_size)]
    bundles[0][f"node:{here}"] = 0.001  # the driver's own box holds the first worker
    group = placement_group(bundles, strategy="PACK")
    ready = group.ready()
    done, _ = ray.wait([ready], timeout=PLACEMENT_TIMEOUT_SECONDS)
    if not done:
        from ray._private.state import available_resources_per_node

        free = {
            node[:12]: left.get("GPU", 0) for node, left in available_resources_per_node().items()
        }
        raise ValueError(
            f"Cannot provide a placement group of {world_size} GPUs within "
            f"{PLACEMENT_TIMEOUT_SECONDS:g} s: the cluster has too few free GPUs ({free} free; "
            f"the driver is on {here}, node {ray.get_runtime_context().get_node_id()[:12]})"
        )
    placed = placement_group_table(group)["bundles_to_node_id"]
    return RayWorkers(group, [placed[index] for index in range(world_size)])

"""Keeping vLLM's Ray executor on the boxes a launch across boxes holds.

vLLM places its workers itself: one placement group of a GPU per worker, its first on the
box it runs on, the rest wherever Ray sees free GPUs. Ray knows nothing of the control
plane's leases, so it could pick any box. While such a launch starts, a fence holds every
GPU Ray sees free on the boxes the launch does not hold (one placement group, a bundle per
box, pinned there by Ray's node-id label), so the only free GPUs left are the launch's.
The fence comes down once the launch is ready (its workers are placed) or has ended.

Launches across boxes start one at a time (`_one_at_a_time`): two fences at once would
keep each other's boxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from vllm_bootstrap.launches import Launch

logger = logging.getLogger("vllm_bootstrap.cluster")
FENCE_READY_SECONDS = 30.0
NODE_ID_LABEL = "ray.io/node-id"  # every Ray node carries it
_one_at_a_time = asyncio.Lock()


class BoxFence:
    def __init__(self, launch: Launch, head_node_id: str | None) -> None:
        self._launch = launch
        own = {launch.node_id or head_node_id, *launch.other_node_gpus}
        self._own = {node for node in own if node is not None}
        self._group: Any = None
        self._locked = False
        self._released = False

    async def hold(self) -> None:
        await _one_at_a_time.acquire()
        self._locked = True
        if self._released:  # the launch ended before its turn came
            self._unlock()
            return
        self._group = await asyncio.to_thread(_fence_group, self._own)
        if self._group is None:
            return  # every other box is full already: nothing to keep
        try:
            await asyncio.wait_for(
                asyncio.wrap_future(self._group.ready().future()), FENCE_READY_SECONDS
            )
        except TimeoutError:
            raise RuntimeError(
                f"Ray did not place the fence within {FENCE_READY_SECONDS:g} s"
            ) from None
        logger.info(
            "launch %s: the other boxes' free GPUs are kept from its workers",
            self._launch.launch_id,
        )

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        group, self._group = self._group, None
        if group is not None:
            from ray.util import remove_placement_group

            with contextlib.suppress(Exception):  # the cluster is gone: so is the fence
                await asyncio.to_thread(remove_placement_group, group)
        self._unlock()

    def _unlock(self) -> None:
        if self._locked:
            self._locked = False
            _one_at_a_time.release()


def _fence_group(own: set[str]) -> Any:
    """A placement group holding every free GPU of the boxes not in `own`; None when there
    is none to hold."""
    import ray
    from ray._private.state import available_resources_per_node
    from ray.util import placement_group

    alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    free = available_resources_per_node()
    bundles, selectors = [], []
    for node_id in sorted(alive - own):
        gpus = float(free.get(node_id, {}).get("GPU", 0))
        if gpus > 0:
            bundles.append({"GPU": gpus})
            selectors.append({NODE_ID_LABEL: node_id})
    if not bundles:
        return None
    return placement_group(bundles, strategy="SPREAD", bundle_label_selector=selectors)

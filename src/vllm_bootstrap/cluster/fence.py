"""Keeping vLLM's Ray executor on the boxes a launch across boxes holds.

vLLM places its workers itself: one placement group of a GPU per worker, its first on the
box it runs on, packed onto as few boxes as Ray can. Ray knows nothing of the control
plane's leases, so it could pick any box, or pack every worker onto a box bigger than
`gpus_per_node`. While such a launch starts, a fence (one placement group, a bundle per box,
pinned there by Ray's node-id label) holds every GPU Ray sees free on the boxes the launch
does not hold, and on each of its own boxes all but `gpus_per_node`: the only free GPUs left
are exactly the ones its workers should take. The fence comes down once the launch is ready
(its workers are placed) or has ended; each start (a crash restart too) raises a new one.

Launches across boxes start one at a time (`FenceTurns`): two fences at once would keep
each other's boxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from vllm_bootstrap.cluster.node_readings import alive_node_ids
from vllm_bootstrap.launches import Launch

logger = logging.getLogger("vllm_bootstrap.cluster")
FENCE_READY_SECONDS = 30.0
NODE_ID_LABEL = "ray.io/node-id"  # every Ray node carries it


class FenceTurns:
    """One fence at a time, for the cluster (its event loop's lock)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()


class BoxFence:
    def __init__(
        self, launch: Launch, head_node_id: str | None, gpus_per_node: int, turns: FenceTurns
    ) -> None:
        self._launch = launch
        own = {launch.node_id or head_node_id, *launch.other_node_gpus}
        self._own = {node for node in own if node is not None}
        self._gpus_per_node = gpus_per_node
        self._turns = turns
        self._group: Any = None
        self._locked = False
        self._released = False

    async def hold(self) -> None:
        await self._turns.lock.acquire()
        self._locked = True
        if self._released:  # the launch ended before its turn came
            self._unlock()
            return
        made = await asyncio.wait_for(
            asyncio.to_thread(_fence_group, self._own, self._gpus_per_node), FENCE_READY_SECONDS
        )
        if made is None:
            return  # nothing to keep: every other GPU is taken already
        group, ready = made
        if self._released:  # released while Ray made it: nobody else will remove it
            _remove_later(group)
            return
        self._group = group
        try:
            await asyncio.wait_for(asyncio.wrap_future(ready.future()), FENCE_READY_SECONDS)
        except TimeoutError:
            raise RuntimeError(
                f"Ray did not place the fence within {FENCE_READY_SECONDS:g} s"
            ) from None
        logger.info(
            "launch %s: the GPUs its workers must not take are fenced", self._launch.launch_id
        )

    async def release(self) -> None:
        """Idempotent; the next fence may begin at once (the group goes in the background:
        a Ray that does not answer must not hold up every later launch across boxes)."""
        if self._released:
            return
        self._released = True
        group, self._group = self._group, None
        if group is not None:
            _remove_later(group)
        self._unlock()

    def _unlock(self) -> None:
        if self._locked:
            self._locked = False
            self._turns.lock.release()


def _remove_later(group: Any) -> None:
    def remove() -> None:
        from ray.util import remove_placement_group

        with contextlib.suppress(Exception):  # the cluster is gone: so is the fence
            remove_placement_group(group)

    asyncio.get_running_loop().run_in_executor(None, remove)


def _fence_group(own: set[str], gpus_per_node: int) -> tuple[Any, Any] | None:
    """A placement group holding what the launch's workers must not take, and its ready
    ref (made here: its first call goes through Ray's head); None when there is nothing."""
    from ray._private.state import available_resources_per_node
    from ray.util import placement_group

    alive = alive_node_ids()
    free = available_resources_per_node()
    bundles, selectors = [], []
    for node_id in sorted(alive):
        gpus = float(free.get(node_id, {}).get("GPU", 0))
        keep = gpus - gpus_per_node if node_id in own else gpus
        if keep > 0:
            bundles.append({"GPU": keep})
            selectors.append({NODE_ID_LABEL: node_id})
    if not bundles:
        return None
    group = placement_group(bundles, strategy="SPREAD", bundle_label_selector=selectors)
    return group, group.ready()

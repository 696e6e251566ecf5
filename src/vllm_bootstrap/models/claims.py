"""Getting GPUs for a profile's launch: the queue, eviction, and the hand-over.

Loads that must wait for GPUs queue in arrival order. The first in line plans with
`placement.place` and evicts what the plan names; it keeps its place until its launch holds
the GPUs (`Claim.take` started it, or claimed a sleeping launch's GPUs back), so no later
load takes the GPUs it freed. A later load may go ahead of it only on GPUs that are free
now and that the first does not name: a load that cannot be placed does not hold up one
that fits beside it. A load waits at most VLLM_BATCH_MODEL_WAIT_SECONDS for its turn and
its GPUs, then fails saying who holds them.

Whether a launch may be evicted is its profile's decision (`ProfileRun.evictable`); each
victim is checked again just before it is unloaded.

On a cluster's head, a load takes free GPUs on another box before it evicts anything on
the head, and evicts on another box only when the head cannot make room (a sleeping launch
on another box wakes there, making room there if it must).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vllm_bootstrap.config import Settings
from vllm_bootstrap.launches import Launch, LaunchState
from vllm_bootstrap.log_text import escaped
from vllm_bootstrap.models.changes import Changes
from vllm_bootstrap.models.errors import Abandoned, LoadFailed
from vllm_bootstrap.models.placement import Holder, Impossible, Plan, place
from vllm_bootstrap.models.profile import ModelProfile
from vllm_bootstrap.supervision import Box, GPUDiscoveryError, NoNvidiaSmi, Supervisor
from vllm_bootstrap.usage import UsageLedger

if TYPE_CHECKING:
    from vllm_bootstrap.models.profile_run import ProfileRun

logger = logging.getLogger("vllm_bootstrap.models")


@dataclass
class Claim:
    """One load's request for GPUs: whose (its profile as it is now: a PUT or a DELETE while
    it waits is seen), whether anyone still wants it, and how to take the GPUs once they are
    free (start a launch, or wake the sleeping one; None: they were taken meanwhile, plan
    again)."""

    name: str
    profile: Callable[[], ModelProfile | None]
    wanted: Callable[[], bool]
    take: Callable[[ModelProfile, Plan, Launch | None], Awaitable[Launch | None]]
    gpu_ids: list[int] | None  # the profile's explicit GPUs, as last looked up
    queued_at: float = 0.0


class GpuClaims:
    def __init__(
        self,
        supervisor: Supervisor,
        ledger: UsageLedger,
        settings: Settings,
        changes: Changes,
        run_of: Callable[[str], ProfileRun],
    ) -> None:
        self._supervisor = supervisor
        self._ledger = ledger
        self._settings = settings
        self._changes = changes
        self._run_of = run_of
        self._queue: list[Claim] = []
        # GPUs a claim is taking right now (its launch is being admitted): no other plan
        # may count them free while the supervisor checks them (nvidia-smi takes a while).
        self._taking: dict[tuple[str | None, int], str] = {}

    async def claim(self, claim: Claim, asleep: Callable[[], Launch | None]) -> Launch:
        """Wait for GPUs, evicting what must go; the launch that now holds them. `asleep`
        finds the profile's sleeping launch (looked up again on every try)."""
        async with self._in_queue(claim):
            while True:
                seen = self._changes.version
                launch = await self._try(claim, asleep())
                if launch is not None:
                    return launch
                if not claim.wanted():
                    raise Abandoned
                self._check_deadline(claim)
                # Time alone can change the answer (an eviction grace running out).
                await self._changes.wait(seen, self._settings.eviction_grace_seconds / 2)

    @contextlib.asynccontextmanager
    async def _in_queue(self, claim: Claim) -> AsyncIterator[None]:
        claim.queued_at = time.monotonic()
        self._queue.append(claim)
        try:
            yield
        finally:
            self._queue.remove(claim)
            self._changes.notify()  # the next in line may go now

    async def _try(self, claim: Claim, asleep: Launch | None) -> Launch | None:
        profile = claim.profile()
        if profile is None:
            raise LoadFailed(f"the profile {claim.name!r} was deleted while it waited for GPUs")
        claim.gpu_ids = profile.gpu_ids
        plan = await self._plan(profile, asleep)
        if plan is None and asleep is not None and self._blocked_for_good(asleep):
            # Whatever took its GPUs is never evicted: start it afresh where there is room.
            reason = "its GPUs went to a launch that is never evicted"
            await self._run_of(profile.name).unload(asleep, reason)
            asleep, plan = None, await self._plan(profile, None)
        if plan is None or not self._may_go(claim, plan):
            return None
        if not await self._evict(plan.evict, profile.name):
            return None  # a victim got a request meanwhile: plan again
        taking = [(plan.node, gpu) for gpu in plan.gpu_ids]
        self._taking.update(dict.fromkeys(taking, profile.name))
        try:
            return await claim.take(profile, plan, asleep)
        finally:
            for key in taking:
                self._taking.pop(key, None)

    def _may_go(self, claim: Claim, plan: Plan) -> bool:
        """First in line, or taking only free GPUs that the first does not name."""
        first = self._queue[0]
        if first is claim:
            return True
        reserved = set(first.gpu_ids or []) if plan.node is None else set()  # the head's
        return not plan.evict and not reserved & set(plan.gpu_ids)

    def _check_deadline(self, claim: Claim) -> None:
        waited = time.monotonic() - claim.queued_at
        if waited >= self._settings.batch_model_wait_seconds:
            holders = sorted(
                f"{launch.launch_id} ({launch.profile or 'started by hand'}, {launch.state})"
                for launch in self._gpu_holders()
            )
            raise LoadFailed(
                f"waited {waited:.0f} s (VLLM_BATCH_MODEL_WAIT_SECONDS) for GPUs; they are "
                f"held by {', '.join(holders) or 'nobody now'}"
            )

    async def _plan(self, profile: ModelProfile, asleep: Launch | None) -> Plan | None:
        if asleep is not None and asleep.node_id is not None:
            return await self._wake_on_its_box(asleep)
        try:
            detected = [gpu.index for gpu in await self._supervisor.detect_gpus()]
        except NoNvidiaSmi:
            # A CPU box: launches own no GPUs and nothing is evicted (admission refuses gpu_ids).
            return Plan(list(profile.gpu_ids or []), [])
        except GPUDiscoveryError as exc:
            raise LoadFailed(str(exc)) from None
        gpu_ids = asleep.gpu_ids if asleep is not None else profile.gpu_ids
        asleep_on = frozenset(self._supervisor.sleeping_on())
        count = profile.gpu_count or 1
        try:
            here = place(detected, self._holders(None), count, gpu_ids, asleep_on)
        except Impossible as exc:
            here, impossible = None, exc
        else:
            impossible = None
        if (here is None or here.evict) and gpu_ids is None and asleep is None:
            boxes = await self._supervisor.other_boxes()
            elsewhere = self._elsewhere(boxes, count, evicting=False)
            if elsewhere is None and here is None:  # nor can the head make room
                elsewhere = self._elsewhere(boxes, count, evicting=True)
            if elsewhere is not None:
                return elsewhere
            if impossible is not None and any(len(box.gpus) >= count for box in boxes):
                return None  # another box is big enough: wait for room there
        if impossible is not None:
            raise LoadFailed(f"the profile {profile.name!r} cannot run here: {impossible}")
        return here

    def _elsewhere(self, boxes: list[Box], count: int, evicting: bool) -> Plan | None:
        """GPUs on another box of the cluster: free ones, or (`evicting`) freed by evicting
        what `place` would evict there."""
        for box in boxes:
            try:
                plan = place(box.gpus, self._holders(box.node_id), count)
            except Impossible:
                continue
            if plan is not None and (evicting or not plan.evict):
                return Plan(plan.gpu_ids, plan.evict, box.node_id)
        return None

    async def _wake_on_its_box(self, asleep: Launch) -> Plan | None:
        """A sleeping launch on another box wakes there, on its own GPUs."""
        node = asleep.node_id
        boxes = {box.node_id: box for box in await self._supervisor.other_boxes()}
        if node not in boxes:
            return None  # its box is gone: its launch fails, and the load starts afresh
        try:
            plan = place(boxes[node].gpus, self._holders(node), gpu_ids=asleep.gpu_ids)
        except Impossible:
            return None
        return None if plan is None else Plan(plan.gpu_ids, plan.evict, node)

    def _holders(self, node: str | None) -> list[Holder]:
        """Who holds GPUs on box `node` (None: the head): launches, and loads taking some."""
        now = time.time()
        holders = [
            Holder(
                launch.launch_id,
                tuple(launch.gpus_on(node)),
                self._evictable(launch, now),
                self._ledger.last_used(launch),
            )
            for launch in self._gpu_holders()
            if launch.gpus_on(node)
        ]
        taking = [
            Holder(f"a load of {name}", (gpu,), False, now)
            for (box, gpu), name in self._taking.items()
            if box == node
        ]
        return holders + taking

    def _gpu_holders(self) -> list[Launch]:
        return [launch for launch in self._supervisor.registry.launches() if launch.holds_gpus]

    def _evictable(self, launch: Launch, now: float) -> bool:
        return launch.profile is not None and self._run_of(launch.profile).evictable(launch, now)

    def _blocked_for_good(self, asleep: Launch) -> bool:
        """A launch that is never evicted holds one of the sleeping launch's GPUs."""
        wanted = set(asleep.gpu_ids)
        return any(
            set(launch.gpus_on(asleep.node_id)) & wanted and self.never_evicted(launch)
            for launch in self._gpu_holders()
        )

    def never_evicted(self, launch: Launch) -> bool:
        """Started by hand, or of a pinned profile: no load may evict it, busy or not."""
        return launch.profile is None or not self._run_of(launch.profile).evictable_kind()

    async def _evict(self, launch_ids: list[str], wanted_by: str) -> bool:
        """Unload each launch in turn; False if one got a request meanwhile."""
        for launch_id in launch_ids:
            launch = self._supervisor.registry.find(launch_id)
            if launch is None or not launch.holds_gpus or launch.profile is None:
                continue
            if launch.state is not LaunchState.READY or not self._evictable(launch, time.time()):
                return False
            logger.info(
                "model %s: evicting launch %s, idle for %.0f s, to make room for %s",
                escaped(launch.profile),
                launch_id,
                time.time() - self._ledger.last_used(launch),
                escaped(wanted_by),
            )
            reason = f"evicted to make room for {wanted_by}"
            if not await self._run_of(launch.profile).unload(launch, reason, only_if_idle=True):
                return False
        return True

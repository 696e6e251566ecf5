"""Getting GPUs for a profile's launch: the queue, eviction, and the launch (or wake) itself.

Loads that must wait for GPUs queue in arrival order. The first in line plans with
`placement.place` and evicts what the plan names; it keeps its place until its launch holds
the GPUs (admitted, or waking), so no later load takes the GPUs it freed. A later load may
go ahead of it only on GPUs that are free now and that the first does not name: a load that
cannot be placed does not hold up one that fits beside it. A load waits at most
VLLM_BATCH_MODEL_WAIT_SECONDS for its turn and its GPUs, then fails saying who holds them.

Evictable: a ready launch of a profile, not pinned, not being unloaded, with nothing in
flight and not used in the last EVICTION_GRACE_SECONDS (requests that waited for it may
not have reached it yet). Each victim is checked again just before it is unloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from vllm_bootstrap.config import Settings
from vllm_bootstrap.launches.record import Launch
from vllm_bootstrap.launches.states import LaunchState
from vllm_bootstrap.log_text import escaped
from vllm_bootstrap.models import sleep_mode
from vllm_bootstrap.models.placement import Holder, Impossible, Plan, place
from vllm_bootstrap.models.profile import ModelProfile
from vllm_bootstrap.models.store import ProfileStore
from vllm_bootstrap.models.unloading import Unloader, WakeFailed
from vllm_bootstrap.supervision.errors import LaunchRefused
from vllm_bootstrap.supervision.gpus import GPUDiscoveryError, NoNvidiaSmi
from vllm_bootstrap.supervision.spec import LaunchSpec
from vllm_bootstrap.supervision.supervisor import Supervisor

logger = logging.getLogger("vllm_bootstrap.models")

EVICTION_GRACE_SECONDS = 1.0
# How often a waiting load looks again without being told (a grace period running out).
RECHECK_SECONDS = 0.5


class LoadFailed(RuntimeError):
    """The profile could not be brought up; the message says why."""


class Abandoned(Exception):
    """Nobody waits any more for a load that had not got its GPUs: it gives its place up."""


@dataclass
class Claim:
    """One load's request for GPUs: whose, why, and whether anyone still wants it."""

    name: str
    reason: str
    wanted: Callable[[], bool]
    queued_at: float = 0.0


class GpuClaims:
    def __init__(
        self,
        supervisor: Supervisor,
        profiles: ProfileStore,
        unloader: Unloader,
        settings: Settings,
        changed: asyncio.Event,
    ) -> None:
        self._supervisor = supervisor
        self._profiles = profiles
        self._unloader = unloader
        self._settings = settings
        self._changed = changed
        self._queue: list[Claim] = []

    def is_queued(self, name: str) -> bool:
        return any(claim.name == name for claim in self._queue)

    async def claim(self, claim: Claim) -> Launch:
        """Wait for GPUs, evicting what must go; the launch started (or the sleeping launch
        claimed again, now `waking`)."""
        async with self._in_queue(claim):
            while True:
                self._changed.clear()
                launch = await self._try(claim)
                if launch is not None:
                    return launch
                if not claim.wanted():
                    raise Abandoned
                self._check_deadline(claim)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), RECHECK_SECONDS)

    @contextlib.asynccontextmanager
    async def _in_queue(self, claim: Claim) -> AsyncIterator[None]:
        claim.queued_at = time.monotonic()
        self._queue.append(claim)
        try:
            yield
        finally:
            self._queue.remove(claim)
            self._changed.set()  # the next in line may go now

    async def _try(self, claim: Claim) -> Launch | None:
        profile = self._profiles.get(claim.name)
        if profile is None:
            raise LoadFailed(f"the profile {claim.name!r} was deleted while it waited for GPUs")
        asleep = self._sleeping_launch(claim.name)
        plan = await self._plan(profile, asleep)
        if plan is None and asleep is not None and self._blocked_for_good(asleep.gpu_ids):
            # Whatever took its GPUs is never evicted: start it afresh where there is room.
            await self._unloader.unload(asleep, "its GPUs went to a launch that is never evicted")
            asleep, plan = None, await self._plan(profile, None)
        if plan is None or not self._may_go(claim, plan):
            return None
        if not await self._evict(plan.evict, claim.name):
            return None  # a victim got a request meanwhile: plan again
        if asleep is not None:
            try:
                self._unloader.begin_waking(asleep, claim.reason)
            except WakeFailed:
                return None  # stopped or taken meanwhile: plan again
            return asleep
        return await self._launch(claim, profile, plan)

    def _may_go(self, claim: Claim, plan: Plan) -> bool:
        """First in line, or taking only free GPUs that the first does not name."""
        first = self._queue[0]
        if first is claim:
            return True
        named = self._profiles.get(first.name)
        reserved = set(named.gpu_ids or []) if named is not None else set()
        return not plan.evict and not reserved & set(plan.gpu_ids)

    def _check_deadline(self, claim: Claim) -> None:
        waited = time.monotonic() - claim.queued_at
        limit = self._settings.batch_model_wait_seconds
        if waited >= limit:
            holders = sorted(
                f"{launch.launch_id} ({launch.profile or 'started by hand'}, {launch.state})"
                for launch in self._supervisor.registry.launches()
                if launch.holds_gpus and launch.gpu_ids
            )
            raise LoadFailed(
                f"waited {waited:.0f} s (VLLM_BATCH_MODEL_WAIT_SECONDS) for GPUs; they are "
                f"held by {', '.join(holders) or 'nobody now'}"
            )

    async def _launch(self, claim: Claim, profile: ModelProfile, plan: Plan) -> Launch:
        logger.info(
            "model %s: loading on GPUs %s (%s)", escaped(claim.name), plan.gpu_ids, claim.reason
        )
        try:
            return await self._supervisor.launch(_spec(profile, plan.gpu_ids, claim.reason))
        except LaunchRefused as refused:
            raise LoadFailed(f"the launch was refused: {refused.message}") from None

    async def _plan(self, profile: ModelProfile, asleep: Launch | None) -> Plan | None:
        try:
            detected = [gpu.index for gpu in await self._supervisor.detect_gpus()]
        except NoNvidiaSmi:
            # A CPU box: launches own no GPUs and nothing is evicted (admission refuses gpu_ids).
            return Plan(list(profile.gpu_ids or []), [])
        except GPUDiscoveryError as exc:
            raise LoadFailed(str(exc)) from None
        gpu_ids = asleep.gpu_ids if asleep is not None else profile.gpu_ids
        asleep_on = frozenset(
            gpu
            for launch in self._supervisor.registry.launches()
            if launch.gpus_released and launch.state is LaunchState.SLEEPING
            for gpu in launch.gpu_ids
        )
        try:
            return place(detected, self._holders(), profile.gpu_count or 1, gpu_ids, asleep_on)
        except Impossible as exc:
            raise LoadFailed(f"the profile {profile.name!r} cannot run here: {exc}") from None

    def _holders(self) -> list[Holder]:
        now = time.time()
        return [
            Holder(
                launch.launch_id,
                tuple(launch.gpu_ids),
                self._evictable(launch, now),
                launch.last_used,
            )
            for launch in self._supervisor.registry.launches()
            if launch.holds_gpus and launch.gpu_ids
        ]

    def _evictable(self, launch: Launch, now: float) -> bool:
        return (
            self._evictable_kind(launch)
            and launch.launch_id not in self._unloader.busy
            and self._unloader.is_idle(launch)
            and now - launch.last_used >= EVICTION_GRACE_SECONDS
        )

    def _evictable_kind(self, launch: Launch) -> bool:
        """Evictable in principle, busy or not: a profile's launch, not pinned."""
        if launch.profile is None:
            return False
        profile = self._profiles.get(launch.profile)
        return not (profile is not None and profile.pinned)

    def _blocked_for_good(self, gpu_ids: list[int]) -> bool:
        return any(
            set(launch.gpu_ids) & set(gpu_ids) and not self._evictable_kind(launch)
            for launch in self._supervisor.registry.launches()
            if launch.holds_gpus
        )

    async def _evict(self, launch_ids: list[str], wanted_by: str) -> bool:
        """Unload each launch in turn; False if one got a request meanwhile."""
        for launch_id in launch_ids:
            launch = self._supervisor.registry.find(launch_id)
            if launch is None or not launch.holds_gpus:
                continue
            if not self._evictable(launch, time.time()):
                return False
            logger.info(
                "model %s: evicting launch %s, idle for %.0f s, to make room for %s",
                escaped(launch.profile or "?"),
                launch_id,
                time.time() - launch.last_used,
                escaped(wanted_by),
            )
            reason = f"evicted to make room for {wanted_by}"
            if not await self._unloader.unload(launch, reason, only_if_idle=True):
                return False
        return True

    def _sleeping_launch(self, name: str) -> Launch | None:
        for launch in self._supervisor.registry.launches():
            if launch.profile == name and launch.state is LaunchState.SLEEPING:
                return launch
        return None


def _spec(profile: ModelProfile, gpu_ids: list[int], reason: str) -> LaunchSpec:
    extra_args = [*profile.extra_args, "--served-model-name", profile.name]
    env = dict(profile.env)
    if profile.sleep:
        extra_args += sleep_mode.SLEEP_ARGS
        env.update(sleep_mode.SLEEP_ENV)
    return LaunchSpec(
        model=profile.model,
        gpu_ids=gpu_ids,
        extra_args=extra_args,
        env=env,
        profile=profile.name,
        reason=reason,
    )

"""One model profile's life on this box: `ProfileRun` owns, for one profile name,

- the load under way (one task, shared by every waiter, who shields it: a client that gives
  up does not cancel it for the others) and the interest that keeps it wanted;
- the memory of its last failed load (requests in the next seconds are told at once);
- its place in the GPU queue while it waits (`claims.Claim`);
- its unloads: stop, or vLLM's sleep mode (sleep, and wake for the next load), during which
  it is `busy` and neither evicted nor unloaded again;
- the decisions about its launch: idle, evictable, past its idle TTL (`is_idle` is the one
  place that decides "idle"; eviction and the TTL both ask it).

A launch's state moves through the supervisor's compare-and-swap (`Supervisor.move`), so a
launch that crashed or was stopped meanwhile is never moved by a stale decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from vllm_bootstrap.launches import LOADING_STATES, Launch, LaunchState, iso_time
from vllm_bootstrap.log_text import escaped
from vllm_bootstrap.models import sleep_mode, unload
from vllm_bootstrap.models.claims import Claim
from vllm_bootstrap.models.errors import (
    Abandoned,
    LoadFailed,
    LoadTimedOut,
    ModelLoadFailed,
    QueueFull,
)
from vllm_bootstrap.models.placement import Plan
from vllm_bootstrap.models.profile import ModelProfile
from vllm_bootstrap.models.wing import Wing
from vllm_bootstrap.supervision import LaunchRefused, ResourceConflict

logger = logging.getLogger("vllm_bootstrap.models")

# A batch keeps its interest in a load alive by asking again (the gates do, every second).
INTEREST_SECONDS = 5.0
# After a failed load, /v1 requests are told so at once for this long instead of each
# starting vLLM again.
FAILED_LOAD_MEMORY_SECONDS = 10.0
_S = LaunchState


@dataclass
class _Load:
    reason: str
    task: asyncio.Task[None]
    waiters: int = 0
    interest_until: float = 0.0
    payer: str | None = None  # the scoped key whose request started it
    started: float = field(default_factory=time.monotonic)

    def wanted(self) -> bool:
        return self.waiters > 0 or time.monotonic() < self.interest_until


@dataclass(frozen=True)
class _Failure:
    at: float
    message: str


class ProfileRun:
    def __init__(self, name: str, wing: Wing) -> None:
        self.name = name
        self._wing = wing
        self._load: _Load | None = None
        self._failure: _Failure | None = None
        self._claim: Claim | None = None
        self.busy = False  # unloading, or waking, now

    # ----------------------------------------------------------------- what it is now

    def profile(self) -> ModelProfile | None:
        return self._wing.profiles.get(self.name)

    def launch(self) -> Launch | None:
        return self._wing.index.live(self.name)

    def state(self) -> str:
        """ "loaded", "loading", "queued", "sleeping" or "not loaded"."""
        launch = self.launch()
        if launch is not None and launch.state is _S.READY:
            return "loaded"
        if self._claim is not None:
            return "queued"
        if launch is not None and launch.state in (_S.SLEEPING, _S.FALLING_ASLEEP):
            return "sleeping"
        if (launch is not None and launch.state in LOADING_STATES) or self._load is not None:
            return "loading"
        return "not loaded"

    def status(self) -> dict[str, object]:
        """What GET /models shows of the profile's launch."""
        launch = self.launch()
        ledger = self._wing.ledger
        last = ledger.last_request_at(launch) if launch else None
        return {
            "state": self.state(),
            "launch_id": launch.launch_id if launch else None,
            "launch_state": launch.state.value if launch else None,
            "reason": launch.reason if launch else None,
            "last_request_at": iso_time(last),
            "in_flight": ledger.in_flight(launch.launch_id) if launch else 0,
            "waiting": self.waiters,
            "last_error": self._failure.message if self._failure else None,
        }

    @property
    def waiters(self) -> int:
        return self._load.waiters if self._load else 0

    def is_idle(self, launch: Launch) -> bool:
        """Ready with nothing in flight, through any route: the one definition of idle."""
        return launch.state is _S.READY and self._wing.ledger.in_flight(launch.launch_id) == 0

    def evictable_kind(self) -> bool:
        """May its launches be evicted at all (busy or not)? Not when pinned."""
        profile = self.profile()
        return not (profile is not None and profile.pinned)

    def evictable(self, launch: Launch, now: float) -> bool:
        """Evictable now: not pinned, not busy, idle, and not used within the grace (requests
        that waited for it to load may not have reached it yet)."""
        grace = self._wing.settings.eviction_grace_seconds
        return (
            self.evictable_kind()
            and not self.busy
            and self.is_idle(launch)
            and now - self._wing.ledger.last_used(launch) >= grace
        )

    def idle_expired(self, launch: Launch, now: float) -> float | None:
        """Seconds idle when past the profile's idle_ttl_seconds, else None."""
        profile = self.profile()
        if profile is None or profile.idle_ttl_seconds is None or not self.is_idle(launch):
            return None
        idle = now - self._wing.ledger.last_used(launch)
        return idle if idle >= profile.idle_ttl_seconds else None

    # ----------------------------------------------------------------- asking for it

    async def wait_ready(self, reason: str, payer: str | None = None) -> None:
        """Return once a launch of the profile is ready, loading it if needed; its refusals
        (QueueFull, LoadTimedOut, ModelLoadFailed) say why in a client's words."""
        wing = self._wing
        if wing.router.replica_count(self.name):
            return
        failure = self._failure
        if failure is not None and time.monotonic() - failure.at < FAILED_LOAD_MEMORY_SECONDS:
            raise ModelLoadFailed(self.name, failure.message)
        if wing.waiting_requests() >= wing.settings.model_queue_limit:
            raise QueueFull(wing.settings.model_queue_limit)
        load = self._start(reason, payer)
        load.waiters += 1
        try:
            async with asyncio.timeout(wing.settings.batch_model_wait_seconds):
                await asyncio.shield(load.task)
        except TimeoutError:
            raise LoadTimedOut(self.name, wing.settings.batch_model_wait_seconds) from None
        except LoadFailed as exc:
            raise ModelLoadFailed(self.name, str(exc)) from None
        except asyncio.CancelledError:
            if load.task.cancelled() and not _being_cancelled():
                raise ModelLoadFailed(self.name, "the server is shutting down") from None
            raise
        finally:
            load.waiters -= 1

    def demand(self, reason: str, since: float) -> bool:
        """Start loading without waiting (batches ask again while they wait); False when a
        load failed after `since` (the asker's lines then fail instead of loading again)."""
        if self._failure is not None and self._failure.at >= since:
            return False
        if not self._wing.router.replica_count(self.name):
            self._start(reason).interest_until = time.monotonic() + INTEREST_SECONDS
        return True

    def load(self, reason: str) -> None:
        """Start loading for whoever asked (an explicit load, a preload), however long it
        must wait for GPUs."""
        self.forget_failure()
        if not self._wing.router.replica_count(self.name):
            self._start(reason).interest_until = float("inf")

    def forgettable(self) -> bool:
        """Nothing under way and no launch: the object can go with its profile."""
        return self._load is None and not self.busy and self.launch() is None

    def forget_failure(self) -> None:
        """A changed profile deserves a fresh try."""
        self._failure = None

    def cancel(self) -> asyncio.Task[None] | None:
        if self._load is None:
            return None
        self._load.task.cancel()
        return self._load.task

    # ----------------------------------------------------------------- one load

    def _start(self, reason: str, payer: str | None = None) -> _Load:
        if self._load is None:
            task = asyncio.create_task(self._run(), name=f"load-{self.name}")
            # Batches and preloads do not await the task: its failure is logged and kept.
            task.add_done_callback(retrieve_exception)
            self._load = _Load(reason, task, payer=payer)
        return self._load

    async def _run(self) -> None:
        load = self._load
        try:
            await self._bring_up()
        except Abandoned:
            logger.info(
                "model %s: nobody waits for it any more; not loading it", escaped(self.name)
            )
        except Exception as exc:
            message = str(exc) if isinstance(exc, LoadFailed) else f"{type(exc).__name__}: {exc}"
            self._failure = _Failure(time.monotonic(), message)
            logger.warning("model %s: load failed: %s", escaped(self.name), escaped(message))
            raise LoadFailed(message) from None
        else:
            self._failure = None
            if load is not None and load.payer is not None:
                self._charge(load.payer, time.monotonic() - load.started)
        finally:
            self._load = None
            self._wing.changes.notify()

    def _charge(self, payer: str, seconds: float) -> None:
        """The GPU time of the load, to the key whose request started it."""
        launch = self.launch()
        gpu_seconds = seconds * len(launch.gpu_ids) if launch is not None else 0.0
        for listener in self._wing.paid_loads:
            listener(payer, self.name, gpu_seconds)

    async def _bring_up(self) -> None:
        changes = self._wing.changes
        while True:
            seen = changes.version
            launch = self.launch()
            if self.busy or (launch is not None and launch.state is _S.FALLING_ASLEEP):
                await changes.wait(seen, self._wing.settings.eviction_grace_seconds)
                continue  # unloading: wake it (or start afresh) once that is done
            if launch is None or launch.state is _S.SLEEPING:
                launch = await self._claim_gpus()
                if launch.state is _S.WAKING:
                    await self._finish_waking(launch)
            await self._until_ready(launch)
            return

    async def _claim_gpus(self) -> Launch:
        load = self._load
        wanted = load.wanted if load is not None else (lambda: True)
        profile = self.profile()
        gpu_ids = profile.gpu_ids if profile is not None else None
        claim = Claim(self.name, self.profile, wanted, self._take, gpu_ids)
        self._claim = claim
        try:
            return await self._wing.claims.claim(claim, lambda: self._wing.index.asleep(self.name))
        finally:
            self._claim = None

    async def _take(
        self, profile: ModelProfile, plan: Plan, asleep: Launch | None
    ) -> Launch | None:
        """The GPUs are free: wake the sleeping launch on them, or start a new one. None when
        the sleeping launch cannot take them back (stopped, or its GPUs taken meanwhile)."""
        if asleep is not None:
            woken = unload.move(self._wing, asleep, _S.SLEEPING, _S.WAKING, self._reason())
            return asleep if woken else None
        where = f" of node {plan.node}" if plan.node else ""
        logger.info(
            "model %s: loading on GPUs %s%s (%s)",
            escaped(self.name),
            plan.gpu_ids,
            where,
            self._reason(),
        )
        try:
            spec = profile.launch_spec(plan.gpu_ids, self._reason(), plan.node)
            return await self._wing.supervisor.launch(spec)
        except ResourceConflict as conflict:
            if set(plan.gpu_ids) & set(self._wing.supervisor.gpu_owners(plan.node)):
                return None  # another launch of ours took them meanwhile: plan again
            raise LoadFailed(f"the launch was refused: {conflict.message}") from None
        except LaunchRefused as refused:
            raise LoadFailed(f"the launch was refused: {refused.message}") from None

    def _reason(self) -> str:
        return self._load.reason if self._load else "a load"

    async def _until_ready(self, launch: Launch) -> None:
        changes = self._wing.changes
        while launch.state is not _S.READY:
            if launch.is_terminal or launch.state is _S.STOPPING:
                raise LoadFailed(
                    f"launch {launch.launch_id} {launch.state}: {launch.error or 'no error given'}"
                )
            await changes.wait(changes.version, self._wing.settings.eviction_grace_seconds)

    # ----------------------------------------------------------------- unloading, sleep, wake

    async def unload(self, launch: Launch, reason: str, only_if_idle: bool = False) -> bool:
        """Free the launch's GPUs: to sleep if the profile says so, else stop it (a sleeping
        launch is stopped: its weights leave CPU memory too). False, doing nothing, when it
        is busy already, or `only_if_idle` and it is not idle (checked here, with no wait
        before the unload begins), or when it moved meanwhile and was not unloaded."""
        if not self.claim_unload(launch, only_if_idle):
            return False
        return await self.unload_claimed(launch, reason)

    def claim_unload(self, launch: Launch, only_if_idle: bool = False) -> bool:
        """Mark the profile busy for an unload of `launch`, if it may be unloaded now."""
        if self.busy or launch.is_terminal or (only_if_idle and not self.is_idle(launch)):
            return False
        self.busy = True
        return True

    async def unload_claimed(self, launch: Launch, reason: str) -> bool:
        try:
            profile = self.profile()
            if profile is not None and profile.sleep and launch.state is _S.READY:
                return await unload.put_to_sleep(self._wing, launch, reason)
            logger.info("launch %s: stopping (%s)", launch.launch_id, escaped(reason))
            await unload.stop(self._wing, launch)
            return True
        finally:
            self.busy = False
            self._wing.changes.notify()

    async def settle_after_restart(self, launch: Launch) -> None:
        """Finish what a previous run of the control plane left half done: a launch that was
        falling asleep is put to sleep, one that was waking is woken, and a ready one of a
        sleep profile that vLLM says is asleep (its last state change was never written) is
        recorded as asleep, so the next request wakes it."""
        self.busy = True
        try:
            if launch.state is _S.FALLING_ASLEEP:
                await unload.finish_falling_asleep(self._wing, launch, "asleep after a restart")
            elif launch.state is _S.WAKING:
                await unload.finish_waking(self._wing, launch)
            elif await sleep_mode.is_sleeping(self._wing.pool, launch):
                logger.info("launch %s: found asleep after a restart", launch.launch_id)
                unload.record_asleep(self._wing, launch, "found asleep after a restart")
        except LoadFailed as exc:
            logger.warning("%s", escaped(str(exc)))
        finally:
            self.busy = False
            self._wing.changes.notify()

    async def _finish_waking(self, launch: Launch) -> None:
        self.busy = True
        try:
            await unload.finish_waking(self._wing, launch)
        finally:
            self.busy = False
            self._wing.changes.notify()


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def retrieve_exception(task: asyncio.Task[Any]) -> None:
    """A done callback for tasks nobody awaits: their failure is logged where it happens,
    and retrieving it here keeps asyncio from reporting it again at exit."""
    if not task.cancelled():
        task.exception()

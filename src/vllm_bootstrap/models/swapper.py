"""On-demand loading of model profiles: one load per profile, shared by whoever waits for it.

A request (through /v1 or a batch line) for a profile with no ready launch starts a `_Load`,
or joins the one under way. A load finds the profile's launch (waking it, if it sleeps) or
starts one on GPUs that `placement.place` chooses, evicting launches of other profiles when
it must: never a pinned one, one started by hand, one still loading, or one with requests in
flight or used in the last EVICTION_GRACE_SECONDS (its first requests may not have arrived
yet). Loads that must wait for GPUs queue in arrival order; only the first in the queue may
take GPUs, and it stays first until its launch holds them, so a large model is not starved
by small ones and no other load takes the GPUs it freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from vllm_bootstrap.config import Settings
from vllm_bootstrap.launches.record import Launch
from vllm_bootstrap.launches.states import LaunchState
from vllm_bootstrap.log_text import escaped
from vllm_bootstrap.models import sleep_mode
from vllm_bootstrap.models.batch_order import batch_order
from vllm_bootstrap.models.placement import Holder, Impossible, Plan, place
from vllm_bootstrap.models.profile import ModelProfile
from vllm_bootstrap.models.store import ProfileStore
from vllm_bootstrap.models.unloading import Unloader, WakeFailed
from vllm_bootstrap.serving.balancer import ModelBalancer
from vllm_bootstrap.serving.openai import OnDemandRefusal
from vllm_bootstrap.supervision.errors import LaunchRefused
from vllm_bootstrap.supervision.gpus import GPUDiscoveryError, NoNvidiaSmi
from vllm_bootstrap.supervision.spec import LaunchSpec
from vllm_bootstrap.supervision.supervisor import Supervisor
from vllm_bootstrap.upstream import UpstreamPool

logger = logging.getLogger("vllm_bootstrap.models")

EVICTION_GRACE_SECONDS = 1.0
# How often a waiting load looks again without being told (a grace period running out).
RECHECK_SECONDS = 0.5
# A batch keeps its interest in a load alive by asking again (the gates do, every second).
INTEREST_SECONDS = 5.0
# After a failed load, /v1 requests are told so at once for this long instead of each
# starting vLLM again.
FAILED_LOAD_MEMORY_SECONDS = 10.0
_S = LaunchState
_LOADING = (_S.BOOTSTRAPPING, _S.RESTARTING, _S.WAKING)


class LoadFailed(RuntimeError):
    """The profile could not be brought up; the message says why."""


class LoadTimedOut(RuntimeError):
    pass


class QueueFull(RuntimeError):
    pass


class _Abandoned(Exception):
    """Nobody waits for a load that was still queued: it gives its place up."""


@dataclass
class _Load:
    name: str
    reason: str
    task: asyncio.Task[None] | None = None
    waiters: int = 0
    interest_until: float = 0.0
    queued: bool = False

    def wanted(self) -> bool:
        return self.waiters > 0 or time.monotonic() < self.interest_until


@dataclass
class _Failure:
    at: float
    message: str


class ModelSwapper:
    def __init__(
        self,
        supervisor: Supervisor,
        profiles: ProfileStore,
        balancer: ModelBalancer,
        pool: UpstreamPool,
        settings: Settings,
    ) -> None:
        self.supervisor = supervisor
        self.profiles = profiles
        self.balancer = balancer
        self.settings = settings
        self.unloader = Unloader(supervisor, profiles, pool, settings)
        self._loads: dict[str, _Load] = {}
        self._queue: list[_Load] = []
        self._failures: dict[str, _Failure] = {}
        self._changed = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        supervisor.registry.subscribe(self._poke)
        balancer.idle_listeners.append(self._poke)

    # ----------------------------------------------------------------- /v1

    def is_profile(self, name: str) -> bool:
        return self.profiles.get(name) is not None

    async def serve(self, name: str, reason: str) -> None:
        """wait_ready, its refusals in the words and statuses a client gets."""
        try:
            await self.wait_ready(name, reason)
        except QueueFull:
            message = (
                f"{self.settings.model_queue_limit} requests are already waiting for models "
                "to load (VLLM_BOOTSTRAP_MODEL_QUEUE_LIMIT); retry later"
            )
            raise OnDemandRefusal(429, "model_queue_full", message) from None
        except LoadTimedOut:
            message = (
                f"The model `{name}` did not load within "
                f"{self.settings.batch_model_wait_seconds:g} s (VLLM_BATCH_MODEL_WAIT_SECONDS); "
                "it may be waiting for GPUs: see GET /models"
            )
            raise OnDemandRefusal(503, "model_loading", message) from None
        except LoadFailed as exc:
            message = f"The model `{name}` could not be loaded: {exc}"
            raise OnDemandRefusal(503, "model_load_failed", message) from None

    async def wait_ready(self, name: str, reason: str) -> None:
        """Return once a launch of profile `name` is ready, loading it if needed.

        QueueFull when too many requests wait already; LoadTimedOut after the wait limit;
        LoadFailed when the load failed (or did in the last few seconds).
        """
        if self.balancer.replica_count(name):
            return
        failure = self._failures.get(name)
        if failure is not None and time.monotonic() - failure.at < FAILED_LOAD_MEMORY_SECONDS:
            raise LoadFailed(failure.message)
        if self.waiting_requests() >= self.settings.model_queue_limit:
            raise QueueFull(name)
        load = self._start(name, reason)
        assert load.task is not None
        load.waiters += 1
        try:
            async with asyncio.timeout(self.settings.batch_model_wait_seconds):
                await asyncio.shield(load.task)
        except TimeoutError:
            raise LoadTimedOut(name) from None
        finally:
            load.waiters -= 1

    def models_listing(self) -> dict[str, Any]:
        """GET /v1/models: the ready launches' models, then the profiles not loaded now."""
        listing = self.balancer.models_listing()
        for entry in listing["data"]:
            entry["loaded"] = True
        served = {entry["id"] for entry in listing["data"]}
        listing["data"] += [
            {
                "id": profile.name,
                "object": "model",
                "created": 0,
                "owned_by": "vllm-bootstrap",
                "root": profile.model,
                "loaded": False,
                "state": self.load_state(profile.name),
            }
            for profile in self.profiles.all()
            if profile.name not in served
        ]
        return listing

    # ----------------------------------------------------------------- batches, API, start-up

    def demand(self, name: str, reason: str) -> bool:
        """Start loading profile `name` without waiting (batches ask again while they wait).
        False when `name` is no profile, or its last load failed within the wait limit."""
        if not self.is_profile(name):
            return False
        failure = self._failures.get(name)
        if failure is not None and (
            time.monotonic() - failure.at < self.settings.batch_model_wait_seconds
        ):
            return False
        if not self.balancer.replica_count(name):
            self._start(name, reason).interest_until = time.monotonic() + INTEREST_SECONDS
        return True

    async def batch_order(self, models: list[str]) -> tuple[list[str], list[str]]:
        return await batch_order(models, self.profiles, self.supervisor, self.load_state)

    def load(self, name: str, reason: str) -> None:
        """Start loading profile `name` for whoever asked (POST /models/{name}/load), however
        long it must wait for GPUs."""
        self.forget_failure(name)
        if not self.balancer.replica_count(name):
            self._start(name, reason).interest_until = float("inf")

    def start(self) -> None:
        """After recovery: finish the wakes a previous run left half done (vLLM's /wake_up
        does nothing to an awake engine), then load every profile marked `preload`."""
        for launch in self.supervisor.registry.launches():
            if launch.profile is not None and launch.state is _S.WAKING:
                self.unloader.busy.add(launch.launch_id)
                waking = asyncio.create_task(self.unloader.finish_waking(launch))
                self._background.add(waking)
                waking.add_done_callback(self._background.discard)
                waking.add_done_callback(_retrieve)
        for profile in self.profiles.all():
            if profile.preload:
                self.load(profile.name, "preload")

    async def unload(self, launch: Launch, reason: str) -> None:
        await self.unloader.unload(launch, reason)

    def forget_failure(self, name: str) -> None:
        """A changed profile deserves a fresh try."""
        self._failures.pop(name, None)

    def waiting_requests(self) -> int:
        return sum(load.waiters for load in self._loads.values())

    # ----------------------------------------------------------------- what is where

    def launch_of(self, name: str) -> Launch | None:
        """The live launch of profile `name` (not one that is stopping)."""
        for launch in self.supervisor.registry.launches():
            if launch.profile == name and launch.state is not _S.STOPPING:
                return launch
        return None

    def load_state(self, name: str) -> str:
        """ "loaded", "loading", "queued", "sleeping" or "not loaded"."""
        launch = self.launch_of(name)
        load = self._loads.get(name)
        if launch is not None and launch.state is _S.READY:
            return "loaded"
        if load is not None and load.queued:
            return "queued"
        if launch is not None and launch.state is _S.SLEEPING:
            return "sleeping"
        if (launch is not None and launch.state in _LOADING) or load is not None:
            return "loading"
        return "not loaded"

    def status(self, name: str) -> dict[str, Any]:
        """What GET /models shows of a profile's launch."""
        launch = self.launch_of(name)
        failure = self._failures.get(name)
        return {
            "state": self.load_state(name),
            "launch_id": launch.launch_id if launch else None,
            "launch_state": launch.state.value if launch else None,
            "reason": launch.reason if launch else None,
            "last_request_at": launch.to_public()["last_request_at"] if launch else None,
            "in_flight": self.balancer.in_flight(launch.launch_id) if launch else 0,
            "last_error": failure.message if failure else None,
        }

    # ----------------------------------------------------------------- one load

    def _start(self, name: str, reason: str) -> _Load:
        load = self._loads.get(name)
        if load is None:
            load = _Load(name, reason)
            load.task = asyncio.create_task(self._run(load), name=f"load-{name}")
            # Batches and preloads do not await the task: its failure is logged and kept.
            load.task.add_done_callback(_retrieve)
            self._loads[name] = load
        return load

    async def _run(self, load: _Load) -> None:
        try:
            await self._bring_up(load)
        except _Abandoned:
            logger.info("model %s: nobody waits for it any more; not loading it", load.name)
        except Exception as exc:
            message = str(exc) if isinstance(exc, LoadFailed) else f"{type(exc).__name__}: {exc}"
            self._failures[load.name] = _Failure(time.monotonic(), message)
            logger.warning("model %s: load failed: %s", escaped(load.name), escaped(message))
            raise LoadFailed(message) from None
        else:
            self._failures.pop(load.name, None)
        finally:
            del self._loads[load.name]
            self._poke()

    async def _bring_up(self, load: _Load) -> None:
        launch = self.launch_of(load.name)
        if launch is None or launch.state is _S.SLEEPING:
            profile = self.profiles.get(load.name)
            if profile is None:
                raise LoadFailed(f"the profile {load.name!r} was deleted")
            async with self._turn(load):
                launch = await self._claim_gpus(load, profile, asleep=launch)
            if launch.state is _S.WAKING:
                try:
                    await self.unloader.finish_waking(launch)
                except WakeFailed as exc:
                    raise LoadFailed(str(exc)) from None
        await self._until_ready(launch)

    @contextlib.asynccontextmanager
    async def _turn(self, load: _Load) -> AsyncIterator[None]:
        """A place in the queue for GPUs, kept until the load's launch holds them."""
        self._queue.append(load)
        load.queued = True
        try:
            yield
        finally:
            load.queued = False
            self._queue.remove(load)
            self._poke()  # the next in the queue may go now

    async def _claim_gpus(
        self, load: _Load, profile: ModelProfile, asleep: Launch | None
    ) -> Launch:
        """Once first in the queue: evict what must go, then start the launch (or claim the
        sleeping launch's GPUs). Returns the launch, which holds its GPUs."""
        while True:
            self._changed.clear()
            if self._queue[0] is load:
                plan = await self._plan(profile, asleep)
                if plan is not None and await self._evict(plan.evict, load.name):
                    return await self._wake_or_launch(load, profile, plan, asleep)
            if not load.wanted():
                raise _Abandoned
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), RECHECK_SECONDS)

    async def _wake_or_launch(
        self, load: _Load, profile: ModelProfile, plan: Plan, asleep: Launch | None
    ) -> Launch:
        if asleep is not None:
            try:
                self.unloader.begin_waking(asleep, load.reason)
            except WakeFailed as exc:
                raise LoadFailed(str(exc)) from None
            return asleep
        logger.info(
            "model %s: loading on GPUs %s (%s)", escaped(load.name), plan.gpu_ids, load.reason
        )
        try:
            return await self.supervisor.launch(self._spec(profile, plan.gpu_ids, load.reason))
        except LaunchRefused as refused:
            raise LoadFailed(f"the launch was refused: {refused.message}") from None

    async def _plan(self, profile: ModelProfile, asleep: Launch | None) -> Plan | None:
        try:
            detected = [gpu.index for gpu in await self.supervisor.detect_gpus()]
        except NoNvidiaSmi:
            # A CPU box: launches own no GPUs and nothing is evicted (admission refuses gpu_ids).
            return Plan(list(profile.gpu_ids or []), [])
        except GPUDiscoveryError as exc:
            raise LoadFailed(str(exc)) from None
        gpu_ids = asleep.gpu_ids if asleep is not None else profile.gpu_ids
        try:
            return place(detected, self._holders(), profile.gpu_count or 1, gpu_ids)
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
            for launch in self.supervisor.registry.launches()
            if launch.holds_gpus and launch.gpu_ids
        ]

    def _evictable(self, launch: Launch, now: float) -> bool:
        if launch.profile is None or launch.state is not _S.READY:
            return False  # started by hand, or loading, stopping, waking
        profile = self.profiles.get(launch.profile)
        return (
            not (profile is not None and profile.pinned)
            and launch.launch_id not in self.unloader.busy
            and self.balancer.in_flight(launch.launch_id) == 0
            and now - launch.last_used >= EVICTION_GRACE_SECONDS
        )

    async def _evict(self, launch_ids: list[str], wanted_by: str) -> bool:
        """Unload each launch in turn; False if one got a request meanwhile (plan again)."""
        for launch_id in launch_ids:
            launch = self.supervisor.registry.find(launch_id)
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
            await self.unloader.unload(launch, f"evicted to make room for {wanted_by}")
        return True

    async def _until_ready(self, launch: Launch) -> None:
        while launch.state is not _S.READY:
            if launch.is_terminal or launch.state is _S.STOPPING:
                raise LoadFailed(
                    f"launch {launch.launch_id} {launch.state}: {launch.error or 'no error given'}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), RECHECK_SECONDS)

    def _spec(self, profile: ModelProfile, gpu_ids: list[int], reason: str) -> LaunchSpec:
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

    def _poke(self, _launch: object = None) -> None:
        self._changed.set()


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()

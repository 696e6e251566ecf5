"""On-demand loading of model profiles: one load per profile, shared by whoever waits for it.

A request (through /v1 or a batch line) for a profile with no ready launch starts a `_Load`,
or joins the one under way. A load waits for the profile's launch if it is loading, or gets
GPUs for it from `claims.GpuClaims` (the queue and eviction), which starts it or claims a
sleeping launch's GPUs back; the load then wakes it (vLLM's /wake_up) and waits until it is
ready. Waiters shield the load: a client that gives up does not cancel it for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from vllm_bootstrap.config import Settings
from vllm_bootstrap.launches.record import Launch
from vllm_bootstrap.launches.states import LaunchState
from vllm_bootstrap.log_text import escaped
from vllm_bootstrap.models import sleep_mode
from vllm_bootstrap.models.batch_order import batch_order
from vllm_bootstrap.models.claims import RECHECK_SECONDS, Abandoned, Claim, GpuClaims, LoadFailed
from vllm_bootstrap.models.store import ProfileStore
from vllm_bootstrap.models.unloading import Unloader, WakeFailed
from vllm_bootstrap.serving.balancer import ModelBalancer
from vllm_bootstrap.serving.openai import OnDemandRefusal
from vllm_bootstrap.supervision.supervisor import Supervisor
from vllm_bootstrap.upstream import UpstreamPool

logger = logging.getLogger("vllm_bootstrap.models")

# A batch keeps its interest in a load alive by asking again (the gates do, every second).
INTEREST_SECONDS = 5.0
# After a failed load, /v1 requests are told so at once for this long instead of each
# starting vLLM again.
FAILED_LOAD_MEMORY_SECONDS = 10.0
_S = LaunchState
_LOADING = (_S.BOOTSTRAPPING, _S.RESTARTING, _S.WAKING)


class LoadTimedOut(RuntimeError):
    pass


class QueueFull(RuntimeError):
    pass


@dataclass
class _Load:
    name: str
    reason: str
    task: asyncio.Task[None] | None = None
    waiters: int = 0
    interest_until: float = 0.0

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
        self._pool = pool
        self._loads: dict[str, _Load] = {}
        self._failures: dict[str, _Failure] = {}
        self._changed = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self.unloader = Unloader(supervisor, profiles, balancer, pool, settings)
        self.claims = GpuClaims(supervisor, profiles, self.unloader, settings, self._changed)
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
        except asyncio.CancelledError:
            if load.task.cancelled() and not _being_cancelled():
                raise LoadFailed("the server is shutting down") from None
            raise
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

    def demand(self, name: str, reason: str, since: float) -> bool:
        """Start loading profile `name` without waiting (batches ask again while they wait).
        False when `name` is no profile, or a load of it failed after `since` (the asker's
        wait then runs out, and its lines fail, instead of loading again and again)."""
        if not self.is_profile(name):
            return False
        failure = self._failures.get(name)
        if failure is not None and failure.at >= since:
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
        """After recovery: finish what a previous run left half done, then load every
        profile marked `preload`. A waking launch is woken (vLLM's /wake_up does nothing to
        an awake engine); a ready launch of a sleep profile is asked whether it sleeps (the
        previous run may have died while it fell asleep) and woken if so."""
        for launch in self.supervisor.registry.launches():
            profile = self.profiles.get(launch.profile or "")
            if launch.state is _S.WAKING or (
                launch.state is _S.READY and profile is not None and profile.sleep
            ):
                self._in_background(self._settle_sleep(launch))
        for profile in self.profiles.all():
            if profile.preload:
                self.load(profile.name, "preload")

    async def close(self) -> None:
        """At exit, before the supervisor stops launches: no load may start one after."""
        tasks = [load.task for load in self._loads.values() if load.task] + list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _settle_sleep(self, launch: Launch) -> None:
        if launch.state is _S.READY:
            self.balancer.withdraw(launch.launch_id)
            try:
                asleep = await sleep_mode.is_sleeping(self._pool, launch)
            finally:
                self.balancer.restore(launch.launch_id)
            if not asleep:
                return
            logger.info("launch %s: found asleep after a restart; waking it", launch.launch_id)
        with contextlib.suppress(WakeFailed):
            await self.unloader.finish_waking(launch)

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_retrieve)

    async def unload(self, launch: Launch, reason: str, only_if_idle: bool = False) -> bool:
        return await self.unloader.unload(launch, reason, only_if_idle)

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
        if self.claims.is_queued(name):
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
            "waiting": load.waiters if (load := self._loads.get(name)) else 0,
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
        except Abandoned:
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
        while True:
            launch = self.launch_of(load.name)
            if launch is not None and launch.launch_id in self.unloader.busy:
                await self._changes()  # falling asleep: wake it once it sleeps
                continue
            if launch is None or launch.state is _S.SLEEPING:
                launch = await self.claims.claim(Claim(load.name, load.reason, load.wanted))
                if launch.state is _S.WAKING:
                    await self._finish_waking(launch)
            await self._until_ready(launch)
            return

    async def _finish_waking(self, launch: Launch) -> None:
        try:
            await self.unloader.finish_waking(launch)
        except WakeFailed as exc:
            raise LoadFailed(str(exc)) from None

    async def _until_ready(self, launch: Launch) -> None:
        while launch.state is not _S.READY:
            if launch.is_terminal or launch.state is _S.STOPPING:
                raise LoadFailed(
                    f"launch {launch.launch_id} {launch.state}: {launch.error or 'no error given'}"
                )
            await self._changes()

    async def _changes(self) -> None:
        """Until a launch changed or went idle, or RECHECK_SECONDS passed."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), RECHECK_SECONDS)

    def _poke(self, _launch: object = None) -> None:
        self._changed.set()


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()

"""The model wing's face: one `ProfileRun` per profile name, and what others ask of them.

/v1 (`is_profile`, `serve`, `models_listing`) and batch lines (`demand`, `batch_order`) know
it through small protocols; the model routes load, unload and show profiles through it.
Everything about one profile (its load, failure memory, queue place, unloads) is that
profile's `ProfileRun`; what is shared (the GPU queue, the change counter, the launches by
profile) is built here once, in `Wing`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from vllm_bootstrap.config import Settings
from vllm_bootstrap.launches import LaunchDirectory, LaunchState
from vllm_bootstrap.models.batch_order import batch_order
from vllm_bootstrap.models.changes import Changes
from vllm_bootstrap.models.claims import GpuClaims
from vllm_bootstrap.models.errors import NoSuchProfile, ProfileBusy
from vllm_bootstrap.models.index import ProfileLaunches
from vllm_bootstrap.models.profile import ModelProfile
from vllm_bootstrap.models.profile_run import ProfileRun, retrieve_exception
from vllm_bootstrap.models.store import ProfileStore
from vllm_bootstrap.models.wing import Wing
from vllm_bootstrap.serving import ModelRouter
from vllm_bootstrap.supervision import Supervisor
from vllm_bootstrap.upstream import UpstreamPool
from vllm_bootstrap.usage import UsageLedger

logger = logging.getLogger("vllm_bootstrap.models")


class ModelSwapper:
    def __init__(
        self,
        supervisor: Supervisor,
        profiles: ProfileStore,
        router: ModelRouter,
        ledger: UsageLedger,
        pool: UpstreamPool,
        settings: Settings,
    ) -> None:
        self._runs: dict[str, ProfileRun] = {}
        self._background: set[asyncio.Task[Any]] = set()
        directory: LaunchDirectory = supervisor.registry
        changes = Changes()
        self.wing = Wing(
            supervisor=supervisor,
            profiles=profiles,
            router=router,
            ledger=ledger,
            pool=pool,
            settings=settings,
            index=ProfileLaunches(directory),
            changes=changes,
            claims=GpuClaims(supervisor, ledger, settings, changes, self.run),
            waiting_requests=self.waiting_requests,
        )
        directory.subscribe(changes.notify)
        ledger.on_idle(changes.notify)

    def run(self, name: str) -> ProfileRun:
        run = self._runs.get(name)
        if run is None:
            run = self._runs[name] = ProfileRun(name, self.wing)
        return run

    def _profile(self, name: str) -> ModelProfile:
        profile = self.wing.profiles.get(name)
        if profile is None:
            raise NoSuchProfile(name)
        return profile

    # ----------------------------------------------------------------- /v1

    def is_profile(self, name: str) -> bool:
        return self.wing.profiles.get(name) is not None

    async def serve(self, name: str, reason: str, payer: str | None = None) -> None:
        """Once a launch of profile `name` is ready; refusals raise models.errors. A load
        this starts is charged to `payer` (a scoped key's id)."""
        await self.run(name).wait_ready(reason, payer)

    def progress(self, name: str) -> str:
        """Where a profile's load stands, in a few words ("loading_weights 42%",
        "queued")."""
        run = self.run(name)
        launch = run.launch()
        state = run.state()
        if launch is None or launch.phase is None or state != "loading":
            return state
        percent = f" {launch.progress:.0%}" if launch.progress is not None else ""
        return f"{launch.phase}{percent}"

    def models_listing(self) -> dict[str, Any]:
        """GET /v1/models: the ready launches' models, then the profiles not loaded now."""
        listing = self.wing.router.models_listing()
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
                "state": self.run(profile.name).state(),
            }
            for profile in self.wing.profiles.all()
            if profile.name not in served
        ]
        return listing

    def waiting_requests(self) -> int:
        return sum(run.waiters for run in self._runs.values())

    # ----------------------------------------------------------------- batches

    def demand(self, name: str, reason: str, since: float) -> bool:
        """Start loading profile `name` without waiting; False when it is no profile, or a
        load of it failed after `since`."""
        return self.is_profile(name) and self.run(name).demand(reason, since)

    async def batch_order(self, models: list[str]) -> tuple[list[str], list[str]]:
        return await batch_order(models, self.wing, self.run)

    # ----------------------------------------------------------------- the model routes

    def status(self, name: str) -> dict[str, Any]:
        return {**self._profile(name).to_document(), "status": self.run(name).status()}

    def statuses(self) -> list[dict[str, Any]]:
        return [self.status(profile.name) for profile in self.wing.profiles.all()]

    def put(self, profile: ModelProfile) -> dict[str, Any]:
        self.wing.profiles.put(profile, source="api")
        self.run(profile.name).forget_failure()
        return self.status(profile.name)

    def delete(self, name: str) -> None:
        """Forget the profile; a launch of it runs on until it is stopped (or evicted), and
        a load waiting for GPUs gives up by itself."""
        if not self.wing.profiles.delete(name):
            raise NoSuchProfile(name)
        run = self._runs.get(name)
        if run is not None and run.forgettable():
            del self._runs[name]  # names come and go: nothing of this one is left
        elif run is not None:
            run.forget_failure()

    def load(self, name: str, reason: str) -> None:
        """Start loading profile `name`, however long it must wait for GPUs."""
        self._profile(name)
        self.run(name).load(reason)

    async def unload(self, name: str, wait: bool) -> None:
        """Free the profile's GPUs (sleep or stop); ProfileBusy while it is being woken or
        unloaded already. Without `wait` the unload goes on after the answer."""
        self._profile(name)
        run = self.run(name)
        launch = run.launch()
        if launch is None:
            return
        if not run.claim_unload(launch):
            raise ProfileBusy(launch.launch_id)
        unloading = self._in_background(run.unload_claimed(launch, "an explicit unload"))
        if wait:
            await asyncio.shield(unloading)

    # ----------------------------------------------------------------- start-up and exit

    def start(self) -> None:
        """After recovery: finish the sleeps and wakes a previous run left half done (and
        ask each ready launch of a sleep profile whether it sleeps), then load every
        profile marked `preload`."""
        for launch in self.wing.index.all():
            assert launch.profile is not None
            profile = self.wing.profiles.get(launch.profile)
            sleeps = profile is not None and profile.sleep and launch.state is LaunchState.READY
            if sleeps or launch.state in (LaunchState.FALLING_ASLEEP, LaunchState.WAKING):
                self._in_background(self.run(launch.profile).settle_after_restart(launch))
        for profile in self.wing.profiles.all():
            if profile.preload:
                self.run(profile.name).load("preload")

    async def close(self) -> None:
        """At exit, before the supervisor stops launches: no load may start one after."""
        tasks = [task for run in self._runs.values() if (task := run.cancel())]
        tasks += list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _in_background(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(retrieve_exception)
        return task

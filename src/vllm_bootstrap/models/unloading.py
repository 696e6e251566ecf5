"""Taking a profile launch off its GPUs, and giving a sleeping one its GPUs back.

Unloading a launch whose profile says `sleep` calls vLLM's POST /sleep: the launch becomes
`sleeping` and keeps its process and port, its GPUs free for another launch. Any other is
stopped. Waking claims the GPUs again (`waking`) before vLLM's POST /wake_up, so nothing
else can take them meanwhile. A launch that does not fall asleep or wake is stopped: a
vLLM in an unknown sleep state must not share GPUs with anyone.
"""

from __future__ import annotations

import logging
import time

from vllm_bootstrap.config import Settings
from vllm_bootstrap.launches.record import Launch
from vllm_bootstrap.launches.states import LaunchState
from vllm_bootstrap.log_text import escaped
from vllm_bootstrap.models import sleep_mode
from vllm_bootstrap.models.store import ProfileStore
from vllm_bootstrap.supervision.errors import LaunchRefused
from vllm_bootstrap.supervision.supervisor import Supervisor
from vllm_bootstrap.upstream import UpstreamPool

logger = logging.getLogger("vllm_bootstrap.models")


class WakeFailed(RuntimeError):
    pass


class Unloader:
    def __init__(
        self,
        supervisor: Supervisor,
        profiles: ProfileStore,
        pool: UpstreamPool,
        settings: Settings,
    ) -> None:
        self._supervisor = supervisor
        self._profiles = profiles
        self._pool = pool
        self._settings = settings
        self.busy: set[str] = set()  # launches being unloaded or woken now

    async def unload(self, launch: Launch, reason: str) -> None:
        """Free a profile launch's GPUs: to sleep if its profile says so, else stop it. A
        sleeping launch is stopped (its weights leave CPU memory too)."""
        if launch.launch_id in self.busy:
            return
        self.busy.add(launch.launch_id)
        try:
            profile = self._profiles.get(launch.profile or "")
            if profile is not None and profile.sleep and launch.state is LaunchState.READY:
                await self._put_to_sleep(launch, reason)
            else:
                logger.info("launch %s: stopping (%s)", launch.launch_id, escaped(reason))
                await self._stop(launch)
        finally:
            self.busy.discard(launch.launch_id)

    def begin_waking(self, launch: Launch, reason: str) -> None:
        """Claim a sleeping launch's GPUs (it is `waking` from here); WakeFailed if another
        launch holds one of them."""
        self.busy.add(launch.launch_id)
        try:
            self._supervisor.begin_waking(launch.launch_id, reason)
        except LaunchRefused as refused:
            self.busy.discard(launch.launch_id)
            raise WakeFailed(f"launch {launch.launch_id} cannot wake: {refused.message}") from None

    async def finish_waking(self, launch: Launch) -> None:
        """vLLM's POST /wake_up for a launch begin_waking claimed GPUs for."""
        started = time.monotonic()
        try:
            await sleep_mode.wake_up(self._pool, launch)
        except sleep_mode.SleepModeFailed as exc:
            await self._stop(launch)
            raise WakeFailed(f"launch {launch.launch_id} did not wake: {exc}") from None
        finally:
            self.busy.discard(launch.launch_id)
        self._supervisor.finish_waking(launch.launch_id)
        logger.info(
            "model %s: launch %s woke in %.2f s",
            escaped(launch.profile or "?"),
            launch.launch_id,
            time.monotonic() - started,
        )

    async def _put_to_sleep(self, launch: Launch, reason: str) -> None:
        # Not ready from here on: no new request is routed to it while vLLM falls asleep.
        self._supervisor.fall_asleep(launch.launch_id, reason)
        try:
            await sleep_mode.fall_asleep(self._pool, launch)
        except sleep_mode.SleepModeFailed as exc:
            logger.warning("launch %s: %s; stopping it instead", launch.launch_id, exc)
            await self._stop(launch)

    async def _stop(self, launch: Launch) -> None:
        self._supervisor.stop(launch.launch_id)
        await self._supervisor.wait_until_ended(
            launch.launch_id, self._settings.stop_timeout_seconds + 10
        )

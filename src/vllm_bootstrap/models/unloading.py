"""Taking a profile launch off its GPUs, and giving a sleeping one its GPUs back.

Unloading a launch whose profile says `sleep` withdraws it from routing, then calls vLLM's
POST /sleep; only once vLLM answers does the launch become `sleeping` and its GPUs free
for another launch (they hold its weights until then). Any other launch is stopped. Waking
claims the GPUs again (`waking`) before vLLM's POST /wake_up, so nothing else can take
them meanwhile. A launch that does not fall asleep or wake is stopped: a vLLM in an unknown
sleep state must not share GPUs with anyone.
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
from vllm_bootstrap.serving.balancer import ModelBalancer
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
        balancer: ModelBalancer,
        pool: UpstreamPool,
        settings: Settings,
    ) -> None:
        self._supervisor = supervisor
        self._profiles = profiles
        self._balancer = balancer
        self._pool = pool
        self._settings = settings
        self.busy: set[str] = set()  # launches being unloaded or woken now

    async def unload(self, launch: Launch, reason: str, only_if_idle: bool = False) -> bool:
        """Free a profile launch's GPUs: to sleep if its profile says so, else stop it. A
        sleeping launch is stopped (its weights leave CPU memory too). False, doing nothing,
        when it is being unloaded or woken already, or `only_if_idle` and it is not idle
        (checked here, with no wait before the unload begins)."""
        if launch.launch_id in self.busy or launch.is_terminal:
            return False
        if only_if_idle and not self.is_idle(launch):
            return False
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
        return True

    def is_idle(self, launch: Launch) -> bool:
        return launch.state is LaunchState.READY and self._balancer.in_flight(launch.launch_id) == 0

    def begin_waking(self, launch: Launch, reason: str) -> None:
        """Claim a sleeping launch's GPUs (it is `waking` from here); WakeFailed if it is not
        asleep any more or another launch holds one of them."""
        try:
            self._supervisor.begin_waking(launch.launch_id, reason)
        except LaunchRefused as refused:
            raise WakeFailed(f"launch {launch.launch_id} cannot wake: {refused.message}") from None
        self.busy.add(launch.launch_id)

    async def finish_waking(self, launch: Launch) -> None:
        """vLLM's POST /wake_up for a launch that holds its GPUs again (waking, or ready after
        a restart cut off its sleep)."""
        started = time.monotonic()
        self.busy.add(launch.launch_id)
        try:
            await sleep_mode.wake_up(self._pool, launch)
        except sleep_mode.SleepModeFailed as exc:
            await self._stop(launch)
            raise WakeFailed(f"launch {launch.launch_id} did not wake: {exc}") from None
        finally:
            self.busy.discard(launch.launch_id)
        if launch.state is LaunchState.WAKING and not self._supervisor.finish_waking(
            launch.launch_id
        ):
            raise WakeFailed(f"launch {launch.launch_id} was stopped while it woke")
        logger.info(
            "model %s: launch %s woke in %.2f s",
            escaped(launch.profile or "?"),
            launch.launch_id,
            time.monotonic() - started,
        )

    async def _put_to_sleep(self, launch: Launch, reason: str) -> None:
        self._balancer.withdraw(launch.launch_id)  # no new request while vLLM falls asleep
        try:
            await sleep_mode.fall_asleep(self._pool, launch)
        except sleep_mode.SleepModeFailed as exc:
            logger.warning(
                "launch %s: %s; stopping it instead", launch.launch_id, escaped(str(exc))
            )
            await self._stop(launch)
            return
        finally:
            self._balancer.restore(launch.launch_id)
        # Only now are its GPUs free: until vLLM answered, they held its weights.
        self._supervisor.fall_asleep(launch.launch_id, reason)

    async def _stop(self, launch: Launch) -> None:
        self._supervisor.stop(launch.launch_id)
        await self._supervisor.wait_until_ended(
            launch.launch_id, self._settings.stop_timeout_seconds + 10
        )

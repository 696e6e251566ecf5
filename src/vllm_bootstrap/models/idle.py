"""Idle unloading: a profile launch unused for its profile's `idle_ttl_seconds` goes.

Once a second the watch looks at each ready launch of a profile with a TTL: with nothing in
flight and no request for the TTL, it is unloaded (put to sleep when the profile says
`sleep`, else stopped). The idle clock is the launch's `last_request_at` (or when it became
ready); it is written to the state database now and then and at exit, so a restarted
control plane re-adopts the launch with its clock where it was.
"""

from __future__ import annotations

import asyncio
import logging
import time

from vllm_bootstrap.launches.record import Launch
from vllm_bootstrap.launches.states import LaunchState
from vllm_bootstrap.log_text import escaped
from vllm_bootstrap.models.swapper import ModelSwapper

logger = logging.getLogger("vllm_bootstrap.models")

CHECK_SECONDS = 1.0
# The clock is written at most this often per launch: a restart loses at most this much.
CLOCK_WRITE_SECONDS = 10.0


class IdleWatch:
    def __init__(self, swapper: ModelSwapper) -> None:
        self._swapper = swapper
        self._written: dict[str, tuple[float | None, float]] = {}  # launch -> (clock, when)
        self._task: asyncio.Task[None] | None = None
        self._unloading: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="idle-watch")

    async def stop(self) -> None:
        """Stop watching; write every clock, so the next start goes on from here."""
        for task in [self._task, *self._unloading]:
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(task for task in [self._task, *self._unloading] if task), return_exceptions=True
        )
        for launch in self._profile_launches():
            self._swapper.supervisor.note_use(launch)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            now = time.time()
            launches = self._profile_launches()
            for launch in launches:
                self._write_clock(launch, now)
                if self._expired(launch, now):
                    self._unload(launch, now)
            live = {launch.launch_id for launch in launches}
            for launch_id in set(self._written) - live:
                del self._written[launch_id]

    def _profile_launches(self) -> list[Launch]:
        return [
            launch
            for launch in self._swapper.supervisor.registry.launches()
            if launch.profile is not None
        ]

    def _expired(self, launch: Launch, now: float) -> bool:
        profile = self._swapper.profiles.get(launch.profile or "")
        return (
            profile is not None
            and profile.idle_ttl_seconds is not None
            and launch.state is LaunchState.READY
            and self._swapper.balancer.in_flight(launch.launch_id) == 0
            and now - launch.last_used >= profile.idle_ttl_seconds
        )

    def _unload(self, launch: Launch, now: float) -> None:
        idle = now - launch.last_used
        reason = f"idle for {idle:.0f} s, past its profile's idle_ttl_seconds"
        logger.info(
            "model %s: launch %s %s", escaped(launch.profile or ""), launch.launch_id, reason
        )
        # Checked again as the unload begins: a request may have arrived in between.
        task = asyncio.create_task(self._swapper.unload(launch, reason, only_if_idle=True))
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)

    def _write_clock(self, launch: Launch, now: float) -> None:
        clock = launch.last_request_at
        written = self._written.get(launch.launch_id)
        if written is None:
            self._written[launch.launch_id] = (clock, now)  # as loaded or launched: written
        elif written[0] != clock and now - written[1] >= CLOCK_WRITE_SECONDS:
            self._swapper.supervisor.note_use(launch)
            self._written[launch.launch_id] = (clock, now)

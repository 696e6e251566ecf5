"""Idle unloading: a profile launch unused for its profile's `idle_ttl_seconds` goes.

Every VLLM_BOOTSTRAP_IDLE_CHECK_SECONDS the watch asks each profile launch's `ProfileRun`
whether it is past its TTL (idle by the usage ledger, which counts /proxy, /v1 and batch
lines alike); if so it is unloaded (put to sleep when the profile says `sleep`, else
stopped), idleness checked again as the unload begins. The idle clock is written to the
state database now and then and at exit, so a restarted control plane re-adopts the
launch with its clock where it was.
"""

from __future__ import annotations

import asyncio
import logging
import time

from vllm_bootstrap.launches import Launch
from vllm_bootstrap.log_text import escaped
from vllm_bootstrap.models.swapper import ModelSwapper

logger = logging.getLogger("vllm_bootstrap.models")

# The clock is written at most this often per launch: a restart loses at most this much.
CLOCK_WRITE_SECONDS = 10.0


class IdleWatch:
    def __init__(self, swapper: ModelSwapper) -> None:
        self._swapper = swapper
        self._wing = swapper.wing
        self._written: dict[str, tuple[float | None, float]] = {}  # launch -> (clock, when)
        self._task: asyncio.Task[None] | None = None
        self._unloading: set[asyncio.Task[bool]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="idle-watch")

    async def stop(self) -> None:
        """Stop watching; write every clock, so the next start goes on from here."""
        tasks = [task for task in [self._task, *self._unloading] if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for launch in self._wing.index.all():
            self._wing.supervisor.note_use(launch, self._wing.ledger.last_request_at(launch))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._wing.settings.idle_check_seconds)
            now = time.time()
            launches = self._wing.index.all()
            for launch in launches:
                self._write_clock(launch, now)
                assert launch.profile is not None
                idle = self._swapper.run(launch.profile).idle_expired(launch, now)
                if idle is not None:
                    self._unload(launch, idle)
            live = {launch.launch_id for launch in launches}
            for launch_id in set(self._written) - live:
                del self._written[launch_id]

    def _unload(self, launch: Launch, idle: float) -> None:
        reason = f"idle for {idle:.0f} s, past its profile's idle_ttl_seconds"
        logger.info(
            "model %s: launch %s %s", escaped(launch.profile or ""), launch.launch_id, reason
        )
        run = self._swapper.run(launch.profile or "")
        # Checked again as the unload begins: a request may have arrived in between.
        task = asyncio.create_task(run.unload(launch, reason, only_if_idle=True))
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)

    def _write_clock(self, launch: Launch, now: float) -> None:
        clock = self._wing.ledger.last_request_at(launch)
        written = self._written.get(launch.launch_id)
        if written is None:
            self._written[launch.launch_id] = (clock, now)  # as loaded or launched: written
        elif written[0] != clock and now - written[1] >= CLOCK_WRITE_SECONDS:
            self._wing.supervisor.note_use(launch, clock)
            self._written[launch.launch_id] = (clock, now)

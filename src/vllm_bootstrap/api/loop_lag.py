"""Measuring how long the event loop is kept from running.

Every request, probe and process watcher shares one event loop; anything that blocks it
(a slow disk, a fork of a large process, a CPU-heavy handler) delays them all. A task that
asks to sleep for a fixed interval and measures how late it wakes up sees every such stall.
"""

from __future__ import annotations

import asyncio
from typing import Any

from vllm_bootstrap.background import BackgroundTask

INTERVAL_SECONDS = 0.05


class LoopLagMonitor(BackgroundTask):
    def __init__(self) -> None:
        super().__init__(self._measure, "loop-lag-monitor")
        self.last_ms = 0.0
        self.max_ms = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"last_ms": round(self.last_ms, 2), "max_ms": round(self.max_ms, 2)}

    async def _measure(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked_at = loop.time()
            await asyncio.sleep(INTERVAL_SECONDS)
            self.last_ms = max(0.0, (loop.time() - asked_at - INTERVAL_SECONDS) * 1000)
            self.max_ms = max(self.max_ms, self.last_ms)

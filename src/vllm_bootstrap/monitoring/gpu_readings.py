"""GPU figures from nvidia-smi, read at most once a second however many clients ask (GET
/stats and GET /metrics share them): each reading starts a process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from vllm_bootstrap.supervision import GPUDiscoveryError, query_gpu_stats

FRESH_SECONDS = 1.0


class GpuReadings:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._taken_at = -FRESH_SECONDS
        self._last: tuple[list[dict[str, Any]], str | None] = ([], None)

    async def read(self) -> tuple[list[dict[str, Any]], str | None]:
        """Each GPU's figures, and why there are none when nvidia-smi failed (else None)."""
        async with self._lock:
            if time.monotonic() - self._taken_at >= FRESH_SECONDS:
                try:
                    self._last = (await query_gpu_stats(), None)
                except GPUDiscoveryError as exc:  # NoNvidiaSmi included: a CPU box
                    self._last = ([], str(exc))
                self._taken_at = time.monotonic()
            readings, error = self._last
            return [dict(gpu) for gpu in readings], error

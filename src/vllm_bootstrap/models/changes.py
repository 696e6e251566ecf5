"""Something a waiting load cares about changed: a launch moved, went idle, or a load ended.

A version counter rather than an `asyncio.Event`: each waiter remembers the version it saw
before it looked, and `wait` returns at once if anything happened since, so no wake-up is
lost between looking and waiting, and no waiter can clear a signal meant for another.
"""

from __future__ import annotations

import asyncio
import contextlib


class Changes:
    def __init__(self) -> None:
        self.version = 0
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self, *_what: object) -> None:
        self.version += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self, seen: int, timeout: float) -> None:
        """Until the version moves past `seen`, or `timeout` seconds (time-based conditions,
        an eviction grace running out, are looked at again then)."""
        if self.version != seen:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.discard(waiter)

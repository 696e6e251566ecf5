"""The stand-in's scheduler, as vLLM's looks from outside: at most --max-num-seqs requests
run at once; the rest wait, in arrival order (fcfs) or by priority then arrival (priority),
and one whose client goes while it waits is dropped, as vLLM aborts it."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from aiohttp import web

CLIENT_CHECK_SECONDS = 0.02


class Scheduler:
    def __init__(self, max_running: int, by_priority: bool) -> None:
        self.max_running = max_running
        self.by_priority = by_priority
        self.running = 0
        self.peak_running = 0
        self.admitted = 0
        self.dropped_waiting = 0
        self._waiting: list[tuple[int, int, asyncio.Future[int], web.Request]] = []
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def enter(self, request: web.Request, priority: int) -> int | None:
        """Wait for a place among the running; how many requests were let in ahead of this
        one while it waited, or None when its client went first (then it never runs)."""
        admitted_before = self.admitted
        if self.running < self.max_running and not self._waiting:
            self._let_in()
            return 0
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        entry = (priority if self.by_priority else 0, next(self._arrivals), future, request)
        heapq.heappush(self._waiting, entry)
        while not future.done():
            await asyncio.wait([future], timeout=CLIENT_CHECK_SECONDS)
            if not future.done() and _gone(request):
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
                future.cancel()
        if future.cancelled():
            self.dropped_waiting += 1
            return None
        return future.result() - admitted_before

    def leave(self) -> None:
        self.running -= 1
        while self.running < self.max_running and self._waiting:
            _priority, _arrival, future, request = heapq.heappop(self._waiting)
            if _gone(request):  # its waiter sees it too, and counts it dropped
                future.cancel()
                continue
            future.set_result(self.admitted)
            self._let_in()

    def _let_in(self) -> None:
        self.admitted += 1
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()

"""Who uses which launch: one ledger, written only by the forwarder, for every request it
sends to vLLM (/proxy, /v1 and batch lines alike).

It keeps, per launch, the requests in flight and when the last one ended, and, per route,
model, launch and status, the counts and latencies that /metrics turns into series. The
idle clock (a profile's TTL), eviction, GET /status and /metrics all read it, so a request
counts the same whichever way it came in: a stream through /proxy keeps its launch busy as
one through /v1 does. Plain dicts on the hot path (a dict lookup, a bisect and a few
additions per request): prometheus_client's labelled children, with their locks, cost the
proxy a sixth of its throughput.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterator

from vllm_bootstrap.launches import Launch

# From a fast completion to a long generation; streams count until their last byte.
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
IdleListener = Callable[[str], None]
LiveListener = Callable[[str], None]
logger = logging.getLogger("vllm_bootstrap.usage")


class UsageLedger:
    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._last_request_at: dict[str, float] = {}
        self._idle_listeners: list[IdleListener] = []
        self._live_listeners: list[LiveListener] = []
        self._counts: dict[tuple[str, str, str, str], int] = {}
        # (route, model, launch) -> per-bucket counts (the last is +Inf), then the sum.
        self._latency: dict[tuple[str, str, str], list[float]] = {}
        # Ended launches with requests still in flight: forgotten once the last one ends.
        self._ended: set[str] = set()

    # ----------------------------------------------------------------- written by the forwarder

    def begin(self, launch_id: str, live: bool = False) -> None:
        """A request to `launch_id` is on its way; `end` it once it is answered or gone.
        `live`: someone waits for it (a client's inference request, not a batch line)."""
        self._in_flight[launch_id] = self._in_flight.get(launch_id, 0) + 1
        if live:
            for listener in self._live_listeners:
                try:
                    listener(launch_id)
                except Exception:  # the request it announces must go ahead regardless
                    logger.exception("a listener to live requests on %s failed", launch_id)

    def end(self, launch_id: str) -> None:
        """The request is answered (or its client gone); `record` it first."""
        self._last_request_at[launch_id] = time.time()
        remaining = self._in_flight[launch_id] - 1
        if remaining:
            self._in_flight[launch_id] = remaining
            return
        del self._in_flight[launch_id]
        if launch_id in self._ended:
            self._ended.discard(launch_id)
            self._forget(launch_id)
        for listener in self._idle_listeners:
            listener(launch_id)

    def record(self, route: str, model: str, launch_id: str, status: int, seconds: float) -> None:
        key = (route, model, launch_id, str(status))
        self._counts[key] = self._counts.get(key, 0) + 1
        buckets = self._latency.get(key[:3])
        if buckets is None:
            buckets = self._latency[key[:3]] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        buckets[-1] += seconds

    # ----------------------------------------------------------------- read by everyone else

    def in_flight(self, launch_id: str) -> int:
        """Requests `launch_id` is answering now, through any route."""
        return self._in_flight.get(launch_id, 0)

    def last_request_at(self, launch: Launch) -> float | None:
        """When its last request ended; after a restart, the clock its record kept."""
        return self._last_request_at.get(launch.launch_id, launch.last_request_at)

    def last_used(self, launch: Launch) -> float:
        """The idle clock: its last request, or when it became ready if that was later."""
        return max(self.last_request_at(launch) or 0.0, launch.ready_at or 0.0, launch.created_at)

    def on_idle(self, listener: IdleListener) -> None:
        """Call `listener(launch_id)` whenever a launch's last request in flight ends."""
        self._idle_listeners.append(listener)

    def on_live_begin(self, listener: LiveListener) -> None:
        """Call `listener(launch_id)` whenever a live request to a launch begins."""
        self._live_listeners.append(listener)

    def counts(self) -> Iterator[tuple[tuple[str, str, str, str], int]]:
        """(route, model, launch_id, status) -> requests, for /metrics."""
        return iter(list(self._counts.items()))

    def latencies(self) -> Iterator[tuple[tuple[str, str, str], list[float]]]:
        """(route, model, launch_id) -> bucket counts then the sum of seconds, for /metrics."""
        return iter(list(self._latency.items()))

    def launch_changed(self, launch: Launch) -> None:
        """An ended launch's series end with it (launches come and go as profiles swap, and
        series must not pile up), once its last request in flight has been counted. Its
        last request time stays: /status still shows it."""
        if not launch.is_terminal:
            return
        if self._in_flight.get(launch.launch_id):
            self._ended.add(launch.launch_id)
        else:
            self._forget(launch.launch_id)

    def _forget(self, launch_id: str) -> None:
        for key in [key for key in self._counts if key[2] == launch_id]:
            del self._counts[key]
        for series in [series for series in self._latency if series[2] == launch_id]:
            del self._latency[series]

"""Batch lines that make way for live requests, on launches without vLLM's priority
scheduling.

Under vLLM's default scheduling (first come, first served) a live request waits behind
every batch line sent before it, and a batch sends hundreds. So batches hold a window per
launch: how many of their lines may be in flight there.

- No live request there for VLLM_BOOTSTRAP_BATCH_YIELD_HOLD_SECONDS: the window is full
  (VLLM_BATCH_IN_FLIGHT_PER_LAUNCH), so vLLM's queue never runs dry.
- A live request arrives (a POST through /v1 or /proxy): the window shrinks at once to
  what vLLM runs at a time (its --max-num-seqs, from the launch's flags or from its
  /metrics) plus a short queue (an eighth of that), and the newest lines beyond it, and
  those waiting in vLLM's queue at the last look, are taken back. Their connections are
  closed, so vLLM drops them; they are sent again later, behind the live request, without
  costing an attempt. Under first come, first served the newest lines are the ones still
  waiting.
- While live requests come, vLLM's queue is read from its /metrics every
  VLLM_BOOTSTRAP_BATCH_YIELD_CHECK_SECONDS: a queue longer than the short one while a
  live request is in flight halves the window (and takes the queued lines back); a queue
  no longer adds one line. The window never goes below one line.
- Once no live request came for the hold, the window doubles each look back to full: not
  at once, as hundreds of lines arriving together keep vLLM's API server busy for seconds.

With priority scheduling vLLM itself serves live requests first (batch lines carry a
lower priority, requests.py), and an urgent batch does not yield: their lines are not
tracked here and their window is always full.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from vllm_bootstrap.background import BackgroundTask
from vllm_bootstrap.launches import Launch, flag_value
from vllm_bootstrap.upstream import UpstreamError, UpstreamPool
from vllm_bootstrap.usage import UsageLedger

logger = logging.getLogger("vllm_bootstrap.batches")
READ_TIMEOUT_SECONDS = 2.0
# While live requests come, batch lines may wait in vLLM's queue up to 1/8 of what it runs.
QUEUE_SHARE = 8
MAX_METRICS_BYTES = 16 * 1024 * 1024
MAX_REQUESTS = 1e9  # a gauge above this is not a count of requests
# vLLM's gauges, one sample per engine: summed.
_QUEUE_GAUGE = re.compile(rb"^vllm:num_requests_(waiting|running)(?:\{[^}\n]*\})? (\S+)", re.M)


@dataclass(frozen=True)
class QueueReading:
    waiting: int
    running: int


class Line:
    """One batch line in flight on a launch; `taken_back` once it made way."""

    __slots__ = ("deadline", "launch_id", "taken_back")

    def __init__(self, launch_id: str) -> None:
        self.launch_id = launch_id
        self.deadline: asyncio.Timeout | None = None
        self.taken_back = False

    def take_back(self) -> bool:
        """Cut its request off now; False when it cannot be (not sent yet, or its own
        timeout is already ending it)."""
        if self.deadline is None or self.deadline.expired():
            return False
        self.taken_back = True
        self.deadline.reschedule(asyncio.get_running_loop().time())
        return True


@dataclass
class _Window:
    launch: Launch
    limit: int
    live_at: float = -math.inf  # time.monotonic() of the last live request seen
    waiting: int = 0  # vLLM's queue at the last reading, less the lines taken back since
    # Requests vLLM runs at once (--max-num-seqs): from the launch's flags, else the most
    # seen running while others waited.
    capacity: int | None = None
    lines: dict[Line, None] = field(default_factory=dict)  # in the order they were sent
    taken_back: int = 0  # lines taken back so far (a reading older than some still counts them)


class BatchYield(BackgroundTask):
    def __init__(
        self,
        ledger: UsageLedger,
        pool: UpstreamPool,
        full: int,
        check_seconds: float,
        hold_seconds: float,
    ) -> None:
        super().__init__(self._watch, "batch-yield")
        self._ledger = ledger
        self._pool = pool
        self._full = full
        self._check_seconds = check_seconds
        # A look slower than this finds vLLM's API server too busy to say: no reading.
        self._read_timeout = max(check_seconds, READ_TIMEOUT_SECONDS)
        self._hold_seconds = hold_seconds
        self._windows: dict[str, _Window] = {}
        self._raised: list[Callable[[], None]] = []
        ledger.on_live_begin(self._live_began)

    def when_raised(self, listener: Callable[[], None]) -> None:
        """Call `listener()` whenever a window grows (more lines may be sent)."""
        self._raised.append(listener)

    def window(self, launch: Launch, urgent: bool = False) -> int:
        """How many lines of batches (`urgent` ones: of those) may be in flight on it."""
        window = self._windows.get(launch.launch_id)
        return self._full if urgent or window is None else window.limit

    def has_room(self, launch: Launch) -> bool:
        """Whether a batch line sent to `launch` now stays within its window (with several
        replicas, a line goes to one that has room)."""
        window = self._windows.get(launch.launch_id)
        return window is None or len(window.lines) < window.limit

    def limits(self) -> Iterator[tuple[str, int]]:
        """(launch_id, window) of the launches where batch lines are held back now."""
        for launch_id, window in list(self._windows.items()):
            if window.limit < self._full:
                yield launch_id, window.limit

    # ----------------------------------------------------------------- lines, from the sender

    def track(self, launch: Launch) -> Line:
        """A line is sent to `launch`; `untrack` it once it has its answer or made way."""
        window = self._windows.get(launch.launch_id)
        if window is None:
            window = self._windows[launch.launch_id] = _Window(
                launch, self._full, capacity=_max_num_seqs(launch)
            )
        line = Line(launch.launch_id)
        window.lines[line] = None
        return line

    def untrack(self, line: Line) -> None:
        window = self._windows.get(line.launch_id)
        if window is not None:
            window.lines.pop(line, None)
            if not window.lines and window.limit == self._full:
                del self._windows[line.launch_id]

    # ----------------------------------------------------------------- the control

    def _live_began(self, launch_id: str) -> None:
        """A live request is on its way to `launch_id`: the batch's queued lines make way."""
        window = self._windows.get(launch_id)
        if window is None or not window.lines:
            return
        window.live_at = time.monotonic()
        if window.capacity is not None:  # what vLLM runs, and a short queue to keep it busy
            target = window.capacity + _allowance(window)
        elif window.waiting:  # the batch lines vLLM ran at the last look
            target = len(window.lines) - window.waiting
        else:  # no queue seen, and vLLM's size unknown: nothing is ahead of the live request
            return
        self._set(window, max(1, min(window.limit, target)))
        # Those queued in vLLM go too: sent again, they queue behind the live request.
        self._take_back(window, max(len(window.lines) - window.limit, window.waiting))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._check_seconds)
            # Together: one slow launch must not hold back the others' looks.
            await asyncio.gather(*(self._check_safely(w) for w in list(self._windows.values())))

    async def _check_safely(self, window: _Window) -> None:
        try:
            await self._check(window)
        except Exception:  # a bug must not end the watch for good
            logger.exception("batch yield: checking %s failed", window.launch.launch_id)

    async def _check(self, window: _Window) -> None:
        # Read even with no live request about, so the first one finds the queue known.
        taken_before = window.taken_back
        reading = await read_queue(self._pool, window.launch, self._read_timeout)
        if self._windows.get(window.launch.launch_id) is not window:
            return  # forgotten while it was read
        if reading is not None:
            # Less what was taken back during the read: vLLM had not dropped them yet.
            window.waiting = max(0, reading.waiting - (window.taken_back - taken_before))
            if reading.waiting:  # vLLM is full: what it runs is all it can
                window.capacity = max(window.capacity or 0, reading.running)
        live = self._ledger.in_flight(window.launch.launch_id) - len(window.lines)
        now = time.monotonic()
        if live > 0:
            window.live_at = now
        elif now - window.live_at >= self._hold_seconds:
            # No live traffic: back to full speed, doubling each look.
            self._set(window, min(self._full, window.limit * 2))
            if not window.lines and window.limit == self._full:
                self._windows.pop(window.launch.launch_id, None)
            return
        if reading is None:
            return
        if live > 0 and window.waiting > _allowance(window):
            self._set(window, max(1, min(window.limit, len(window.lines)) // 2))
            self._take_back(window, min(window.waiting, len(window.lines) - window.limit))
        elif window.waiting <= _allowance(window):
            self._set(window, min(self._full, window.limit + 1))

    def _take_back(self, window: _Window, count: int) -> None:
        """The `count` newest lines make way (under fcfs, those still in vLLM's queue)."""
        count = min(count, len(window.lines))
        newest = list(window.lines)[len(window.lines) - count :] if count > 0 else []
        taken = [line for line in newest if line.take_back()]
        for line in taken:
            del window.lines[line]
        window.taken_back += len(taken)
        window.waiting = max(0, window.waiting - len(taken))

    def _set(self, window: _Window, limit: int) -> None:
        raised = limit > window.limit
        window.limit = limit
        if raised:
            for listener in self._raised:
                listener()


def _allowance(window: _Window) -> int:
    """Batch lines that may wait in vLLM's queue while live requests come: enough that a
    running slot freed is taken at once, few enough that a live request is soon in."""
    return max(1, (window.capacity or 0) // QUEUE_SHARE)


def _max_num_seqs(launch: Launch) -> int | None:
    value = flag_value(launch.extra_args, "--max-num-seqs")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


async def read_queue(
    pool: UpstreamPool, launch: Launch, timeout: float = READ_TIMEOUT_SECONDS
) -> QueueReading | None:
    """vLLM's waiting and running requests, from its /metrics; None if it did not say
    (in `timeout` seconds, or at all: vLLM started with --disable-log-stats has no gauges)."""
    try:
        async with asyncio.timeout(timeout):
            response = await pool.request(
                launch.local_host, launch.port, b"GET", b"/metrics", [], b""
            )
            async with response:
                if response.status != 200:
                    return None
                body = await response.read_at_most(MAX_METRICS_BYTES)
    except (UpstreamError, TimeoutError):
        return None
    if body is None:
        return None
    totals: dict[bytes, float] = {}
    for match in _QUEUE_GAUGE.finditer(body):
        try:
            value = float(match[2])
        except ValueError:
            return None
        if not 0 <= value <= MAX_REQUESTS:  # NaN, infinite or negative: not a queue
            return None
        totals[match[1]] = totals.get(match[1], 0.0) + value
    if b"waiting" not in totals:
        return None
    return QueueReading(int(totals[b"waiting"]), int(totals.get(b"running", 0.0)))

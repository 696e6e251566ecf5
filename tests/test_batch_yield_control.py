"""The batch window of one launch, driven in-process: vLLM's /metrics is served over real
HTTP on loopback by a small server whose queue figures the test sets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from tests.test_registry import a_launch
from vllm_bootstrap.batches.yielding import BatchYield, Line, read_queue
from vllm_bootstrap.launches import Launch
from vllm_bootstrap.launches.registry import LaunchRegistry
from vllm_bootstrap.launches.states import LaunchState
from vllm_bootstrap.serving.router import ModelRouter
from vllm_bootstrap.upstream import UpstreamPool
from vllm_bootstrap.usage import UsageLedger

FULL = 64
HOLD_SECONDS = 0.3


class FakeMetrics:
    """Answers GET /metrics with vLLM's two queue gauges (two engines, to be summed)."""

    def __init__(self) -> None:
        self.waiting = 0
        self.running = 0
        self.reads = 0
        self.body: bytes | None = None  # instead of the gauges, when set

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                await self._answer(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed its connection
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter) -> None:
        self.reads += 1
        body = (
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {self.waiting / 2}\n'
            f'vllm:num_requests_waiting{{engine="1",model_name="m"}} {self.waiting / 2}\n'
            f'vllm:num_requests_running{{engine="0",model_name="m"}} {self.running}.0\n'
            "vllm:num_requests_running_total 99\n"
        ).encode()
        body = self.body if self.body is not None else body
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()


@pytest.fixture
async def metrics_launch() -> AsyncIterator[tuple[FakeMetrics, Launch]]:
    metrics = FakeMetrics()
    server = await asyncio.start_server(metrics.handle, "127.0.0.1", 0)
    launch = a_launch("L")
    launch.port = server.sockets[0].getsockname()[1]
    async with server:
        yield metrics, launch


async def eventually(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Poll a state that the control's own task changes (it announces no event to wait on)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def reads_after(metrics: FakeMetrics, count: int) -> None:
    """Until the control has read vLLM's queue `count` more times (and acted on the last)."""
    target = metrics.reads + count + 1
    await eventually(lambda: metrics.reads >= target)


def settle(control: BatchYield, ledger: UsageLedger, lines: list[Line]) -> None:
    """What the sender does with the lines taken back: they leave the launch."""
    for line in [line for line in lines if line.taken_back]:
        control.untrack(line)
        ledger.end(line.launch_id)
        lines.remove(line)


class Flights:
    """Batch lines in flight: each a task awaiting its answer within a request timeout, as
    the sender's are, so that taking one back cuts it off."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    async def send(
        self, control: BatchYield, ledger: UsageLedger, launch: Launch, count: int
    ) -> list[Line]:
        """Lines on their way to `launch`, tracked and counted as the sender does it."""
        lines = []
        for _ in range(count):
            line = control.track(launch)
            ledger.begin(launch.launch_id)
            self.tasks.append(asyncio.create_task(_awaiting_answer(line)))
            lines.append(line)
        await asyncio.sleep(0)  # each enters its timeout
        return lines


async def _awaiting_answer(line: Line) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3600) as deadline:
            line.deadline = deadline
            await asyncio.Event().wait()


@pytest.fixture
async def watching() -> AsyncIterator[tuple[UsageLedger, BatchYield]]:
    """A ledger and a running control that looks every 0.01 s."""
    ledger, pool = UsageLedger(), UpstreamPool()
    control = BatchYield(ledger, pool, FULL, check_seconds=0.01, hold_seconds=HOLD_SECONDS)
    control.start()
    yield ledger, control
    await control.stop()
    pool.close()


@pytest.fixture
async def flights() -> AsyncIterator[Flights]:
    in_flight = Flights()
    yield in_flight
    for task in in_flight.tasks:
        task.cancel()
    await asyncio.gather(*in_flight.tasks, return_exceptions=True)


@pytest.mark.anyio
async def test_the_window_shrinks_for_live_requests_and_grows_back(
    metrics_launch: tuple[FakeMetrics, Launch],
    flights: Flights,
    watching: tuple[UsageLedger, BatchYield],
) -> None:
    metrics, launch = metrics_launch
    ledger, control = watching
    grew: list[int] = []
    control.when_raised(lambda: grew.append(control.window(launch)))
    lines = await flights.send(control, ledger, launch, 14)
    metrics.waiting, metrics.running = 10, 4
    await reads_after(metrics, 1)
    assert control.window(launch) == FULL  # no live request: full speed

    ledger.begin(launch.launch_id, live=True)
    # At once: the window is what vLLM runs (4: it was full, with a queue) and a queue
    # of one line (an eighth of that, at least one); the ten queued (newest) make way.
    assert control.window(launch) == 5
    assert [line.taken_back for line in lines] == [False] * 4 + [True] * 10
    settle(control, ledger, lines)
    assert control.window(launch, urgent=True) == FULL

    metrics.waiting = 3  # more queued than allowed while the live request is in flight
    await eventually(lambda: control.window(launch) == 1)  # halved, and halved again
    assert sum(line.taken_back for line in lines) == 3  # and 10 before
    await reads_after(metrics, 3)
    assert control.window(launch) == 1  # never below one line
    assert dict(control.limits()) == {"L": 1}

    metrics.waiting = 0  # no queue: one line more per look
    await reads_after(metrics, 3)
    assert 2 <= control.window(launch) <= 1 + metrics.reads
    assert grew[:2] == [2, 3]

    metrics.waiting = 5  # a queue again while the live request is in flight
    await eventually(lambda: control.window(launch) == 1)
    settle(control, ledger, lines)
    grew.clear()
    ledger.end(launch.launch_id)  # the live request is answered; no other comes
    await eventually(lambda: control.window(launch) == FULL)
    start = grew[0] // 2  # back to full speed, doubling each look
    assert grew == [min(FULL, start * 2**step) for step in range(1, len(grew) + 1)]
    assert len(grew) >= 2
    assert dict(control.limits()) == {}


@pytest.mark.anyio
async def test_a_launch_without_batch_lines_is_not_watched(
    metrics_launch: tuple[FakeMetrics, Launch],
    flights: Flights,
    watching: tuple[UsageLedger, BatchYield],
) -> None:
    metrics, launch = metrics_launch
    ledger, control = watching
    [line] = await flights.send(control, ledger, launch, 1)
    await reads_after(metrics, 1)
    control.untrack(line)
    ledger.begin(launch.launch_id, live=True)  # nothing to take back
    assert not line.taken_back
    reads = metrics.reads
    await asyncio.sleep(0.1)  # a stretch with nothing to watch: no reads at all
    assert metrics.reads <= reads + 1


@pytest.mark.anyio
async def test_a_queue_reading_sums_engines_and_ignores_other_series(
    metrics_launch: tuple[FakeMetrics, Launch],
) -> None:
    metrics, launch = metrics_launch
    metrics.waiting, metrics.running = 7, 3
    pool = UpstreamPool()
    try:
        reading = await read_queue(pool, launch)
    finally:
        pool.close()
    assert reading is not None
    assert (reading.waiting, reading.running) == (7, 3)


@pytest.mark.anyio
async def test_a_launchs_max_num_seqs_sets_what_a_live_request_leaves_the_batch(
    flights: Flights,
) -> None:
    launch = a_launch("L")
    launch.extra_args = ["--max-num-seqs", "16"]
    ledger = UsageLedger()
    control = BatchYield(ledger, UpstreamPool(), FULL, check_seconds=1, hold_seconds=1)
    lines = await flights.send(control, ledger, launch, 40)

    ledger.begin(launch.launch_id, live=True)  # no look at vLLM's queue yet

    assert control.window(launch) == 18  # its 16 running, and two lines queued
    assert [line.taken_back for line in lines] == [False] * 18 + [True] * 22


@pytest.mark.anyio
async def test_a_line_goes_to_a_replica_with_room_in_its_window(flights: Flights) -> None:
    registry, ledger = LaunchRegistry(), UsageLedger()
    router = ModelRouter(registry, ledger)
    held, free = (_ready_replica(registry, launch_id) for launch_id in ("held", "free"))
    held.extra_args = ["--max-num-seqs", "1"]  # one running, one queued
    control = BatchYield(ledger, UpstreamPool(), FULL, check_seconds=1, hold_seconds=1)
    await flights.send(control, ledger, held, 2)
    for _ in range(10):
        ledger.begin(free.launch_id)  # the other replica is busier
    assert router.choose("m").launch_id == "held"  # least busy, when nothing is held back

    ledger.begin(held.launch_id, live=True)  # its window shrinks to its two lines
    assert control.window(held) == 2

    assert router.choose("m", control.has_room).launch_id == "free"
    assert router.choose("m", lambda _launch: False).launch_id == "held"  # none has room


def _ready_replica(registry: LaunchRegistry, launch_id: str) -> Launch:
    launch = a_launch(launch_id)
    registry.add(launch)
    launch.move_to(LaunchState.READY)
    launch.served_models = ["m"]
    registry.changed(launch)
    return launch


@pytest.mark.anyio
@pytest.mark.parametrize("value", ["NaN", "+Inf", "-1", "1e300", "many", None])
async def test_a_queue_reading_that_is_no_count_is_no_reading(
    metrics_launch: tuple[FakeMetrics, Launch], value: str | None
) -> None:
    metrics, launch = metrics_launch
    gauge = f'vllm:num_requests_waiting{{model_name="m"}} {value}\n'
    # None: no queue gauge at all (vLLM with --disable-log-stats)
    metrics.body = (gauge if value is not None else "vllm:cache_config_info 1\n").encode()
    pool = UpstreamPool()
    try:
        assert await read_queue(pool, launch) is None
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_live_request_leaves_the_window_alone_when_nothing_says_vllm_has_a_queue(
    flights: Flights,
) -> None:
    launch, ledger = a_launch("L"), UsageLedger()  # no --max-num-seqs, and no look yet
    control = BatchYield(ledger, UpstreamPool(), FULL, check_seconds=1, hold_seconds=1)
    lines = await flights.send(control, ledger, launch, 5)
    ledger.begin(launch.launch_id, live=True)
    assert control.window(launch) == FULL
    assert not any(line.taken_back for line in lines)


@pytest.mark.anyio
async def test_a_line_whose_own_timeout_is_ending_is_not_taken_back() -> None:
    line = Line("L")
    assert line.take_back() is False  # not sent yet: nothing to cut off
    while_ending: list[bool] = []
    with pytest.raises(TimeoutError):
        await _cut_off_by_its_timeout(line, while_ending)
    assert while_ending == [False]
    assert not line.taken_back  # a timeout, reported as one, not as making way


async def _cut_off_by_its_timeout(line: Line, while_ending: list[bool]) -> None:
    async with asyncio.timeout(0.001) as deadline:
        line.deadline = deadline
        try:
            await asyncio.Event().wait()  # an answer that never comes
        except asyncio.CancelledError:  # its timeout is ending it: too late to take back
            while_ending.append(line.take_back())
            raise


def test_a_failing_live_listener_does_not_stop_the_request() -> None:
    ledger = UsageLedger()

    def broken(_launch_id: str) -> None:
        raise RuntimeError("a bug")

    ledger.on_live_begin(broken)
    ledger.begin("L", live=True)
    assert ledger.in_flight("L") == 1


@pytest.mark.anyio
async def test_a_queue_longer_than_the_batch_takes_back_every_batch_line_not_more(
    metrics_launch: tuple[FakeMetrics, Launch],
    flights: Flights,
    watching: tuple[UsageLedger, BatchYield],
) -> None:
    metrics, launch = metrics_launch
    launch.extra_args = ["--max-num-seqs", "1"]
    ledger, control = watching
    lines = await flights.send(control, ledger, launch, 10)
    metrics.waiting, metrics.running = 15, 1  # others' requests are queued as well
    await reads_after(metrics, 1)

    ledger.begin(launch.launch_id, live=True)

    assert control.window(launch) == 2
    assert all(line.taken_back for line in lines)

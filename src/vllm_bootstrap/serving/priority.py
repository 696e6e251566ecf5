"""vLLM's request priority (lower is served first, 0 unless a request says otherwise), as
the control plane sets it: on batch lines and on scoped keys' requests to launches that run
`--scheduling-policy priority`, and, on any launch, in the order requests that waited for a
model load go on once it is ready."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from vllm_bootstrap.launches import Launch, flag_value


def uses_priority_scheduling(extra_args: list[str]) -> bool:
    """Whether vLLM was started with `--scheduling-policy priority` (in any spelling its
    parser takes; the last one given wins)."""
    return flag_value(extra_args, "--scheduling-policy") == "priority"


# Launch id -> whether it runs priority scheduling: read from its arguments once, not for
# every request (an id is never reused, and a launch's arguments never change).
_POLICIES: dict[str, bool] = {}


def runs_priority_scheduling(launch: Launch) -> bool:
    policy = _POLICIES.get(launch.launch_id)
    if policy is None:
        if len(_POLICIES) >= 4096:  # launches come and go: the memory stays bounded
            _POLICIES.clear()
        policy = _POLICIES[launch.launch_id] = uses_priority_scheduling(launch.extra_args)
    return policy


def with_priority(body: bytes, priority: int, forced: bool = False) -> bytes:
    """The JSON object `body` with a `priority` member: put first, a `priority` of the
    request's own comes later and wins (JSON parsers keep a repeated key's last value);
    `forced`, put last, it wins over the request's own (a scoped key's priority is the
    key's, not its client's to choose). Spliced, not parsed and written again: this runs
    for every request."""
    member = b'"priority":%d' % priority
    if forced:
        end = body.rfind(b"}")
        if end < 0:
            return body
        empty = body[:end].rstrip().endswith(b"{")
        return body[:end] + (b"" if empty else b",") + member + body[end:]
    start = body.find(b"{")
    if start < 0:
        return body  # not an object: validation let only objects through
    rest = body[start + 1 :]
    separator = b"" if rest.lstrip().startswith(b"}") else b","
    return body[: start + 1] + member + separator + rest


class PriorityTurns:
    """Requests that wake together (a model load just finished) go on in priority order,
    lowest first, then in the order they came: each takes its `turn`, and the turns are
    given out once every request woken in the same moment has asked for one."""

    def __init__(self) -> None:
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    async def turn(self, priority: int) -> None:
        loop = asyncio.get_running_loop()
        if not self._waiting:
            # After the callbacks already due: the other requests woken with this one.
            loop.call_soon(self._give_out)
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiting, (priority, next(self._arrivals), future))
        await future

    def _give_out(self) -> None:
        while self._waiting:
            _priority, _arrival, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)

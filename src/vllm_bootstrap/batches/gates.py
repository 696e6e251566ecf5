"""How many batch requests each model may have in flight, shared fairly between batches.

A model's capacity is the sum of its ready launches' windows (yielding.py): each is
`VLLM_BATCH_IN_FLIGHT_PER_LAUNCH`, enough that vLLM's scheduler always has a queue to
take from, until live requests on the launch shrink it. Urgent
batches have gates of their own, always at full width: they do not yield. Batches wanting
the same model take turns: a slot freed goes to the next waiting batch in rotation, so a
new batch is not starved behind a large one. Interactive /v1 requests do not take slots;
they share the launches through the router, which reads the usage ledger, where batch
requests count too.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

from vllm_bootstrap.launches import Launch
from vllm_bootstrap.serving import ModelRouter

RECHECK_SECONDS = 1.0


class ModelMissing(LookupError):
    """No launch has served or been loading the model for the whole wait."""


class OnDemand(Protocol):
    """Model profiles loaded when a batch needs them (models/swapper.py)."""

    def demand(self, name: str, reason: str, since: float) -> bool:
        """Start loading profile `name` unless it is loading; False if it is no profile, or
        a load of it failed after `since` (time.monotonic())."""
        ...

    async def batch_order(self, models: list[str]) -> tuple[list[str], list[str]]:
        """The models a batch may run at once, and those to run one after another."""
        ...


class _Gate:
    def __init__(self) -> None:
        self.in_use = 0
        # Waiting batches in turn order, each with its own queue of waiters.
        self.waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    def enqueue(self, owner: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(owner, deque()).append(future)
        return future

    def grant(self, capacity: int) -> None:
        while self.in_use < capacity and self.waiting:
            owner, queue = self.waiting.popitem(last=False)
            future = queue.popleft()
            if queue:
                self.waiting[owner] = queue  # to the back of the rotation
            if not future.done():
                future.set_result(None)
                self.in_use += 1


# A launch's window: how many lines of batches (urgent ones, when True) it takes now.
Window = Callable[[Launch, bool], int]
_GateKey = tuple[str, bool]  # (model, urgent)


class ModelGates:
    def __init__(self, router: ModelRouter, window: Window, on_demand: OnDemand) -> None:
        self._router = router
        self._window = window
        self._gates: dict[_GateKey, _Gate] = {}
        self._on_demand = on_demand

    async def batch_order(self, models: list[str]) -> tuple[list[str], list[str]]:
        return await self._on_demand.batch_order(models)

    def capacity(self, model: str, urgent: bool = False) -> int:
        return sum(self._window(launch, urgent) for launch in self._router.replicas(model))

    def in_flight(self, model: str, urgent: bool = False) -> int:
        gate = self._gates.get((model, urgent))
        return gate.in_use if gate else 0

    def launches_changed(self) -> None:
        """Capacity may have grown: hand out what is free now."""
        for key, gate in list(self._gates.items()):
            gate.grant(self.capacity(*key))

    async def acquire(
        self, model: str, owner: str, missing_wait: float, urgent: bool = False
    ) -> None:
        """Wait for a slot for `model` (in the urgent batches' gate when `urgent`);
        ModelMissing once no launch has served or been loading it for `missing_wait`
        seconds in a row."""
        key = (model, urgent)
        gate = self._gates.setdefault(key, _Gate())
        if not gate.waiting and gate.in_use < self.capacity(*key):
            gate.in_use += 1
            return
        future = gate.enqueue(owner)
        gate.grant(self.capacity(*key))
        waiting_since = time.monotonic()
        missing_since: float | None = None
        try:
            while not future.done():
                if self._is_coming(model, owner, waiting_since):
                    missing_since = None
                else:
                    missing_since = missing_since or time.monotonic()
                    if time.monotonic() - missing_since >= missing_wait:
                        future.cancel()
                        self._forget_if_idle(key, gate)
                        raise ModelMissing(model)
                # Capacity changes are pushed (launches_changed); the recheck only notices a
                # model that stopped loading without ever becoming ready.
                await asyncio.wait([future], timeout=min(RECHECK_SECONDS, missing_wait))
        except BaseException:  # cancelled, or anything else: no slot stays taken
            if future.done() and not future.cancelled():
                self.release(model, urgent)
            else:
                future.cancel()
                self._forget_if_idle(key, gate)
            raise

    def _is_coming(self, model: str, owner: str, since: float) -> bool:
        """A launch serves the model, is loading it, or a profile of that name will be (its
        load has not failed while this request waited)."""
        return bool(
            self._router.replica_count(model)
            or self._router.is_loading(model)
            or self._on_demand.demand(model, f"batch {owner}", since)
        )

    def release(self, model: str, urgent: bool = False) -> None:
        key = (model, urgent)
        gate = self._gates[key]
        gate.in_use -= 1
        gate.grant(self.capacity(*key))
        self._forget_if_idle(key, gate)

    def _forget_if_idle(self, key: _GateKey, gate: _Gate) -> None:
        """A gate nobody holds or waits for goes: models come and go over a server's life."""
        if gate.in_use:
            return
        for owner, queue in list(gate.waiting.items()):
            if all(future.done() for future in queue):
                del gate.waiting[owner]
        if not gate.waiting and self._gates.get(key) is gate:
            del self._gates[key]

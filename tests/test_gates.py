"""Batch slots per model: capacity follows the ready replicas, batches take turns, a model
that nobody serves ends the wait, a loading one does not."""

from __future__ import annotations

import asyncio

import pytest

from tests.test_registry import a_launch
from vllm_bootstrap.batches.gates import ModelGates, ModelMissing
from vllm_bootstrap.launches.record import Launch
from vllm_bootstrap.launches.registry import LaunchRegistry
from vllm_bootstrap.launches.states import LaunchState
from vllm_bootstrap.serving.router import ModelRouter
from vllm_bootstrap.usage import UsageLedger


class _NoProfiles:
    """Batches here name no model profile."""

    def demand(self, name: str, reason: str, since: float) -> bool:
        return False

    async def batch_order(self, models: list[str]) -> tuple[list[str], list[str]]:
        return models, []


def _gates(per_launch: int) -> tuple[LaunchRegistry, ModelGates]:
    registry = LaunchRegistry()
    router = ModelRouter(registry, UsageLedger())
    gates = ModelGates(router, lambda _launch, _urgent: per_launch, _NoProfiles())
    registry.subscribe(lambda _launch: gates.launches_changed())
    return registry, gates


def _ready(registry: LaunchRegistry, launch_id: str) -> Launch:
    launch = a_launch(launch_id)
    registry.add(launch)
    launch.move_to(LaunchState.READY)
    launch.served_models = ["m"]  # what the supervisor learns from vLLM's /v1/models
    registry.changed(launch)
    return launch


def test_capacity_is_the_limit_for_each_ready_replica() -> None:
    registry, gates = _gates(per_launch=3)
    assert gates.capacity("m") == 0
    _ready(registry, "a")
    _ready(registry, "b")
    assert gates.capacity("m") == 6


@pytest.mark.anyio
async def test_waiting_batches_take_turns_for_freed_slots() -> None:
    registry, gates = _gates(per_launch=1)
    _ready(registry, "a")
    await gates.acquire("m", "first", missing_wait=5)  # the one slot is taken
    granted: list[str] = []

    async def want(owner: str) -> None:
        await gates.acquire("m", owner, missing_wait=5)
        granted.append(owner)

    waiters = [asyncio.create_task(want(owner)) for owner in ("A", "A", "A", "B", "B", "B")]
    await asyncio.sleep(0)
    for _ in range(6):
        gates.release("m")
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert granted == ["A", "B", "A", "B", "A", "B"]


@pytest.mark.anyio
async def test_a_new_replica_grants_waiting_slots_at_once() -> None:
    registry, gates = _gates(per_launch=1)
    _ready(registry, "a")
    await gates.acquire("m", "x", missing_wait=5)
    waiter = asyncio.create_task(gates.acquire("m", "y", missing_wait=5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    _ready(registry, "b")
    await asyncio.wait_for(waiter, 0.5)
    assert gates.in_flight("m") == 2


@pytest.mark.anyio
async def test_a_model_nobody_serves_ends_the_wait() -> None:
    _registry, gates = _gates(per_launch=1)
    with pytest.raises(ModelMissing):
        await gates.acquire("nobody", "x", missing_wait=0.05)
    assert gates.in_flight("nobody") == 0


@pytest.mark.anyio
async def test_a_loading_model_keeps_its_requests_waiting() -> None:
    registry, gates = _gates(per_launch=1)
    registry.add(a_launch("loading"))  # bootstrapping
    waiter = asyncio.create_task(gates.acquire("m", "x", missing_wait=0.05))
    await asyncio.sleep(0.3)
    assert not waiter.done()  # well past missing_wait: loading is not missing
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gates.in_flight("m") == 0

"""Requests that waited together for a model load go on in their keys' priority order."""

from __future__ import annotations

import asyncio

import pytest

from vllm_bootstrap.serving.priority import PriorityTurns


@pytest.mark.anyio
async def test_requests_woken_together_go_on_lowest_priority_first() -> None:
    turns = PriorityTurns()
    loaded = asyncio.Event()
    order: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        await loaded.wait()  # the load every one of them waited for
        await turns.turn(priority)
        order.append(name)

    tasks = [
        asyncio.create_task(waiter(name, priority))
        for name, priority in [("batchy", 5), ("first-come", 0), ("urgent", -3), ("also-0", 0)]
    ]
    await asyncio.sleep(0)
    loaded.set()
    await asyncio.gather(*tasks)
    assert order == ["urgent", "first-come", "also-0", "batchy"]


@pytest.mark.anyio
async def test_a_request_alone_goes_on_at_once() -> None:
    turns = PriorityTurns()
    await asyncio.wait_for(turns.turn(7), timeout=1)
    await asyncio.wait_for(turns.turn(-7), timeout=1)  # and the next one, later, too

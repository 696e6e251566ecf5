"""The batch database in-process (real SQLite, no server): what no HTTP round trip shows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from vllm_bootstrap.batches.store import (
    CLEAR_PAGE_ROWS,
    BatchStore,
    RequestRow,
    clear_requests,
)


@pytest.mark.anyio
async def test_clearing_a_batchs_rows_gives_the_event_loop_turns_between_pages(
    tmp_path: Path,
) -> None:
    store = BatchStore(tmp_path / "batches.sqlite3")
    rows = [
        RequestRow(line, line * 10, 10, "m", f"r{line}")
        for line in range(1, 2 * CLEAR_PAGE_ROWS + 2)
    ]
    assert store.add_requests("batch_a", rows) == []
    store.add_requests("batch_b", rows[:5])  # another batch's rows stay
    turns = 0
    clearing = asyncio.ensure_future(clear_requests(store, "batch_a"))
    while not clearing.done():
        turns += 1
        await asyncio.sleep(0)
    await clearing
    # Three pages, with the loop's turn between them: other requests were served meanwhile.
    assert turns >= 3
    assert store.pending("batch_a", None, 0, 10) == []
    assert len(store.pending("batch_b", None, 0, 10)) == 5
    store.close()

"""Usage per scoped key, per model, per day (UTC): requests, tokens, errors, batch lines and
the GPU-seconds of the model loads the key caused.

Requests add to counters in memory; a background task writes what was added to the state
database every VLLM_BOOTSTRAP_USAGE_FLUSH_SECONDS (one transaction for all of it), so the
hot path never waits for SQLite and a kill -9 loses at most that last second. The totals
since start are also kept for /metrics, by key and model (bounded by the keys times the
models they used).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vllm_bootstrap.sqlite import Transaction, open_private

logger = logging.getLogger("vllm_bootstrap.keys")
COUNTS = ("requests", "prompt_tokens", "completion_tokens", "errors", "batch_lines")
FIGURES = (*COUNTS, "load_gpu_seconds")
# Where each figure sits in a row of them (FIGURES' order).
REQUESTS, PROMPT, COMPLETION, ERRORS, BATCH_LINES, LOAD_GPU_SECONDS = range(len(FIGURES))
GROUPS = ("key", "model", "day")
SCHEMA = """
CREATE TABLE IF NOT EXISTS key_usage (
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    day TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    batch_lines INTEGER NOT NULL DEFAULT 0,
    load_gpu_seconds REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, model, day)
) WITHOUT ROWID
"""
_ADD = (
    "INSERT INTO key_usage (key_id, model, day, requests, prompt_tokens, completion_tokens, "
    "errors, batch_lines, load_gpu_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key_id, model, day) DO UPDATE SET "
    + ", ".join(f"{name} = {name} + excluded.{name}" for name in FIGURES)
)
Figures = list[float]  # in FIGURES order


class _Today:
    """Today's date (UTC) as usage rows name it, worked out again only once it is over."""

    def __init__(self) -> None:
        self._name = ""
        self._ends = 0.0

    def __call__(self) -> str:
        now = time.time()
        if now >= self._ends:
            day = datetime.fromtimestamp(now, UTC).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            self._name = day.strftime("%Y-%m-%d")
            self._ends = day.timestamp() + 86400
        return self._name


today = _Today()


class _Counts:
    """One key's figures for one model: since start (for /metrics), and today's not yet
    written."""

    __slots__ = ("day", "pending", "totals")

    def __init__(self, day: str) -> None:
        self.day = day
        self.pending: Figures = [0] * len(FIGURES)
        self.totals: Figures = [0] * len(FIGURES)


class _Spent(_Counts):
    """Figures of a deleted key's request that ended after it was deleted: written (they
    are its usage), never shown in /metrics again."""

    def __init__(self, book: UsageBook, key_id: str, model: str, day: str) -> None:
        super().__init__(day)
        self.pending = book._closed.setdefault((key_id, model, day), [0] * len(FIGURES))


class UsageBook:
    def __init__(self, path: Path, flush_seconds: float) -> None:
        self._db = open_private(path)
        self._db.execute(SCHEMA)
        self._flush_seconds = flush_seconds
        # Two lookups and a few additions in place per request: nothing is made that
        # outlives it, so the garbage collector has no more to do than without keys.
        self._counts: dict[str, dict[str, _Counts]] = {}  # key id -> model -> figures
        # Figures of a day that ended (or of a deleted key) before they were written.
        self._closed: dict[tuple[str, str, str], Figures] = {}
        self._forgotten: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- the hot path

    def count(
        self,
        key_id: str,
        model: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        error: bool = False,
        batch_line: bool = False,
    ) -> None:
        """One request (or batch line) of `key_id` to `model`, ended."""
        counts = self._today(key_id, model)
        pending, totals = counts.pending, counts.totals
        kind = BATCH_LINES if batch_line else REQUESTS
        pending[kind] += 1
        totals[kind] += 1
        if prompt_tokens or completion_tokens:
            pending[PROMPT] += prompt_tokens
            totals[PROMPT] += prompt_tokens
            pending[COMPLETION] += completion_tokens
            totals[COMPLETION] += completion_tokens
        if error:
            pending[ERRORS] += 1
            totals[ERRORS] += 1

    def charge_load(self, key_id: str, model: str, gpu_seconds: float) -> None:
        """A model load the key's request started took `gpu_seconds` of GPU time."""
        counts = self._today(key_id, model)
        counts.pending[LOAD_GPU_SECONDS] += gpu_seconds
        counts.totals[LOAD_GPU_SECONDS] += gpu_seconds

    def _today(self, key_id: str, model: str) -> _Counts:
        day = today()
        by_model = self._counts.get(key_id)
        if by_model is None:
            if key_id in self._forgotten:  # deleted, with requests still in flight
                return _Spent(self, key_id, model, day)
            by_model = self._counts[key_id] = {}
        counts = by_model.get(model)
        if counts is None:
            counts = by_model[model] = _Counts(day)
        elif counts.day != day:  # a new day: the last one's figures wait for the flush
            self._close(key_id, model, counts)
            counts.day = day
        return counts

    def _all(self) -> Iterator[tuple[str, str, _Counts]]:
        for key_id, by_model in self._counts.items():
            for model, counts in by_model.items():
                yield key_id, model, counts

    def _close(self, key_id: str, model: str, counts: _Counts) -> None:
        if any(counts.pending):
            _add_to(self._closed, (key_id, model, counts.day), counts.pending)
            counts.pending = [0] * len(FIGURES)

    # ----------------------------------------------------------------- writing

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_every_while())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()
        self._db.close()

    async def _flush_every_while(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            self.flush()

    def flush(self) -> None:
        """Write what was added since the last flush, in one transaction; kept for the next
        try when the database cannot take it (a full disk, a lock held by a shell)."""
        rows = {where: list(figures) for where, figures in self._closed.items()}
        for key_id, model, counts in self._all():
            if any(counts.pending):
                _add_to(rows, (key_id, model, counts.day), counts.pending)
        if not rows:
            return
        try:
            with Transaction(self._db):
                self._db.executemany(_ADD, [(*where, *figures) for where, figures in rows.items()])
        except sqlite3.Error as exc:
            logger.warning("usage could not be written yet (kept for the next try): %s", exc)
            return
        self._closed.clear()
        for _key_id, _model, counts in self._all():
            counts.pending = [0] * len(FIGURES)

    # ----------------------------------------------------------------- reading

    def totals(self) -> Iterator[tuple[tuple[str, str], Figures]]:
        """(key_id, model) -> figures since the server started, for /metrics."""
        return iter(
            [((key_id, model), list(counts.totals)) for key_id, model, counts in self._all()]
        )

    def forget(self, key_id: str) -> None:
        """A deleted key's /metrics series end (its usage stays, and is still written, also
        that of its requests still in flight)."""
        self._forgotten.add(key_id)
        for model, counts in self._counts.pop(key_id, {}).items():
            self._close(key_id, model, counts)

    def query(
        self,
        key_id: str | None,
        model: str | None,
        since: str | None,
        until: str | None,
        group_by: tuple[str, ...],
        name_of: Callable[[str], str],
    ) -> list[dict[str, Any]]:
        """Rows of figures summed over what `group_by` leaves out; days from `since` to
        `until` (YYYY-MM-DD, both included)."""
        self.flush()
        where, params = ["1"], []
        for column, value in (("key_id", key_id), ("model", model)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("day >= ?")
            params.append(since)
        if until is not None:
            where.append("day <= ?")
            params.append(until)
        columns = [{"key": "key_id"}.get(group, group) for group in group_by]
        selected = ", ".join([*columns, *(f"sum({name}) AS {name}" for name in FIGURES)])
        grouping = (
            f" GROUP BY {', '.join(columns)} ORDER BY {', '.join(columns)}" if columns else ""
        )
        rows = self._db.execute(
            f"SELECT {selected} FROM key_usage WHERE {' AND '.join(where)}{grouping}", params
        ).fetchall()
        return [_row(row, name_of) for row in rows if row["requests"] is not None]


def _add_to(book: dict[Any, Figures], where: tuple[str, ...], figures: Figures) -> None:
    kept = book.get(where)
    if kept is None:
        book[where] = list(figures)
        return
    kept[:] = [mine + added for mine, added in zip(kept, figures, strict=True)]


def _row(row: sqlite3.Row, name_of: Callable[[str], str]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    names = row.keys()
    if "key_id" in names:
        shown["key_id"] = row["key_id"]
        shown["key"] = name_of(row["key_id"])
    for group in ("model", "day"):
        if group in names:
            shown[group] = row[group]
    for name in COUNTS:
        shown[name] = row[name]
    shown["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
    shown["load_gpu_seconds"] = round(row["load_gpu_seconds"], 3)
    return shown

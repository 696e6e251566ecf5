"""Sending a batch's pending requests: one lane per model, each keeping its model's slots
full.

A lane reads the pending rows of its model in file order, a page at a time, and starts a
request as soon as the model's gate gives it a slot, so the in-flight count per launch
stays at its limit while results stream back. A request that must be retried gives its slot
back while it waits. A model that no launch serves within the wait fails only its own lane's
rows. Cancelling the lanes' task aborts every request in flight: closing their connections
makes vLLM drop them. A line taken back to make way for live requests (yielding.py) waits
for a slot again, at no cost to its attempts.
"""

from __future__ import annotations

import asyncio
import logging
import os

from vllm_bootstrap.batches.gates import ModelGates, ModelMissing
from vllm_bootstrap.batches.keyed import Turn, revoked
from vllm_bootstrap.batches.record import Batch, is_urgent
from vllm_bootstrap.batches.requests import (
    ATTEMPTS,
    Outcome,
    RequestSender,
    backoff,
    error_outcome,
    request_id,
)
from vllm_bootstrap.batches.results import ResultWriter
from vllm_bootstrap.batches.store import BatchStore, RequestRow
from vllm_bootstrap.log_text import escaped

PAGE_ROWS = 256
_CUT_OFF = Outcome(b"", ok=False)
logger = logging.getLogger("vllm_bootstrap.batches")


class Lanes:
    def __init__(
        self,
        batch: Batch,
        store: BatchStore,
        gates: ModelGates,
        sender: RequestSender,
        writer: ResultWriter,
        input_fd: int,
        model_wait_seconds: float,
        request_timeout_seconds: float,
    ) -> None:
        self._batch = batch
        self._store = store
        self._gates = gates
        self._sender = sender
        self._writer = writer
        self._input_fd = input_fd
        self._model_wait = model_wait_seconds
        self._request_timeout = request_timeout_seconds
        # An urgent batch skips making way for live requests: the access key's to ask for.
        self._urgent = is_urgent(batch) and batch.owner is None
        self._keyed = sender.keyed

    async def run(self) -> None:
        """Send every pending request of the batch; returns when each has an outcome.

        Models that cannot all be loaded together (profiles needing more GPUs than are
        free) run one after another, so the swapper does not thrash between them.
        """
        together, in_turn = await self._gates.batch_order(
            self._store.pending_models(self._batch.id)
        )
        if in_turn:
            logger.info(
                "batch %s: models %s do not fit on the GPUs together; running them one by one",
                self._batch.id,
                ", ".join(escaped(model) for model in in_turn),
            )
        async with asyncio.TaskGroup() as group:
            for model in together:
                group.create_task(self._lane(model))
            if in_turn:
                group.create_task(self._one_by_one(in_turn))

    async def _one_by_one(self, models: list[str]) -> None:
        for model in models:
            await self._lane(model)

    async def _lane(self, model: str) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        missing = False
        after = 0
        try:
            while rows := self._store.pending(self._batch.id, model, after, PAGE_ROWS):
                for row in rows:
                    after = row.line
                    await self._writer.writable.wait()
                    if self._writer.failure is not None:
                        return  # results can no longer be kept: stop sending
                    turn = None
                    if self._batch.owner is not None and not missing:
                        turn = await self._keyed.turn(self._batch.owner)
                        if turn is None:
                            line_id = request_id(self._batch.id, row.line)
                            self._record(row, revoked(line_id, row.custom_id))
                            continue
                    if not missing:
                        try:
                            await self._gates.acquire(
                                model, self._batch.id, self._model_wait, self._urgent
                            )
                        except ModelMissing:
                            missing = True
                        except BaseException:
                            self._end_turn(turn, None, None)
                            raise
                    if missing:
                        outcome = _model_missing(self._batch.id, row, model)
                        self._end_turn(turn, None, outcome)
                        self._record(row, outcome)
                        continue
                    slot = _Slot(self._gates, model, self._batch.id, self._model_wait, self._urgent)
                    task = asyncio.create_task(self._request(row, slot, turn))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    # Also for a task cancelled before it ran a line: the slot goes back.
                    task.add_done_callback(slot.release_if_held)
                await asyncio.sleep(0)  # a page recorded without sending must not hog the loop
            if in_flight:
                await asyncio.wait(in_flight)
        finally:
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.wait(in_flight)

    async def _request(self, row: RequestRow, slot: _Slot, turn: Turn | None) -> None:
        """One request line, holding a slot (and its key's turn), until it has a final
        outcome."""
        outcome = None
        try:
            outcome = await self._attempts(row, slot, turn)
        except Exception as exc:  # a bug must cost this line an error, not its result
            logger.exception("batch %s: line %d failed", self._batch.id, row.line)
            message = f"{type(exc).__name__}: {exc}"
            outcome = error_outcome(
                request_id(self._batch.id, row.line), row.custom_id, "internal_error", message
            )
        finally:
            self._end_turn(turn, slot.model if outcome is not None else None, outcome)
        self._record(row, outcome)

    def _end_turn(self, turn: Turn | None, model: str | None, outcome: Outcome | None) -> None:
        """The line's turn among its key's requests ends (a line cut off counts as failed)."""
        if turn is not None:
            self._keyed.done(turn, model, outcome or _CUT_OFF)

    async def _attempts(self, row: RequestRow, slot: _Slot, turn: Turn | None) -> Outcome:
        this_id = request_id(self._batch.id, row.line)
        try:
            body = self._read_body(row)
        except (OSError, ValueError) as exc:  # the input file changed on disk
            message = f"line {row.line} of the input file could not be read again: {exc}"
            return error_outcome(this_id, row.custom_id, "invalid_line", message)
        attempts = 0  # counting towards ATTEMPTS (a timeout leaves one more)
        tries = 0  # requests that reached a launch, for the error line
        while True:
            key = None
            if turn is not None:  # as it is now: deleted, expired or edited meanwhile
                key = self._keyed.current(turn.key.id)
                if key is None:
                    return revoked(this_id, row.custom_id)
            outcome = await self._sender.attempt(
                row.custom_id,
                slot.model,
                self._batch.endpoint,
                body,
                this_id,
                final=attempts >= ATTEMPTS - 1,
                timeout=self._request_timeout,
                urgent=self._urgent,
                tries=tries + 1,
                key=key,
            )
            slot.release_if_held()
            if isinstance(outcome, Outcome):
                return outcome
            attempts += outcome.counts
            tries += outcome.counts
            delay = backoff(attempts) if outcome.counts else 0.05
            if outcome.last_chance:
                attempts = max(attempts, ATTEMPTS - 1)
            await asyncio.sleep(delay)
            try:
                await slot.take_again()
            except ModelMissing:
                return _model_missing(self._batch.id, row, slot.model)

    def _read_body(self, row: RequestRow) -> bytes:
        """The request's body, as the input file has it (validation found where)."""
        body = os.pread(self._input_fd, row.length, row.offset)
        if len(body) != row.length:
            raise ValueError("the input file is shorter than when it was validated")
        return body

    def _record(self, row: RequestRow, outcome: Outcome) -> None:
        self._writer.add(row.line, outcome)


class _Slot:
    """One request's place in its model's gate: taken by the lane, given back once."""

    def __init__(
        self, gates: ModelGates, model: str, owner: str, model_wait: float, urgent: bool
    ) -> None:
        self._gates = gates
        self.model = model
        self._owner = owner
        self._model_wait = model_wait
        self._urgent = urgent
        self.held = True

    def release_if_held(self, _task: object = None) -> None:
        if self.held:
            self.held = False
            self._gates.release(self.model, self._urgent)

    async def take_again(self) -> None:
        await self._gates.acquire(self.model, self._owner, self._model_wait, self._urgent)
        self.held = True


def _model_missing(batch_id: str, row: RequestRow, model: str) -> Outcome:
    message = f"no launch served the model {model!r} in time: launch one, then retry the batch"
    return error_outcome(request_id(batch_id, row.line), row.custom_id, "model_not_found", message)

"""A scoped key's batch: its lines are the key's requests. Each waits for the key's limits
(instead of failing, as a live request would), counts in its usage as a batch line with the
tokens vLLM reported, and fails at once once the key is deleted or expired."""

from __future__ import annotations

from dataclasses import dataclass

from vllm_bootstrap.batches.requests import Outcome, error_outcome
from vllm_bootstrap.keys import (
    ApiKey,
    KeyLimits,
    KeyState,
    KeyStore,
    RateLimited,
    UsageBook,
    usage_in,
)


@dataclass(frozen=True)
class Turn:
    """A line's place among its key's requests in flight."""

    key: ApiKey
    state: KeyState


class KeyedLines:
    def __init__(self, keys: KeyStore, limits: KeyLimits, usage: UsageBook) -> None:
        self._keys = keys
        self._limits = limits
        self._usage = usage

    async def turn(self, owner: str) -> Turn | None:
        """The key's turn, once its limits let one more line go (`done` ends it); None when
        the key is deleted or expired, also while the line waited."""
        while (key := self.current(owner)) is not None:
            try:
                return Turn(key, self._limits.admit(key))
            except RateLimited as limited:
                await self._limits.room(key, limited)
        return None

    def done(self, turn: Turn, model: str | None, outcome: Outcome) -> None:
        """The line's final outcome; `model` None when it never reached a launch of its
        model (usage keeps it under "-": a name no launch serves is no label)."""
        usage = usage_in(outcome.line) if outcome.ok else None
        prompt, completion = usage or (0, 0)
        self._limits.release(turn.state, prompt + completion)
        self._usage.count(turn.key.id, model or "-", prompt, completion, not outcome.ok, True)

    def out_of_reach(self, owner: str, models: list[str]) -> list[str]:
        """The models outside the key's list (all of them once the key is gone)."""
        key = self.current(owner)
        return [model for model in models if key is None or not key.allows_model(model)]

    def current(self, owner: str) -> ApiKey | None:
        """The key as it is now; None once deleted or expired."""
        key = self._keys.current(owner)
        return None if key is None or key.expired() else key


def revoked(request_id: str, custom_id: str) -> Outcome:
    message = "the batch's key was deleted or has expired"
    return error_outcome(request_id, custom_id, "key_revoked", message)

"""Each scoped key's limits, held in memory: requests in flight, and requests and tokens in
its current minute.

The counts are the control plane's, so they hold across every replica a key reaches. The
limits themselves are the key's (in the state database) and survive a restart; the counts
of the minute under way start again. A window is a fixed minute from the key's first
request in it; tokens are charged when a response reports them, so a key may pass its
tokens per minute by what its requests in flight bring, never by more.
"""

from __future__ import annotations

import asyncio
import time

from vllm_bootstrap.keys.record import ApiKey

WINDOW_SECONDS = 60.0


class RateLimited(Exception):
    """429 rate_limit_exceeded, with Retry-After and OpenAI's x-ratelimit headers."""

    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, retry_after_seconds: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
        self.headers = headers


class KeyState:
    """One key's counts: requests in flight, and requests and tokens in its minute."""

    __slots__ = ("freed", "in_flight", "requests", "started", "tokens")

    def __init__(self) -> None:
        self.in_flight = 0
        self.started = -WINDOW_SECONDS  # the minute under way began then (none yet)
        self.requests = 0
        self.tokens = 0
        self.freed: asyncio.Event | None = None  # set when a request ends (batch lines wait)


class KeyLimits:
    def __init__(self) -> None:
        self._states: dict[str, KeyState] = {}

    def in_flight(self, key_id: str) -> int:
        state = self._states.get(key_id)
        return state.in_flight if state is not None else 0

    def in_flight_by_key(self) -> list[tuple[str, int]]:
        return [(key_id, state.in_flight) for key_id, state in self._states.items()]

    def admit(self, key: ApiKey) -> KeyState:
        """Count one more request of `key` in flight (`release` it once done); RateLimited
        when a limit says no, counting nothing."""
        state = self._states.get(key.id)
        if state is None:
            state = self._states[key.id] = KeyState()
        now = time.monotonic()
        if now - state.started >= WINDOW_SECONDS:
            state.started, state.requests, state.tokens = now, 0, 0
        if key.max_concurrency is not None and state.in_flight >= key.max_concurrency:
            message = (
                f"key {key.name!r} has {key.max_concurrency} requests in flight, its "
                "max_concurrency: retry when one has ended"
            )
            raise RateLimited(message, 1, self.headers(key, state))
        if key.requests_per_minute is not None and state.requests >= key.requests_per_minute:
            retry = _seconds_left(state, now)
            message = (
                f"key {key.name!r} reached its {key.requests_per_minute} requests per minute: "
                f"retry in {retry} s"
            )
            raise RateLimited(message, retry, self.headers(key, state))
        if key.tokens_per_minute is not None and state.tokens >= key.tokens_per_minute:
            retry = _seconds_left(state, now)
            message = (
                f"key {key.name!r} reached its {key.tokens_per_minute} tokens per minute: "
                f"retry in {retry} s"
            )
            raise RateLimited(message, retry, self.headers(key, state))
        state.requests += 1
        state.in_flight += 1
        return state

    @staticmethod
    def release(state: KeyState, tokens: int) -> None:
        """The request `admit` counted ended, having used `tokens` (prompt and completion)."""
        state.in_flight -= 1
        state.tokens += tokens
        if state.freed is not None:
            state.freed.set()
            state.freed = None

    async def room(self, key: ApiKey, limited: RateLimited) -> None:
        """Wait until `key` may have room again after `limited`: a request of its in flight
        ended, or its minute passed (a batch line waits so instead of failing)."""
        state = self._states.get(key.id)
        if (
            state is not None
            and key.max_concurrency is not None
            and state.in_flight >= key.max_concurrency
        ):
            if state.freed is None:
                state.freed = asyncio.Event()
            await state.freed.wait()
        else:
            await asyncio.sleep(limited.retry_after_seconds)

    def headers(self, key: ApiKey, state: KeyState) -> list[tuple[bytes, bytes]]:
        """OpenAI's x-ratelimit-* limit and remaining headers for the key's minute limits
        (none without one; when the minute ends is in Retry-After, on a refusal)."""
        headers = []
        if key.requests_per_minute is not None:
            left = key.requests_per_minute - state.requests
            headers += [
                (b"x-ratelimit-limit-requests", b"%d" % key.requests_per_minute),
                (b"x-ratelimit-remaining-requests", b"%d" % (left if left > 0 else 0)),
            ]
        if key.tokens_per_minute is not None:
            left = key.tokens_per_minute - state.tokens
            headers += [
                (b"x-ratelimit-limit-tokens", b"%d" % key.tokens_per_minute),
                (b"x-ratelimit-remaining-tokens", b"%d" % (left if left > 0 else 0)),
            ]
        return headers

    def forget(self, key_id: str) -> None:
        """A deleted key's counts go (its requests in flight still release theirs)."""
        self._states.pop(key_id, None)


def _seconds_left(state: KeyState, now: float) -> int:
    left = int(state.started + WINDOW_SECONDS - now) + 1  # rounded up, at least 1
    return left if left < WINDOW_SECONDS else int(WINDOW_SECONDS)

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
import math
import time
from dataclasses import dataclass

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


@dataclass
class _Window:
    started: float
    requests: int = 0
    tokens: int = 0


class KeyLimits:
    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._windows: dict[str, _Window] = {}
        self._freed: dict[str, asyncio.Event] = {}

    def in_flight(self, key_id: str) -> int:
        return self._in_flight.get(key_id, 0)

    def in_flight_by_key(self) -> list[tuple[str, int]]:
        return list(self._in_flight.items())

    def admit(self, key: ApiKey) -> None:
        """Count one more request of `key` in flight (`release` it once done); RateLimited
        when a limit says no, counting nothing."""
        now = time.monotonic()
        window = self._window(key.id, now)
        if key.max_concurrency is not None and self.in_flight(key.id) >= key.max_concurrency:
            raise RateLimited(
                f"key {key.name!r} has {key.max_concurrency} requests in flight, its "
                "max_concurrency: retry when one has ended",
                1,
                self.headers(key, window),
            )
        retry = _seconds_left(window, now)
        if key.requests_per_minute is not None and window.requests >= key.requests_per_minute:
            raise RateLimited(
                f"key {key.name!r} reached its {key.requests_per_minute} requests per minute: "
                f"retry in {retry} s",
                retry,
                self.headers(key, window),
            )
        if key.tokens_per_minute is not None and window.tokens >= key.tokens_per_minute:
            raise RateLimited(
                f"key {key.name!r} reached its {key.tokens_per_minute} tokens per minute: "
                f"retry in {retry} s",
                retry,
                self.headers(key, window),
            )
        window.requests += 1
        self._in_flight[key.id] = self.in_flight(key.id) + 1

    def release(self, key_id: str, tokens: int) -> None:
        """The request ended, having used `tokens` (prompt and completion)."""
        remaining = self._in_flight[key_id] - 1
        if remaining:
            self._in_flight[key_id] = remaining
        else:
            del self._in_flight[key_id]
        if tokens:
            window = self._windows.get(key_id)
            if window is not None:
                window.tokens += tokens
        freed = self._freed.pop(key_id, None)
        if freed is not None:
            freed.set()

    async def wait_turn(self, key: ApiKey) -> None:
        """`admit`, waiting for room instead of refusing (a batch line): for a request in
        flight to end, or for the minute to pass."""
        while True:
            try:
                self.admit(key)
                return
            except RateLimited as limited:
                if key.max_concurrency is not None and self.in_flight(key.id) >= (
                    key.max_concurrency
                ):
                    await self._freed.setdefault(key.id, asyncio.Event()).wait()
                else:
                    await asyncio.sleep(limited.retry_after_seconds)

    def headers(self, key: ApiKey, window: _Window | None = None) -> list[tuple[bytes, bytes]]:
        """OpenAI's x-ratelimit-* headers for the key's minute limits (none without one)."""
        if not key.rate_limited:
            return []
        now = time.monotonic()
        window = window or self._window(key.id, now)
        reset = f"{_seconds_left(window, now)}s".encode()
        headers = []
        if key.requests_per_minute is not None:
            left = max(key.requests_per_minute - window.requests, 0)
            headers += [
                (b"x-ratelimit-limit-requests", str(key.requests_per_minute).encode()),
                (b"x-ratelimit-remaining-requests", str(left).encode()),
                (b"x-ratelimit-reset-requests", reset),
            ]
        if key.tokens_per_minute is not None:
            left = max(key.tokens_per_minute - window.tokens, 0)
            headers += [
                (b"x-ratelimit-limit-tokens", str(key.tokens_per_minute).encode()),
                (b"x-ratelimit-remaining-tokens", str(left).encode()),
                (b"x-ratelimit-reset-tokens", reset),
            ]
        return headers

    def forget(self, key_id: str) -> None:
        """A deleted key's minute goes (its requests in flight still release)."""
        self._windows.pop(key_id, None)

    def _window(self, key_id: str, now: float) -> _Window:
        window = self._windows.get(key_id)
        if window is None or now - window.started >= WINDOW_SECONDS:
            window = self._windows[key_id] = _Window(now)
        return window


def _seconds_left(window: _Window, now: float) -> int:
    return max(1, math.ceil(window.started + WINDOW_SECONDS - now))

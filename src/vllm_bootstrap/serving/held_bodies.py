"""The memory that /v1 request bodies hold, bounded across all requests at once.

/v1 reads each body whole to route it by `model`, and keeps it until vLLM has answered: for
seconds while a model answers, for minutes while a profile loads. One body is bounded by
VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES; this bounds them all together, so that requests
queued for a slow load (512 may wait, each up to the routed limit) cannot take the control
plane to the OOM killer. A body is counted from its first byte read (its declared
Content-Length at once, when it has one) until its request is done.
"""

from __future__ import annotations

from vllm_bootstrap.serving.errors import BodiesOverLimit


class HeldBodies:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0  # bytes of /v1 bodies held right now


class Holding:
    """One request's share of the bound: `charge` adds bytes to it, or raises
    BodiesOverLimit (adding nothing) when they would not fit; `release` gives all of it
    back. A class, not a context manager: this runs for every /v1 request."""

    __slots__ = ("_bodies", "_held")

    def __init__(self, bodies: HeldBodies) -> None:
        self._bodies = bodies
        self._held = 0

    def charge(self, size: int) -> None:
        bodies = self._bodies
        if bodies.total + size > bodies.limit:
            raise BodiesOverLimit(bodies.limit)
        bodies.total += size
        self._held += size

    def release(self) -> None:
        self._bodies.total -= self._held
        self._held = 0

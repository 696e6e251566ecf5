"""The memory that /v1 request bodies hold, bounded across all requests at once.

/v1 reads each body whole to route it by `model`, and keeps it until vLLM has answered: for
seconds while a model answers, for minutes while a profile loads. One body is bounded by
VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES; this bounds them all together, so that requests
queued for a slow load (512 may wait, each up to the routed limit) cannot take the control
plane to the OOM killer. A body is counted from its first byte read (its declared
Content-Length at once, when it has one) until its request is done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from vllm_bootstrap.serving.errors import BodiesOverLimit

Charge = Callable[[int], None]


class HeldBodies:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0  # bytes of /v1 bodies held right now

    @contextlib.contextmanager
    def holding(self) -> Iterator[Charge]:
        """A charge for one request's body: each call adds bytes to it, or raises
        BodiesOverLimit (adding nothing) when they would not fit. All of it is given back
        when the block ends."""
        held = 0

        def charge(size: int) -> None:
            nonlocal held
            if self.total + size > self.limit:
                raise BodiesOverLimit(self.limit, self.total)
            self.total += size
            held += size

        try:
            yield charge
        finally:
            self.total -= held

"""A scoped key's requests to /v1 and /proxy: admitted by its limits, metered, counted.

Only a scoped key's requests come this way (the dispatcher sends the access key's past it).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from vllm_bootstrap.keys.limits import KeyLimits
from vllm_bootstrap.keys.metering import Meter
from vllm_bootstrap.keys.record import KEY_IN_SCOPE, METER_IN_SCOPE
from vllm_bootstrap.keys.usage import UsageBook


class KeyedTraffic:
    def __init__(self, app: ASGIApp, limits: KeyLimits, usage: UsageBook) -> None:
        self.app = app
        self._limits = limits
        self._usage = usage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = scope[KEY_IN_SCOPE]
        state = self._limits.admit(key)  # RateLimited: a 429 from the error edge outside
        meter = scope[METER_IN_SCOPE] = Meter(self._limits.headers(key, state))
        try:
            await self.app(scope, receive, send)  # the forwarder feeds the meter
        finally:
            self._limits.release(state, meter.tokens)
            failed = meter.status is None or meter.status >= 400 or not meter.complete
            self._usage.count(
                key.id, meter.model, meter.prompt_tokens, meter.completion_tokens, failed
            )

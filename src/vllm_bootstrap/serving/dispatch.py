"""The data plane's front door: /proxy/... and /v1/... are served here, the rest by the API.

Plain ASGI in front of FastAPI, so a proxied request costs a prefix check and a dict lookup
before the forwarding itself: no routing tables, no request models, no state-store query.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from vllm_bootstrap.keys import KEY_IN_SCOPE
from vllm_bootstrap.serving.openai import OPENAI_PREFIX
from vllm_bootstrap.serving.proxy import PROXY_PREFIX

# Served by the batch API; /v1/filesX is not theirs, so each is matched as a whole segment.
BATCH_PREFIXES = ("/v1/files/", "/v1/batches/")


@dataclass(frozen=True)
class DataPlane:
    """One data-plane route's app, and the same app for a scoped key's requests (with the
    key's limits and metering around it): the access key's requests do not pay for them."""

    app: ASGIApp
    keyed: ASGIApp


class ServingDispatcher:
    def __init__(self, api: ASGIApp, proxy: DataPlane, openai: DataPlane, batches: ASGIApp) -> None:
        self.api = api
        self.proxy = proxy
        self.openai = openai
        self.batches = batches  # OpenAI's Files and Batches API

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(PROXY_PREFIX):
                plane = self.proxy
                await (plane.keyed if KEY_IN_SCOPE in scope else plane.app)(scope, receive, send)
                return
            if path.startswith(BATCH_PREFIXES) or path in ("/v1/files", "/v1/batches"):
                await self.batches(scope, receive, send)
                return
            if path.startswith(OPENAI_PREFIX):
                plane = self.openai
                await (plane.keyed if KEY_IN_SCOPE in scope else plane.app)(scope, receive, send)
                return
        await self.api(scope, receive, send)

"""/v1/...: one OpenAI-compatible endpoint for every ready launch, routed by `model`.

`GET /v1/models` lists the served models of all ready launches and the model profiles that
load on demand; every other request is read whole (it is JSON), routed by its `model` to a
ready replica (balancer.py) and forwarded as it came. A request for a profile that no ready
launch serves waits while the swapper loads it; the client sees nothing until then (a
stream starts once the model answers).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from vllm_bootstrap.asgi import BodyTooLarge, ClientGone, read_body, send_json
from vllm_bootstrap.launches.record import Launch
from vllm_bootstrap.serving.balancer import ModelBalancer, NoReadyReplica, UnknownModel
from vllm_bootstrap.serving.errors import openai_error
from vllm_bootstrap.serving.forward import Forwarder

OPENAI_PREFIX = "/v1/"


class OnDemand(Protocol):
    """Loads model profiles (models/swapper.py); serve() raises an OnDemandRefusal."""

    def is_profile(self, name: str) -> bool: ...

    async def serve(self, name: str, reason: str) -> None: ...

    def models_listing(self) -> dict[str, Any]: ...


class OnDemandRefusal(Exception):
    """Why a waiting request is answered without its model: the status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class OpenAIRouter:
    def __init__(
        self,
        balancer: ModelBalancer,
        forwarder: Forwarder,
        max_body_bytes: int,
        on_demand: OnDemand | None = None,
    ) -> None:
        self._balancer = balancer
        self._forwarder = forwarder
        self._max_body_bytes = max_body_bytes
        self._on_demand = on_demand

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET" and scope["path"] == "/v1/models":
            listing = (
                self._on_demand.models_listing()
                if self._on_demand is not None
                else self._balancer.models_listing()
            )
            await send_json(send, 200, listing)
            return
        try:
            body = await read_body(receive, self._max_body_bytes)
        except ClientGone:
            return
        except BodyTooLarge:
            message = (
                f"request body over {self._max_body_bytes} bytes, the limit for requests routed "
                "by model (VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES); /proxy/{launch_id}/... has none"
            )
            await self._refuse(send, 413, message, "request_too_large")
            return
        model = model_of(body)
        if model is None:
            await self._refuse(
                send,
                400,
                "no `model` found in the JSON body: /v1 routes requests by it; use "
                "/proxy/{launch_id}/v1/... for requests without one",
                "missing_model",
            )
            return
        try:
            launch = self._balancer.choose(model)
        except (UnknownModel, NoReadyReplica) as missing:
            if self._on_demand is None or not self._on_demand.is_profile(model):
                await self._no_launch(send, model, missing)
                return
            launch = await self._load_on_demand(model, receive, send)
            if launch is None:
                return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        self._balancer.begin_request(launch)  # not a context manager: this is the hot path
        try:
            await self._forwarder.forward(
                scope, receive, send, launch, raw_path, body, openai_error, "v1", model
            )
        finally:
            self._balancer.end_request(launch)

    async def _load_on_demand(self, model: str, receive: Receive, send: Send) -> Launch | None:
        """Wait for the profile's launch; None once the request was answered (or the client
        left: the load goes on for whoever else wants it)."""
        assert self._on_demand is not None
        loaded = asyncio.ensure_future(self._on_demand.serve(model, "a /v1 request"))
        # The body is in: the next message from the client can only be its disconnect.
        gone = asyncio.ensure_future(receive())
        try:
            await asyncio.wait({loaded, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (loaded, gone):
                task.cancel()
        if not loaded.done() or loaded.cancelled():
            return None
        try:
            loaded.result()
            return self._balancer.choose(model)
        except OnDemandRefusal as refusal:
            retry = refusal.status in (429, 503)
            await self._refuse(send, refusal.status, refusal.message, refusal.code, retry)
        except (UnknownModel, NoReadyReplica):  # stopped again in the same moment
            message = f"The model `{model}` was unloaded as it became ready; retry"
            await self._refuse(send, 503, message, "model_loading", retry_after=True)
        return None

    async def _no_launch(self, send: Send, model: str, missing: LookupError) -> None:
        if isinstance(missing, NoReadyReplica):
            message = f"The model `{model}` is still loading; retry in a little while"
            await self._refuse(send, 503, message, "model_loading", retry_after=True)
            return
        served = ", ".join(self._balancer.ready_models()) or "none"
        message = f"The model `{model}` does not exist. Served models: {served}"
        await self._refuse(send, 404, message, "model_not_found")

    async def _refuse(
        self, send: Send, status: int, message: str, code: str, retry_after: bool = False
    ) -> None:
        """Answer without reaching vLLM, counted by its error code."""
        if self._forwarder.observer is not None:
            self._forwarder.observer.refused("v1", code)
        await openai_error(send, status, message, code, retry_after)


def model_of(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # "[[[[..." nests too deep
        return None
    model = payload.get("model") if isinstance(payload, dict) else None
    return model if isinstance(model, str) else None

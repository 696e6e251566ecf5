"""/v1/...: one OpenAI-compatible endpoint for every ready launch, routed by `model`.

`GET /v1/models` lists the served models of all ready launches; every other request is
read whole (it is JSON), routed by its `model` to a ready replica (balancer.py) and
forwarded as it came.
"""

from __future__ import annotations

import json

from starlette.types import Receive, Scope, Send

from vllm_bootstrap.asgi import BodyTooLarge, ClientGone, read_body, send_json
from vllm_bootstrap.serving.balancer import ModelBalancer, NoReadyReplica, UnknownModel
from vllm_bootstrap.serving.errors import openai_error
from vllm_bootstrap.serving.forward import Forwarder

OPENAI_PREFIX = "/v1/"


class OpenAIRouter:
    def __init__(self, balancer: ModelBalancer, forwarder: Forwarder, max_body_bytes: int) -> None:
        self._balancer = balancer
        self._forwarder = forwarder
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET" and scope["path"] == "/v1/models":
            await send_json(send, 200, self._balancer.models_listing())
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
            await openai_error(send, 413, message, "request_too_large")
            return
        model = model_of(body)
        if model is None:
            await openai_error(
                send,
                400,
                "no `model` found in the JSON body: /v1 routes requests by it; use "
                "/proxy/{launch_id}/v1/... for requests without one",
                "missing_model",
            )
            return
        try:
            launch = self._balancer.choose(model)
        except UnknownModel:
            served = ", ".join(self._balancer.ready_models()) or "none"
            message = f"The model `{model}` does not exist. Served models: {served}"
            await openai_error(send, 404, message, "model_not_found")
            return
        except NoReadyReplica:
            message = f"The model `{model}` is still loading; retry in a little while"
            await openai_error(send, 503, message, "model_loading", retry_after=True)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        self._balancer.begin_request(launch)  # not a context manager: this is the hot path
        try:
            await self._forwarder.forward(
                scope, receive, send, launch, raw_path, body, openai_error
            )
        finally:
            self._balancer.end_request(launch)


def model_of(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # "[[[[..." nests too deep
        return None
    model = payload.get("model") if isinstance(payload, dict) else None
    return model if isinstance(model, str) else None

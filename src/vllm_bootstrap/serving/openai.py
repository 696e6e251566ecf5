"""/v1/...: one OpenAI-compatible endpoint for every ready launch, routed by `model`.

`GET /v1/models` lists the served models of all ready launches and the model profiles that
load on demand; every other request is read whole (it is JSON), routed by its `model` to a
ready replica (router.py) and forwarded as it came. A request for a profile that no ready
launch serves waits while the swapper loads it; the client sees nothing until then (a
stream starts once the model answers).

A body declared over the routed limit is refused before a byte of it is read (413), and
every body counts against the bound on all of them held at once (held_bodies.py) from its
first byte until its request is done.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from vllm_bootstrap.asgi import BodyTooLarge, ClientGone, header, read_body, send_json
from vllm_bootstrap.keys import METER_IN_SCOPE, ApiKey, as_flag, key_of
from vllm_bootstrap.launches import Launch
from vllm_bootstrap.serving.errors import (
    NoModelInBody,
    NoReadyReplica,
    RoutedBodyTooLarge,
    UnknownModel,
)
from vllm_bootstrap.serving.forward import Forwarder
from vllm_bootstrap.serving.held_bodies import HeldBodies, Holding
from vllm_bootstrap.serving.keyed import as_the_keys, at_the_keys_priority, served_to
from vllm_bootstrap.serving.priority import PriorityTurns
from vllm_bootstrap.serving.router import ModelRouter

logger = logging.getLogger("vllm_bootstrap.serving")
OPENAI_PREFIX = "/v1/"


class OnDemand(Protocol):
    """Loads model profiles (models/); serve() raises the domain error of a refusal."""

    def is_profile(self, name: str) -> bool: ...

    async def serve(self, name: str, reason: str, payer: str | None = None) -> None: ...

    def load(self, name: str, reason: str) -> None: ...

    def progress(self, name: str) -> str: ...

    def models_listing(self) -> dict[str, Any]: ...


class OpenAIRouter:
    def __init__(
        self,
        router: ModelRouter,
        forwarder: Forwarder,
        max_body_bytes: int,
        on_demand: OnDemand,
        held_bodies: HeldBodies,
        load_hold_seconds: float | None = None,
        load_keepalive_seconds: float = 10.0,
    ) -> None:
        self._router = router
        self._forwarder = forwarder
        self._max_body_bytes = max_body_bytes
        self._on_demand = on_demand
        self._held_bodies = held_bodies
        self._turns = PriorityTurns()
        self._load_hold_seconds = load_hold_seconds
        self._load_keepalive_seconds = load_keepalive_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET" and scope["path"] == "/v1/models":
            key = key_of(scope)
            await send_json(send, 200, self._listing(key))
            if key is not None:
                scope[METER_IN_SCOPE].answered(200)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self._max_body_bytes:
            raise RoutedBodyTooLarge(self._max_body_bytes)
        holding = Holding(self._held_bodies)
        try:
            if declared is not None:
                holding.charge(declared)  # refused before reading when it cannot be held
            try:
                charge = None if declared is not None else holding.charge
                body = await read_body(receive, self._max_body_bytes, charge)
            except ClientGone:
                return
            except BodyTooLarge:
                raise RoutedBodyTooLarge(self._max_body_bytes) from None
            await self._route(scope, receive, send, body)
        finally:
            holding.release()

    async def _route(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        payload = json_object(body)
        model = payload.get("model") if payload is not None else None
        if payload is None or not isinstance(model, str):
            raise NoModelInBody
        key = key_of(scope)
        if key is not None:
            body = as_the_keys(key, scope, scope["path"], payload, body, self._router.ready_models)
        try:
            launch = self._router.choose(model)
        except (UnknownModel, NoReadyReplica) as missing:
            if not self._on_demand.is_profile(model):
                raise self._for_key(missing, key) from None
            if as_flag(payload.get("stream")):
                await self._stream_after_load(scope, receive, send, model, key, body)
                return
            # Anything else is held at most load_hold_seconds: a front proxy would cut it.
            hold = self._load_hold_seconds
            launch = await self._load_on_demand_for(model, receive, key, hold)
            if launch is None:
                return
        if key is not None:
            scope[METER_IN_SCOPE].model = model  # a served name: a bounded label
            body = at_the_keys_priority(key, launch, body)
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        await self._forwarder.forward(scope, receive, send, launch, raw_path, body, "v1", model)

    async def _stream_after_load(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        model: str,
        key: ApiKey | None,
        body: bytes,
    ) -> None:
        """A stream for a profile that must load first: its head at once, then an SSE
        comment every load_keepalive_seconds (front proxies cut silent connections; SSE
        readers skip comments), then the model's own stream; a failed load is one error
        event in OpenAI's streamed shape."""
        loading = asyncio.ensure_future(self._load_on_demand_for(model, receive, key, None))
        head_sent = False
        try:
            # A refusal that comes at once (the queue is full, a load failed just now) is
            # still an HTTP error; a real load sends the head within HEAD_WAIT_SECONDS.
            wait = min(HEAD_WAIT_SECONDS, self._load_keepalive_seconds)
            while not (await asyncio.wait({loading}, timeout=wait))[0]:
                if not head_sent:
                    await send(_EVENT_STREAM_START)
                    head_sent = True
                note = f": loading {model}, {self._on_demand.progress(model)}\n\n"
                await send({"type": "http.response.body", "body": note.encode(), "more_body": True})
                wait = self._load_keepalive_seconds
            launch = loading.result()
        except Exception as failure:
            if not head_sent:
                raise
            await send(_stream_error(failure))  # the head is sent: the error ends the stream
            return
        finally:
            loading.cancel()
        if launch is None:
            return  # the client left
        if key is not None:
            scope[METER_IN_SCOPE].model = model
            body = at_the_keys_priority(key, launch, body)
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        await self._forwarder.forward(
            scope, receive, send, launch, raw_path, body, "v1", model, head_sent=head_sent
        )

    def _for_key(self, missing: Exception, key: ApiKey | None) -> Exception:
        """An unknown model's error names the served models the key may see, no others."""
        if key is None or not isinstance(missing, UnknownModel) or key.models is None:
            return missing
        return UnknownModel(missing.model, served_to(key, self._router.ready_models()))

    def _listing(self, key: ApiKey | None) -> dict[str, Any]:
        listing = self._on_demand.models_listing()
        if key is not None and key.models is not None:
            listing["data"] = [entry for entry in listing["data"] if key.allows_model(entry["id"])]
        return listing

    async def _load_on_demand_for(
        self, model: str, receive: Receive, key: ApiKey | None, hold: float | None
    ) -> Launch | None:
        """`_load_on_demand`; a scoped key reads a refusal's brief form (`brief`), which
        names nothing else on the box."""
        try:
            return await self._load_on_demand(model, receive, key, hold)
        except Exception as refusal:
            brief = getattr(refusal, "brief", None)
            if key is not None and isinstance(brief, str):
                refusal.args = (brief,)
            raise

    async def _load_on_demand(
        self, model: str, receive: Receive, key: ApiKey | None, hold: float | None
    ) -> Launch | None:
        """Wait for the profile's launch; None when the client left (the load goes on for
        whoever else wants it). A refusal is raised as the loader raised it. The requests
        that waited go on by their keys' priority, lowest first. Past `hold` seconds, a 503
        telling the client to retry (None: as long as the load takes)."""
        payer = key.id if key is not None else None
        loaded = asyncio.ensure_future(self._on_demand.serve(model, "a /v1 request", payer))
        # The body is in: the next message from the client can only be its disconnect.
        gone = asyncio.ensure_future(receive())
        try:
            await asyncio.wait({loaded, gone}, timeout=hold, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (loaded, gone):
                task.cancel()
        if not loaded.done() and not gone.done():
            # Held long enough: a front proxy would cut a silent connection (Runpod's after
            # 100 s). The load goes on, and the client is told to come back.
            self._on_demand.load(model, "a /v1 request told to retry while it loads")
            raise NoReadyReplica(model, "is still loading; retry shortly (the load goes on)")
        if not loaded.done() or loaded.cancelled():
            return None
        loaded.result()
        await self._turns.turn(key.priority if key is not None else 0)
        try:
            return self._router.choose(model)
        except (UnknownModel, NoReadyReplica):  # stopped again in the same moment
            raise NoReadyReplica(model, "was unloaded as it became ready; retry") from None


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length (the server already refused a malformed one), if any."""
    value = header(scope, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


# A stream that waits for a load gets its head this soon (or at its first keep-alive).
HEAD_WAIT_SECONDS = 0.5
_EVENT_STREAM_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
}


def _stream_error(failure: Exception) -> dict[str, object]:
    """The last message of a stream whose model could not be loaded: OpenAI's streamed
    error event, then the end. Our own errors say why in words meant for clients; anything
    else (a bug) is logged and told as no more than that."""
    message = str(failure)
    if not type(failure).__module__.startswith("vllm_bootstrap."):
        logger.error("a stream's load failed unexpectedly", exc_info=failure)
        message = "the model could not be loaded (the server's log says why)"
    error = {
        "message": message,
        "type": "server_error",
        "param": None,
        "code": getattr(failure, "code", None) or "model_load_failed",
    }
    event = b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
    return {"type": "http.response.body", "body": event, "more_body": False}


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object; None when it is not one."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # "[[[[..." nests too deep
        return None
    return payload if isinstance(payload, dict) else None

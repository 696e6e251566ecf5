"""Forwarding one request to one launch's vLLM: the hot path of every inference request.

Bodies stream both ways. A small request body that arrives in one piece is forwarded as
bytes; anything larger is streamed as it arrives. Response bytes go to the client as soon as
vLLM writes them, so server-sent events are never held back. When the client goes away, the
handler is cancelled at once, which closes the upstream connection and makes vLLM abort the
generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

from starlette.types import Receive, Scope, Send

from vllm_bootstrap.asgi import ClientGone, body_or_stream
from vllm_bootstrap.keys import KEY_IN_SCOPE, METER_IN_SCOPE, Meter
from vllm_bootstrap.launches import Launch
from vllm_bootstrap.serving.client_watch import ClientWatch
from vllm_bootstrap.serving.errors import UpstreamUnreachable
from vllm_bootstrap.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from vllm_bootstrap.usage import UsageLedger

# Connection-level headers (RFC 9110 section 7.6.1) that must not cross a proxy, plus the
# ones we set ourselves: Host (the upstream's) and, on responses, Server and Date (ours).
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Host, Content-Length and the framing are the upstream client's to write; Expect was
# already answered by our own server.
_DROP_FROM_REQUEST = _HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_DROP_WITH_KEY = _DROP_FROM_REQUEST | {b"authorization"}
_DROP_FROM_RESPONSE = _HOP_BY_HOP | {b"server", b"date"}
# A 204 or 304 has no body, and a Content-Length on it would make our server expect one.
_BODILESS = frozenset({204, 304})
_DROP_FROM_BODILESS = _DROP_FROM_RESPONSE | {b"content-length"}
WHOLE_BODY_MAX_BYTES = 256 * 1024
ERROR_EVENT_MAX_BYTES = 64 * 1024
logger = logging.getLogger("vllm_bootstrap.proxy")
# Tells the client which launch answered: replicas are otherwise indistinguishable.
LAUNCH_ID_HEADER = b"x-vllm-bootstrap-launch-id"


# What a forwarded request is counted as when no upstream status was relayed.
CLIENT_GONE_STATUS = 499
UPSTREAM_FAILED_STATUS = 502


class Forwarder:
    """Sends requests to launches, and is the only writer of the usage ledger: every request
    it sends is in flight there until answered, then counted."""

    def __init__(self, pool: UpstreamPool, ledger: UsageLedger, access_key: str | None) -> None:
        self._pool = pool
        self._ledger = ledger
        # With an access key set, the request got here by carrying it in Authorization:
        # that header is the control plane's credential and never reaches vLLM.
        self._dropped_request_headers = _DROP_WITH_KEY if access_key else _DROP_FROM_REQUEST

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        launch: Launch,
        path: bytes,
        body: bytes | None,
        route: str = "proxy",
        model: str | None = None,
        head_sent: bool = False,
    ) -> None:
        """Relay the client's request to `launch` at `path` and the answer back; `body` when
        already read, else from `receive`. UpstreamUnreachable when vLLM did not answer
        before anything was sent. Counted as `route` and `model` (else the launch's model)."""
        started = time.perf_counter()
        status = CLIENT_GONE_STATUS
        launch_id = launch.launch_id
        # Not a context manager: this is the hot path. A POST is inference someone waits for.
        self._ledger.begin(launch_id, live=scope["method"] == "POST")
        try:
            status = await self._exchange(scope, receive, send, launch, path, body, head_sent)
        except UpstreamUnreachable:
            status = UPSTREAM_FAILED_STATUS
            raise
        finally:
            self._ended(launch_id, route, model or launch.model, status, started)

    @contextlib.asynccontextmanager
    async def request(
        self,
        launch: Launch,
        route: str,
        model: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        live: bool = False,
    ) -> AsyncIterator[UpstreamResponse]:
        """POST a request of our own (a batch line) to `launch`; the response, to be read
        inside the block. Counted like a client's request, with its status once the block
        read it without error (else as 502, as a broken-off response is, or 499 when we gave
        it up: cancelled, timed out or taken back); UpstreamError as the pool raises it.
        `live`: batch lines make way for it as for a client's (an urgent batch's line)."""
        started = time.perf_counter()
        status = UPSTREAM_FAILED_STATUS
        self._ledger.begin(launch.launch_id, live)
        try:
            response = await self._pool.request(
                launch.local_host, launch.port, b"POST", target, headers, body
            )
            async with response:
                yield response
            status = response.status
        except asyncio.CancelledError:
            status = CLIENT_GONE_STATUS
            raise
        finally:
            self._ended(launch.launch_id, route, model, status, started)

    def _ended(self, launch_id: str, route: str, model: str, status: int, started: float) -> None:
        self._ledger.record(route, model, launch_id, status, time.perf_counter() - started)
        self._ledger.end(launch_id)

    async def _exchange(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        launch: Launch,
        path: bytes,
        body: bytes | None,
        head_sent: bool = False,
    ) -> int:
        """The forwarding itself; the status the client got (499: it went away first).
        `head_sent`: the client has its response's head already (a stream that waited for a
        load): only the body is relayed, and an error answer becomes an error event."""
        query: bytes = scope.get("query_string", b"")
        target = path + b"?" + query if query else path
        try:
            data = body if body is not None else await body_or_stream(receive)
        except ClientGone:
            return CLIENT_GONE_STATUS
        client_gone = ClientWatch(receive)
        if isinstance(data, bytes):
            client_gone.arm()  # the request body is in: the next message is a disconnect
        response_started = head_sent  # after it, an error can only cut the response
        try:
            upstream = await self._pool.request(
                launch.local_host,
                launch.port,
                scope["method"].encode(),
                target,
                self._upstream_headers(scope),
                data,
            )
            async with upstream:
                client_gone.arm()
                meter: Meter | None = scope.get(METER_IN_SCOPE)
                start = _response_start(upstream, launch, meter)
                if head_sent and upstream.status != 200:
                    await send(await _error_event(upstream))
                    return upstream.status
                if not head_sent:
                    await send(start)
                response_started = True
                if meter is None:
                    await _relay_body(upstream, send)
                else:
                    await _relay_metered(upstream, send, meter)
                return upstream.status
        except asyncio.CancelledError:
            if not client_gone.cancelled_us():
                raise
            return CLIENT_GONE_STATUS
        except ClientGone:
            return CLIENT_GONE_STATUS
        except UpstreamError as exc:
            if not response_started:
                raise UpstreamUnreachable(launch.launch_id, launch.port, exc) from None
            # Returning with the response unfinished makes uvicorn cut the client's
            # connection, so the client sees a broken response, never a complete one.
            logger.warning("launch %s: vLLM broke off a response: %s", launch.launch_id, exc)
            return UPSTREAM_FAILED_STATUS
        finally:
            client_gone.stop()

    def _upstream_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        # A scoped key is a credential too, also on a server without an access key.
        dropped = _DROP_WITH_KEY if KEY_IN_SCOPE in scope else self._dropped_request_headers
        return end_to_end(scope["headers"], dropped)


def end_to_end(
    headers: list[tuple[bytes, bytes]], dropped: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    """The headers that may cross the proxy: not hop-by-hop, not in `dropped`, and not named
    in a Connection header (RFC 9110 section 7.6.1: those are for this hop only)."""
    names = [name.lower() for name, _ in headers]  # once each: this runs for every request
    if b"connection" in names:
        for name, (_, value) in zip(names, headers, strict=True):
            if name == b"connection":
                dropped = dropped | {token.strip().lower() for token in value.split(b",")}
    return [pair for name, pair in zip(names, headers, strict=True) if name not in dropped]


def _response_start(
    upstream: UpstreamResponse, launch: Launch, meter: Meter | None
) -> dict[str, object]:
    dropped = _DROP_FROM_BODILESS if upstream.status in _BODILESS else _DROP_FROM_RESPONSE
    headers = end_to_end(upstream.headers, dropped)
    headers.append((LAUNCH_ID_HEADER, launch.launch_id.encode()))
    if meter is not None:  # a scoped key's request: its usage is read, its limits told
        meter.started(upstream.status, headers)
        headers += meter.headers
        if meter.strip_usage:  # the body may come shorter than vLLM said
            headers = [pair for pair in headers if pair[0].lower() != b"content-length"]
    return {"type": "http.response.start", "status": upstream.status, "headers": headers}


async def _relay_body(upstream: UpstreamResponse, send: Send) -> None:
    """Relay the response body chunk by chunk as vLLM writes it.

    A small body of known length (most non-streaming answers) goes out in one message.
    """
    length = upstream.content_length
    if length is not None and length <= WHOLE_BODY_MAX_BYTES:
        await send({"type": "http.response.body", "body": await upstream.read()})
        return
    async for chunk in upstream.chunks():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _relay_metered(upstream: UpstreamResponse, send: Send, meter: Meter) -> None:
    """`_relay_body`, with the meter reading each part (and keeping back what it must)."""
    length = upstream.content_length
    if length is not None and length <= WHOLE_BODY_MAX_BYTES:
        body = meter.whole(await upstream.read())
        await send({"type": "http.response.body", "body": body})
        return
    async for chunk in upstream.chunks():
        if kept := meter.part(chunk):
            await send({"type": "http.response.body", "body": kept, "more_body": True})
    await send({"type": "http.response.body", "body": meter.end(), "more_body": False})


async def _error_event(upstream: UpstreamResponse) -> dict[str, object]:
    """vLLM's error answer to a stream whose head was already sent, as the stream's last
    event (OpenAI's streamed error shape)."""
    body = await upstream.read_at_most(ERROR_EVENT_MAX_BYTES) or b""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        message = body.decode(errors="replace")[:1000] or f"vLLM answered {upstream.status}"
        error = {"message": message, "type": "server_error", "param": None, "code": None}
    event = b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
    return {"type": "http.response.body", "body": event, "more_body": False}

"""The reverse proxy: the hot path of every inference request.

Plain ASGI in front of FastAPI, so a proxied request costs a path check, a dict lookup and
the forwarding itself: no routing tables, no request models, no state-store query. The HTTP
client is our own pooled HTTP/1.1 client (upstream.py), chosen by measurement
(bench/http_clients.py, bench/proxy.py).

Bodies stream both ways. A small request body that arrives in one piece is forwarded as
bytes; anything larger is streamed as it arrives. Response bytes go to the client as soon as
vLLM writes them, so server-sent events are never held back. When the client goes away, the
handler is cancelled at once, which closes the upstream connection and makes vLLM abort the
generation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vllm_bootstrap.launch import Launch, LaunchState
from vllm_bootstrap.ports import probe_host
from vllm_bootstrap.responses import send_json
from vllm_bootstrap.routing import ModelRouter, NoReadyReplica, UnknownModel
from vllm_bootstrap.supervisor import LaunchNotFound, Supervisor
from vllm_bootstrap.upstream import UpstreamError, UpstreamPool, UpstreamResponse

PROXY_PREFIX = "/proxy/"
OPENAI_PREFIX = "/v1/"
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
_DROP_FROM_RESPONSE = _HOP_BY_HOP | {b"server", b"date"}
RETRY_AFTER_SECONDS = "10"
CLIENT_WATCH_DELAY_SECONDS = 0.05
WHOLE_BODY_MAX_BYTES = 256 * 1024
# Tells the client which launch answered: replicas are otherwise indistinguishable.
LAUNCH_ID_HEADER = b"x-vllm-bootstrap-launch-id"

ErrorResponder = Callable[[Send, int, str, str], Awaitable[None]]


class UpstreamBroke(RuntimeError):
    """vLLM failed after the response had started: the client connection is cut off."""


class Proxy:
    """Forwards requests to launches: by id under /proxy, by model under /v1."""

    def __init__(
        self,
        supervisor: Supervisor,
        pool: UpstreamPool,
        access_key: str | None,
    ) -> None:
        self._supervisor = supervisor
        self._pool = pool
        self._dropped_request_headers = (
            _DROP_FROM_REQUEST | {b"authorization"} if access_key else _DROP_FROM_REQUEST
        )
        self.router = ModelRouter(supervisor)

    # ----------------------------------------------------------------- /proxy/{id}/...

    async def handle_launch_path(self, scope: Scope, receive: Receive, send: Send) -> None:
        launch_id, _, _ = scope["path"][len(PROXY_PREFIX) :].partition("/")
        try:
            launch = self._supervisor.get(launch_id)
        except LaunchNotFound:
            await _plain_error(send, 404, f"no launch with id {launch_id!r}")
            return
        if launch.state is not LaunchState.READY:
            await _plain_error(
                send, 409, f"launch {launch_id} is {launch.state}, not ready: retry later"
            )
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        upstream_path = raw_path[len(PROXY_PREFIX) + len(launch_id) :] or b"/"
        await self._forward(scope, receive, send, launch, upstream_path, None, _plain_error)

    # ----------------------------------------------------------------- /v1/...

    async def handle_openai(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET" and scope["path"] == "/v1/models":
            await send_json(send, 200, self.router.models_listing())
            return
        try:
            body = await _read_body(receive)
        except ClientGone:
            return
        model = _model_of(body)
        if model is None:
            await _openai_error(
                send,
                400,
                "no `model` found in the JSON body: /v1 routes requests by it; use "
                "/proxy/{launch_id}/v1/... for requests without one",
                "missing_model",
            )
            return
        try:
            launch = self.router.choose(model)
        except UnknownModel:
            await _openai_error(
                send,
                404,
                f"The model `{model}` does not exist. Served models: "
                f"{', '.join(self.router.ready_models()) or 'none'}",
                "model_not_found",
            )
            return
        except NoReadyReplica:
            await _openai_error(
                send,
                503,
                f"The model `{model}` is still loading; retry in a little while",
                "model_loading",
                retry_after=True,
            )
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        with self.router.outstanding(launch):
            await self._forward(scope, receive, send, launch, raw_path, body, _openai_error)

    # ----------------------------------------------------------------- forwarding

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        launch: Launch,
        path: bytes,
        body: bytes | None,
        error: ErrorResponder,
    ) -> None:
        query: bytes = scope.get("query_string", b"")
        target = path + b"?" + query if query else path
        try:
            data = body if body is not None else await _body_or_stream(receive)
        except ClientGone:
            return
        client_gone = _ClientWatch(receive)
        if isinstance(data, bytes):
            client_gone.arm()  # the request body is in: the next message is a disconnect
        host, port = probe_host(launch.host), launch.port
        connection = None
        response_started = False
        try:
            upstream, connection = await self._pool.request(
                host,
                port,
                scope["method"].encode(),
                target,
                self._upstream_headers(scope["headers"]),
                data,
            )
            client_gone.arm()
            headers = [
                (name, value)
                for name, value in upstream.headers
                if name.lower() not in _DROP_FROM_RESPONSE
            ]
            headers.append((LAUNCH_ID_HEADER, launch.launch_id.encode()))
            await send(
                {"type": "http.response.start", "status": upstream.status, "headers": headers}
            )
            response_started = True
            await _pump(upstream, send)
            self._pool.release(host, port, connection)
            connection = None
        except asyncio.CancelledError:
            if not client_gone.cancelled_us():
                raise
        except ClientGone:
            return
        except UpstreamError as exc:
            if response_started:
                raise UpstreamBroke(
                    f"launch {launch.launch_id}: vLLM broke off the response: {exc}"
                ) from exc
            await error(
                send,
                502,
                f"launch {launch.launch_id}: vLLM at port {launch.port} did not answer "
                f"({exc}); it may have crashed or be restarting",
                "upstream_unreachable",
            )
        finally:
            client_gone.stop()
            if connection is not None:
                connection.close()  # an unfinished response: the connection cannot be reused

    def _upstream_headers(self, raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        # With an access key set, the request got here by carrying it in Authorization:
        # that header is the control plane's credential and never reaches vLLM.
        dropped = self._dropped_request_headers
        return [(name, value) for name, value in raw if name not in dropped]


class ClientGone(Exception):
    """The client disconnected before its request was complete."""


class _ClientWatch:
    """Cancels the proxying task when the client disconnects.

    Armed once the request body has been read: from then on the only message an ASGI
    server sends is `http.disconnect`. Listening takes a task, so it starts only after
    CLIENT_WATCH_DELAY_SECONDS: the many requests that finish sooner never pay for one,
    and a hang-up during a long generation still reaches vLLM within that delay.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Future[Message] | None = None
        self._disconnected = False
        self._finished = False

    def arm(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(CLIENT_WATCH_DELAY_SECONDS, self._listen)

    def _listen(self) -> None:
        if not self._finished:
            self._watcher = asyncio.ensure_future(self._receive())
            self._watcher.add_done_callback(self._on_message)

    def _on_message(self, watcher: asyncio.Future[Message]) -> None:
        if watcher.cancelled() or self._finished or self._task is None or self._task.done():
            return
        self._disconnected = True
        self._task.cancel()

    def cancelled_us(self) -> bool:
        if self._disconnected and self._task is not None:
            self._task.uncancel()
            return True
        return False

    def stop(self) -> None:
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()


async def _pump(upstream: UpstreamResponse, send: Send) -> None:
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


async def _body_or_stream(receive: Receive) -> bytes | AsyncIterator[bytes]:
    """The whole body if it came in one message (the common case), else a stream of it."""
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ClientGone
    if not first.get("more_body", False):
        return bytes(first.get("body", b""))
    return _stream_body(first, receive)


async def _stream_body(first: Message, receive: Receive) -> AsyncIterator[bytes]:
    yield first.get("body", b"")
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _model_of(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    model = payload.get("model") if isinstance(payload, dict) else None
    return model if isinstance(model, str) else None


async def _plain_error(send: Send, status: int, message: str, _code: str = "") -> None:
    """The control plane's own error shape, for /proxy (the code is for /v1's shape)."""
    await send_json(send, status, {"detail": message})


async def _openai_error(
    send: Send, status: int, message: str, code: str, retry_after: bool = False
) -> None:
    """The error shape OpenAI's clients parse into NotFoundError, APIStatusError, ..."""
    kind = {400: "invalid_request_error", 404: "invalid_request_error"}.get(status, "server_error")
    headers = [(b"retry-after", RETRY_AFTER_SECONDS.encode())] if retry_after else []
    payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    await send_json(send, status, payload, headers)


class ProxyDispatcher:
    """Sends /proxy/... and /v1/... to the proxy, everything else to the API app."""

    def __init__(self, app: ASGIApp, get_proxy: Callable[[], Proxy]) -> None:
        self.app = app
        self._get_proxy = get_proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(PROXY_PREFIX):
                await self._get_proxy().handle_launch_path(scope, receive, send)
                return
            if path.startswith(OPENAI_PREFIX):
                await self._get_proxy().handle_openai(scope, receive, send)
                return
        await self.app(scope, receive, send)

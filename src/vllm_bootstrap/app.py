"""Assembling the application: settings, state store, supervisor, routes, access key."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vllm_bootstrap import __version__
from vllm_bootstrap.auth import AccessKeyMiddleware
from vllm_bootstrap.config import Settings
from vllm_bootstrap.gpus import GPUDiscoveryError
from vllm_bootstrap.loop_lag import LoopLagMonitor
from vllm_bootstrap.proxy import Proxy, ProxyDispatcher
from vllm_bootstrap.responses import send_json
from vllm_bootstrap.routes import router
from vllm_bootstrap.store import StateStore
from vllm_bootstrap.supervisor import LaunchRefused, Supervisor
from vllm_bootstrap.upstream import UpstreamPool

logger = logging.getLogger("vllm_bootstrap")
# Control-plane request bodies are a few hundred bytes; the proxy has no limit of its own.
MAX_API_BODY_BYTES = 1024 * 1024
access_logger = logging.getLogger("vllm_bootstrap.access")


def create_app(settings: Settings) -> ASGIApp:
    """The whole server: access key check, then the proxy's paths, then the API routes."""
    api = FastAPI(
        title="vllm-bootstrap",
        version=__version__,
        summary="Launch, supervise and proxy vLLM servers on a GPU box.",
        lifespan=_lifespan(settings),
        # "/status/x/" names no launch; redirecting it to "/status/x" would show another.
        redirect_slashes=False,
    )
    api.include_router(router)
    api.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    dispatcher = ProxyDispatcher(
        AccessLog(BodySizeLimit(api, MAX_API_BODY_BYTES)), get_proxy=lambda: api.state.proxy
    )
    return AccessKeyMiddleware(dispatcher, settings.access_key)


def _lifespan(settings: Settings):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        store = StateStore(settings.state_db_path)
        # Probes open a fresh connection each time: a kept-alive socket to a child that
        # died says nothing true about its successor on the same port.
        probe_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0)
        )
        upstream_pool = UpstreamPool()
        supervisor = Supervisor(settings, store, probe_session)
        app.state.supervisor = supervisor
        app.state.proxy = Proxy(supervisor, upstream_pool, settings.access_key)
        app.state.loop_lag = LoopLagMonitor()
        app.state.loop_lag.start()
        await supervisor.recover()
        await _report_environment(supervisor)
        try:
            yield
        finally:
            await supervisor.shutdown()
            await app.state.loop_lag.stop()
            upstream_pool.close()
            await probe_session.close()
            store.close()

    return lifespan


async def _report_environment(supervisor: Supervisor) -> None:
    """Say at start-up what a launch would find, so a misconfigured box is obvious."""
    settings = supervisor.settings
    try:
        gpus = await supervisor.detect_gpus()
        logger.info("GPUs: %s", ", ".join(f"{gpu.index} ({gpu.name})" for gpu in gpus) or "none")
    except GPUDiscoveryError as exc:
        logger.warning("%s; POST /launch will answer 503 until this is fixed", exc)
    try:
        supervisor.check_vllm_available()
    except LaunchRefused as refused:
        logger.warning("%s; POST /launch will answer 503", refused.message)
    logger.info(
        "state: %s; logs: %s; vLLM ports %d-%d on %s; access key %s",
        settings.state_db_path,
        settings.log_dir,
        settings.launch_port_start,
        settings.launch_port_end,
        settings.launch_host,
        "required" if settings.access_key else "not set (every route is open)",
    )


class BodySizeLimit:
    """Reads a control-plane request's body up front and refuses one over the limit (413),
    so an oversized upload costs at most the limit in memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await send_json(
                    send,
                    413,
                    {
                        "detail": f"request body over {self.max_bytes} bytes: nothing this API "
                        "takes is that large"
                    },
                )
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


class AccessLog:
    """One log line per control-plane request that changes something (launch, stop) or
    fails; reads that succeed (status polls, log follows) are logged at debug level only.
    None per proxied request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            quiet = scope["method"] in ("GET", "HEAD") and status < 400
            level = logging.DEBUG if quiet else logging.INFO
            if access_logger.isEnabledFor(level):
                self._log(scope, status, level)

    @staticmethod
    def _log(scope: Scope, status: int, level: int) -> None:
        client = scope.get("client") or ("-", 0)
        query = scope.get("query_string", b"").decode("latin-1")
        access_logger.log(
            level,
            '%s - "%s %s%s" %d',
            client[0],
            scope["method"],
            scope["path"],
            f"?{query}" if query else "",
            status,
        )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with one readable sentence per problem, e.g. "body.gpu_ids.0: must be >= 0"."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        problems.append(str(_plain(f"{where}: {error.get('msg', 'invalid')}")))
    return JSONResponse(
        status_code=422,
        content={"detail": "; ".join(problems), "errors": _plain(exc.errors())},
    )


def _plain(errors: object) -> object:
    """Validation errors as strict JSON. The offending input is not echoed back (it may be
    megabytes, NaN or a lone surrogate), nor the context (it may hold exception objects)."""
    if isinstance(errors, dict):
        return {
            key: _plain(value)
            for key, value in errors.items()
            if key not in ("input", "ctx", "url")
        }
    if isinstance(errors, list | tuple):
        return [_plain(item) for item in errors]
    if isinstance(errors, bool | int) or errors is None:
        return errors
    if isinstance(errors, float) and math.isfinite(errors):
        return errors
    return str(errors).encode("utf-8", "replace").decode("utf-8")

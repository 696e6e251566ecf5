"""A worker box (VLLM_BOOTSTRAP_JOIN=HEAD_HOST:PORT): a Ray node that joins the head, and
GET /health for the platform's probe. It serves no API of its own: the head runs and
watches vLLM here through Ray.

Its Ray node is watched: when it ends (the head restarted, the network broke, the head
refused its token), the box says why, ends the launches it ran (their actors died with it),
and starts it again after a backoff (1 s, doubling to 30 s), so a worker rejoins a head
that comes back. Meanwhile /health answers 503. Stopping the box ends its launches too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from vllm_bootstrap.cluster.ray_node import NodeSpec, RayNode, pid_file_in
from vllm_bootstrap.config import Settings
from vllm_bootstrap.supervision import GPUDiscoveryError, query_gpus

logger = logging.getLogger("vllm_bootstrap.cluster")
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0


def worker_app(settings: Settings) -> Starlette:
    # load_settings made sure of both.
    assert settings.join is not None
    assert settings.access_key is not None
    holder: dict[str, RayNode] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        spec = NodeSpec(
            temp_dir=settings.ray_temp_dir,
            gpu_count=await _gpu_count(),
            join=settings.join,
            node_address=settings.node_address,
            extra_args=settings.ray_start_args,
        )
        log_path, pid_file = settings.log_dir / "ray.log", pid_file_in(settings.state_dir)
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        node = holder["node"] = RayNode(spec, settings.access_key, log_path, pid_file)
        await asyncio.to_thread(node.end_leftover, settings.stop_timeout_seconds)
        await asyncio.to_thread(node.end_launches, settings.stop_timeout_seconds)
        node.start()
        watcher = asyncio.create_task(_keep_running(node), name="ray-node")
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await asyncio.to_thread(node.stop, settings.stop_timeout_seconds)
            await asyncio.to_thread(node.end_launches, settings.stop_timeout_seconds)

    async def health(_request: Request) -> JSONResponse:
        node = holder.get("node")
        running = node is not None and node.running
        body = {"status": "ok" if running else "ray node down", "role": "worker"}
        return JSONResponse(body, status_code=200 if running else 503)

    return Starlette(routes=[Route("/health", health)], lifespan=lifespan)


async def _keep_running(node: RayNode) -> None:
    """Start the node again whenever it ends, saying why, after a backoff that grows while
    it keeps ending soon after its start."""
    backoff = FIRST_BACKOFF_SECONDS
    while True:
        started = time.monotonic()
        code = await asyncio.to_thread(node.wait)  # ended by a stop at shutdown, at the latest
        if time.monotonic() - started > MAX_BACKOFF_SECONDS:
            backoff = FIRST_BACKOFF_SECONDS  # it ran a good while: a new trouble
        logger.warning(
            "Ray node ended with code %s (%s); starting it again in %g s",
            code,
            node.log_tail(),
            backoff,
        )
        await asyncio.sleep(backoff)
        await asyncio.to_thread(node.stop, 0)  # reap it, and anything left of its group
        # Its launches' actors died with it: their vLLM must not hold the GPUs on.
        await asyncio.to_thread(node.end_launches, 0)
        node.start()
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


async def _gpu_count() -> int:
    """The GPUs this node declares to Ray: those nvidia-smi finds here (none on a CPU box)."""
    try:
        return len(await query_gpus())
    except GPUDiscoveryError as exc:
        logger.info("GPUs: none (%s)", exc)
        return 0

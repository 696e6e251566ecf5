"""A worker box (VLLM_BOOTSTRAP_JOIN=HEAD_HOST:PORT): a Ray node that joins the head, and
GET /health for the platform's probe. It serves no API of its own: the head runs and
watches vLLM here through Ray."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from vllm_bootstrap.cluster.ray_node import NodeSpec, RayNode
from vllm_bootstrap.config import Settings
from vllm_bootstrap.supervision import GPUDiscoveryError, query_gpus

logger = logging.getLogger("vllm_bootstrap.cluster")


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
        node = holder["node"] = RayNode(spec, settings.access_key, settings.log_dir / "ray.log")
        node.start()
        try:
            yield
        finally:
            await asyncio.to_thread(node.stop, settings.stop_timeout_seconds)

    async def health(_request: Request) -> JSONResponse:
        node = holder.get("node")
        running = node is not None and node.running
        body = {"status": "ok" if running else "ray node down", "role": "worker"}
        return JSONResponse(body, status_code=200 if running else 503)

    return Starlette(routes=[Route("/health", health)], lifespan=lifespan)


async def _gpu_count() -> int:
    """The GPUs this node declares to Ray: those nvidia-smi finds here (none on a CPU box)."""
    try:
        return len(await query_gpus())
    except GPUDiscoveryError as exc:
        logger.info("GPUs: none (%s)", exc)
        return 0

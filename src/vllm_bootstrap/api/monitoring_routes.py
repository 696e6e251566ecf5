"""Looking at the box: GET /stats (host and GPUs, as JSON) and GET /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from vllm_bootstrap.api.services import Services, ServicesDep
from vllm_bootstrap.monitoring import host_stats

router = APIRouter()


@router.get("/stats")
async def stats(services: ServicesDep) -> dict[str, Any]:
    """Host load, CPUs, memory and disks; each GPU's memory, utilisation, temperature, power
    and owner. When nvidia-smi fails, `error` says why and `gpus` is empty."""
    gpus, error = await _gpus(services)
    settings = services.supervisor.settings
    folders = {
        "state": settings.state_dir,
        "logs": settings.log_dir,
        "model_cache": model_cache_folder(),
    }
    # /proc and statfs are quick, but a hung network mount must not freeze the event loop.
    host = await asyncio.to_thread(host_stats, folders)
    answer: dict[str, Any] = {"host": host, "gpus": gpus, "error": error}
    if services.cluster is not None:  # the head of several boxes: each of them too
        nodes = await services.cluster.nodes(gpus, services.supervisor.gpu_owners)
        answer["nodes"] = [node.to_dict() for node in nodes]
    return answer


@router.get("/nodes")
async def nodes(services: ServicesDep) -> list[dict[str, Any]]:
    """The boxes this endpoint runs on: on a cluster's head every Ray node (its id,
    address, whether it is alive, and its GPUs with their readings, or why there are none);
    on a box alone, this box."""
    gpus, error = await _gpus(services)
    if services.cluster is None:
        return [
            {
                "node_id": None,
                "address": None,
                "alive": True,
                "head": True,
                "gpus": gpus,
                "error": error,
            }
        ]
    nodes = await services.cluster.nodes(gpus, services.supervisor.gpu_owners)
    return [node.to_dict() for node in nodes]


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    await _gpus(services)  # the GPU gauges show this reading
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def _gpus(services: Services) -> tuple[list[dict[str, Any]], str | None]:
    supervisor, collector = services.supervisor, services.metrics
    gpus, error = await services.gpu_readings.read()
    owners = supervisor.gpu_owners()
    asleep = supervisor.sleeping_on()
    for gpu in gpus:
        gpu["launch_id"] = owners.get(gpu["index"])
        gpu["sleeping_launch_ids"] = asleep.get(gpu["index"], [])
    collector.gpus.readings, collector.gpus.owners = gpus, owners
    return gpus, error


def model_cache_folder() -> Path:
    """Where Hugging Face keeps downloaded models (HF_HUB_CACHE, else HF_HOME/hub)."""
    if hub_cache := os.environ.get("HF_HUB_CACHE"):
        return Path(hub_cache)
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"

"""The control plane's HTTP routes. Domain errors raised here are mapped by errors.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from vllm_bootstrap.api.schemas import LaunchRequest
from vllm_bootstrap.api.services import ServicesDep
from vllm_bootstrap.launches import MAX_CHUNK_BYTES, read_chunk
from vllm_bootstrap.supervision import NoNvidiaSmi

router = APIRouter()


@router.post("/launch", status_code=status.HTTP_201_CREATED)
async def create_launch(body: LaunchRequest, services: ServicesDep) -> dict[str, Any]:
    """Start a vLLM server; it answers at once, in state `bootstrapping`."""
    launch = await services.supervisor.launch(body.to_spec())
    return services.launch_view(launch)


@router.get("/launch")
async def list_launches(
    services: ServicesDep,
    all: Annotated[bool, Query(description="Include stopped and failed launches.")] = False,
) -> list[dict[str, Any]]:
    launches = services.supervisor.registry.launches(include_terminal=all)
    return [services.launch_view(launch) for launch in launches]


@router.get("/status/{launch_id}")
async def launch_status(launch_id: str, services: ServicesDep) -> dict[str, Any]:
    return services.launch_view(services.supervisor.registry.get(launch_id))


@router.get("/logs/{launch_id}")
async def launch_logs(
    launch_id: str,
    services: ServicesDep,
    offset: Annotated[int, Query(ge=0, description="Byte offset: the last next_offset.")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_CHUNK_BYTES)] = MAX_CHUNK_BYTES,
) -> dict[str, Any]:
    """Log output from `offset` on, at most 1 MiB a call, never cut inside a character."""
    launch = services.supervisor.registry.get(launch_id)
    chunk = read_chunk(launch.log_path, offset, limit)
    return {
        "launch_id": launch_id,
        "offset": chunk.offset,
        "next_offset": chunk.next_offset,
        "size": chunk.size,
        "content": chunk.content,
    }


@router.post("/stop/{launch_id}")
async def stop_launch(
    launch_id: str,
    services: ServicesDep,
    wait: Annotated[
        bool, Query(description="Answer only once the launch is stopped (or failed).")
    ] = False,
) -> dict[str, Any]:
    """SIGTERM the launch's whole process group, SIGKILL after VLLM_STOP_TIMEOUT_SECONDS."""
    supervisor = services.supervisor
    launch = supervisor.stop(launch_id)
    if wait:
        timeout = supervisor.settings.stop_timeout_seconds + 10
        launch = await supervisor.wait_until_ended(launch_id, timeout)
    return services.launch_view(launch)


@router.get("/gpus")
async def list_gpus(services: ServicesDep) -> list[dict[str, Any]]:
    """The GPUs this server may use, live from nvidia-smi, with the launch owning each; on
    a cluster's head, every box's, each with its `node_id`."""
    supervisor = services.supervisor
    try:
        gpus = await supervisor.detect_gpus(refresh=True)
    except NoNvidiaSmi:
        gpus = []  # a CPU-only box: launches run on the CPU
    owners = supervisor.gpu_owners()
    rows = [{**gpu.to_dict(), "launch_id": owners.get(gpu.index)} for gpu in gpus]
    cluster = services.cluster
    if cluster is None:
        return rows
    for row in rows:
        row["node_id"] = cluster.head_node_id
    for node in await cluster.nodes([], supervisor.gpu_owners):
        if node.alive and not node.head:
            rows += [_gpu_row(gpu, node.node_id) for gpu in node.gpus]
    return rows


def _gpu_row(reading: dict[str, Any], node_id: str) -> dict[str, Any]:
    """Another box's GPU, as GET /gpus shows this box's (its reading has no uuid)."""
    fields = ("index", "name", "memory_total_mib", "memory_used_mib", "launch_id")
    return {**{name: reading.get(name) for name in fields}, "uuid": None, "node_id": node_id}


@router.get("/health")
async def health(services: ServicesDep) -> dict[str, Any]:
    """The control plane itself is up (not whether any model is), and how responsive it is:
    how late its event loop ran lately (`last_ms`) and at worst since start (`max_ms`)."""
    return {
        "status": "ok",
        "live_launches": len(services.supervisor.registry.launches()),
        "event_loop_lag": services.loop_lag.snapshot(),
    }

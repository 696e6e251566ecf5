"""The control plane's HTTP routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status

from vllm_bootstrap.gpus import GPUDiscoveryError
from vllm_bootstrap.launch import RestartPolicy
from vllm_bootstrap.logs import MAX_CHUNK_BYTES, read_chunk
from vllm_bootstrap.schemas import LaunchRequest
from vllm_bootstrap.supervisor import LaunchNotFound, LaunchRefused, LaunchSpec, Supervisor

router = APIRouter()


def _supervisor(request: Request) -> Supervisor:
    supervisor: Supervisor = request.app.state.supervisor
    return supervisor


def _known(supervisor: Supervisor, launch_id: str) -> None:
    try:
        supervisor.get(launch_id)
    except LaunchNotFound:
        raise HTTPException(404, f"no launch with id {launch_id!r}") from None


@router.post("/launch", status_code=status.HTTP_201_CREATED)
async def create_launch(body: LaunchRequest, request: Request) -> dict[str, Any]:
    """Start a vLLM server; it answers at once, in state `bootstrapping`."""
    spec = LaunchSpec(
        model=body.model,
        gpu_ids=body.gpu_ids,
        port=body.port,
        extra_args=body.extra_args,
        env=body.env,
        force=body.force,
        restart_policy=RestartPolicy(body.restart),
        max_restarts=body.max_restarts,
        restart_backoff_seconds=body.restart_backoff_seconds,
    )
    try:
        launch = await _supervisor(request).launch(spec)
    except LaunchRefused as refused:
        raise HTTPException(refused.status_code, refused.message) from None
    return launch.to_public()


@router.get("/launch")
async def list_launches(
    request: Request,
    all: Annotated[bool, Query(description="Include stopped and failed launches.")] = False,
) -> list[dict[str, Any]]:
    return [launch.to_public() for launch in _supervisor(request).launches(include_terminal=all)]


@router.get("/status/{launch_id}")
async def launch_status(launch_id: str, request: Request) -> dict[str, Any]:
    supervisor = _supervisor(request)
    _known(supervisor, launch_id)
    return supervisor.get(launch_id).to_public()


@router.get("/logs/{launch_id}")
async def launch_logs(
    launch_id: str,
    request: Request,
    offset: Annotated[int, Query(ge=0, description="Byte offset: the last next_offset.")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_CHUNK_BYTES)] = MAX_CHUNK_BYTES,
) -> dict[str, Any]:
    """Log output from `offset` on, at most 1 MiB a call, never cut inside a character."""
    supervisor = _supervisor(request)
    _known(supervisor, launch_id)
    chunk = read_chunk(supervisor.get(launch_id).log_path, offset, limit)
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
    request: Request,
    wait: Annotated[
        bool, Query(description="Answer only once the launch is stopped (or failed).")
    ] = False,
) -> dict[str, Any]:
    """SIGTERM the launch's whole process group, SIGKILL after VLLM_STOP_TIMEOUT_SECONDS."""
    supervisor = _supervisor(request)
    _known(supervisor, launch_id)
    launch = supervisor.stop(launch_id)
    if wait:
        timeout = supervisor.settings.stop_timeout_seconds + 10
        launch = await supervisor.wait_until_terminal(launch_id, timeout)
    return launch.to_public()


@router.get("/gpus")
async def list_gpus(request: Request) -> list[dict[str, Any]]:
    """The GPUs this server may use, live from nvidia-smi, with the launch owning each."""
    supervisor = _supervisor(request)
    try:
        gpus = await supervisor.detect_gpus(refresh=True)
    except GPUDiscoveryError as exc:
        raise HTTPException(503, str(exc)) from None
    owners = supervisor.gpu_owners()
    return [{**gpu.to_dict(), "launch_id": owners.get(gpu.index)} for gpu in gpus]


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """The control plane itself is up (not whether any model is), and how responsive it is:
    how late its event loop ran lately (`last_ms`) and at worst since start (`max_ms`)."""
    launches = _supervisor(request).launches()
    return {
        "status": "ok",
        "live_launches": len(launches),
        "event_loop_lag": request.app.state.loop_lag.snapshot(),
    }

"""A typed Python client for a vllm-bootstrap server, sync (`Client`) and async
(`AsyncClient`, the same methods awaited):

from vllm_bootstrap.client import Client

client = Client("http://gpu-box:8000", key="...")   # or VLLM_BOOTSTRAP_URL, VLLM_ACCESS_KEY
with client.run("Qwen/Qwen3-8B", gpu_ids=[0]) as launch:
    openai = client.openai(launch.launch_id)
    print(openai.completions.create(model="Qwen/Qwen3-8B", prompt="Hi").choices[0].text)
"""

from vllm_bootstrap.client.async_client import AsyncClient
from vllm_bootstrap.client.common import ApiError, LaunchFailed
from vllm_bootstrap.client.models import (
    ApiKey,
    Batch,
    BatchError,
    BatchErrors,
    Cache,
    CachedModel,
    CachedRevision,
    CacheRemoval,
    Disk,
    Download,
    FileObject,
    Gpu,
    GpuStats,
    Host,
    Launch,
    LogChunk,
    Memory,
    NewApiKey,
    Node,
    Profile,
    ProfileStatus,
    RequestCounts,
    Stats,
    UsageRow,
)
from vllm_bootstrap.client.sync_client import Client

__all__ = [
    "ApiError",
    "ApiKey",
    "AsyncClient",
    "Batch",
    "BatchError",
    "BatchErrors",
    "Cache",
    "CacheRemoval",
    "CachedModel",
    "CachedRevision",
    "Client",
    "Disk",
    "Download",
    "FileObject",
    "Gpu",
    "GpuStats",
    "Host",
    "Launch",
    "LaunchFailed",
    "LogChunk",
    "Memory",
    "NewApiKey",
    "Node",
    "Profile",
    "ProfileStatus",
    "RequestCounts",
    "Stats",
    "UsageRow",
]

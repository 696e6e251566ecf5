"""Model weights from the Hugging Face Hub into its cache: downloads with progress and a disk
check, resumed after a restart, shared by the launches that need them; and the cache
itself, listed and cleared."""

from vllm_bootstrap.downloads.cache import RepoCache, cached_repos
from vllm_bootstrap.downloads.errors import (
    CacheInUse,
    DiskTooSmall,
    DownloadError,
    DownloadNotFound,
    GatedRepo,
    HubOffline,
    HubUnreachable,
    InvalidRepo,
    NotCached,
    RepoNotFound,
    RevisionNotFound,
    TransferFailed,
)
from vllm_bootstrap.downloads.hub import check_repo_id
from vllm_bootstrap.downloads.launch_weights import LaunchWeights, is_hub_model
from vllm_bootstrap.downloads.manager import Downloads
from vllm_bootstrap.downloads.record import Download, DownloadState
from vllm_bootstrap.downloads.store import DownloadStore

__all__ = [
    "CacheInUse",
    "DiskTooSmall",
    "Download",
    "DownloadError",
    "DownloadNotFound",
    "DownloadState",
    "DownloadStore",
    "Downloads",
    "GatedRepo",
    "HubOffline",
    "HubUnreachable",
    "InvalidRepo",
    "LaunchWeights",
    "NotCached",
    "RepoCache",
    "RepoNotFound",
    "RevisionNotFound",
    "TransferFailed",
    "cached_repos",
    "check_repo_id",
    "is_hub_model",
]

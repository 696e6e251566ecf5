"""Model weights from the Hugging Face Hub into its cache: downloads with progress and a disk
check, resumed after a restart, shared by the launches that need them; and the cache
itself, listed and cleared."""

from vllm_bootstrap.faces import lazy_face

# What other packages may use, and the module defining each.
_FACE = {
    "CacheInUse": "errors",
    "CacheUnusable": "errors",
    "InvalidRevision": "errors",
    "DiskTooSmall": "errors",
    "Download": "record",
    "DownloadError": "errors",
    "DownloadNotFound": "errors",
    "DownloadState": "record",
    "DownloadStore": "store",
    "Downloads": "manager",
    "GatedRepo": "errors",
    "HubOffline": "errors",
    "HubUnreachable": "errors",
    "InvalidRepo": "errors",
    "LaunchWeights": "launch_weights",
    "NotCached": "errors",
    "RepoCache": "cache",
    "RepoNotFound": "errors",
    "RevisionNotFound": "errors",
    "TransferFailed": "errors",
    "cache_root": "cache",
    "cached_repos": "cache",
    "check_repo_id": "hub",
    "free_bytes": "cache",
    "is_hub_model": "launch_weights",
}
__all__ = sorted(_FACE)
__getattr__ = lazy_face(__name__, _FACE)

"""A launch's weights: before vLLM starts on a Hub model that is not wholly in the cache,
the launch downloads it through `Downloads` (in phase `downloading`, with its download's id
and progress), then vLLM loads the cached files without asking the Hub again.

vLLM downloads with its progress bars off and learns of a full disk only when it fills;
here the bytes are counted and the disk is checked before the first one is written.
Local paths skip this, and so do models already cached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from vllm_bootstrap.downloads import errors
from vllm_bootstrap.downloads.cache import RepoCache
from vllm_bootstrap.downloads.hub import check_repo_id
from vllm_bootstrap.downloads.manager import Downloads
from vllm_bootstrap.downloads.record import Download, DownloadState
from vllm_bootstrap.launches import Launch, flag_value, reserved_flag
from vllm_bootstrap.log_text import escaped

logger = logging.getLogger("vllm_bootstrap.downloads")
# How often a launch's progress is brought up to its download's.
PROGRESS_SECONDS = 0.5
# Flags that make vLLM read another repository or revision than the one downloaded: it
# must be free to ask the Hub for those itself.
OTHER_REPOS = (
    "--tokenizer",
    "--tokenizer-revision",
    "--code-revision",
    "--speculative-config",
    "--hf-config-path",
    "--lora-modules",
    "--enable-lora",
)
# A launch that says where its Hub files come from or go is left to download them itself:
# ours would land in the server's cache, with the server's token.
OWN_HUB_VARIABLES = ("HF_TOKEN", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE")
OWN_HUB_FLAGS = ("--download-dir",)
# Load formats whose files `selection` knows (None: vLLM's default, "auto").
KNOWN_LOAD_FORMATS = (None, "auto", "safetensors", "dummy")


def is_hub_model(model: str) -> bool:
    if model.startswith(("/", ".", "~")) or Path(model).exists():
        return False
    try:
        check_repo_id(model)
    except errors.InvalidRepo:
        return False
    return True


class LaunchWeights:
    def __init__(self, downloads: Downloads, enabled: bool) -> None:
        self._downloads = downloads
        self._enabled = enabled

    def needed_for(self, launch: Launch) -> bool:
        """Whether the launch waits for our download: a Hub model, loaded the usual way,
        from the server's cache."""
        return (
            self._enabled
            and is_hub_model(launch.model)
            and flag_value(launch.extra_args, "--load-format") in KNOWN_LOAD_FORMATS
            and not any(name in launch.env for name in OWN_HUB_VARIABLES)
            and not any(reserved_flag(arg, OWN_HUB_FLAGS) for arg in launch.extra_args)
        )

    async def fetch(self, launch: Launch, on_progress: Callable[[Download], None]) -> None:
        """Download what the launch's vLLM will load; DownloadError when that fails."""
        revision = flag_value(launch.extra_args, "--revision") or "main"
        weights = flag_value(launch.extra_args, "--load-format") != "dummy"
        try:
            download = await self._downloads.start(
                launch.model, revision, weights, reason=f"launch {launch.launch_id}"
            )
        except errors.HubUnreachable as exc:
            if RepoCache(launch.model).commit_of(revision) is None:
                raise
            logger.warning(
                "launch %s: %s; starting on the cached copy", launch.launch_id, escaped(str(exc))
            )
            return
        if download is not None:
            launch.download_id = download.download_id
            while not download.is_terminal:
                on_progress(download)
                download = await self._downloads.wait(download, PROGRESS_SECONDS)
            if download.state is not DownloadState.COMPLETED:
                raise errors.TransferFailed(
                    f"downloading {launch.model} {download.state}: {download.error}"
                )
        if _reads_only_its_own_repo(launch.extra_args):
            launch.env.setdefault("HF_HUB_OFFLINE", "1")  # every file it loads is cached


def _reads_only_its_own_repo(extra_args: Sequence[str]) -> bool:
    return not any(reserved_flag(arg, OTHER_REPOS) for arg in extra_args)

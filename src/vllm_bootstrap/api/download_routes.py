"""Model downloads and the Hugging Face cache over HTTP: POST, GET, DELETE /downloads, and
GET /cache, DELETE /cache/{org}/{repo} (the admin's)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from vllm_bootstrap.api.services import ServicesDep
from vllm_bootstrap.downloads import (
    CacheInUse,
    NotCached,
    RepoCache,
    cache_root,
    cached_repos,
    check_repo_id,
    free_bytes,
)
from vllm_bootstrap.launches import iso_time

router = APIRouter(tags=["downloads"])


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[StrictStr, Field(min_length=1, max_length=200)] = Field(
        description="A Hub repository id, org/name."
    )
    revision: Annotated[StrictStr, Field(min_length=1, max_length=200)] = "main"
    weights: bool = Field(default=True, description="false: only the config and tokenizer files.")


@router.post("/downloads", status_code=202)
async def start_download(body: DownloadRequest, services: ServicesDep) -> dict[str, Any]:
    """Download the files vLLM loads from the repository into the cache; 202 with the
    download, which GET /downloads/{id} follows (completed at once when cached)."""
    downloads = services.downloads
    download = await downloads.request(body.model, body.revision, body.weights)
    return downloads.view(download)


@router.get("/downloads")
async def list_downloads(services: ServicesDep) -> dict[str, Any]:
    downloads = services.downloads
    return {"object": "list", "data": [downloads.view(item) for item in downloads.all()]}


@router.get("/downloads/{download_id}")
async def get_download(download_id: str, services: ServicesDep) -> dict[str, Any]:
    downloads = services.downloads
    return downloads.view(downloads.get(download_id))


@router.delete("/downloads/{download_id}")
async def cancel_download(download_id: str, services: ServicesDep) -> dict[str, Any]:
    """Cancel it (files it finished stay cached); harmless for one that has ended."""
    downloads = services.downloads
    return downloads.view(downloads.cancel(download_id))


@router.get("/cache")
async def list_cache(services: ServicesDep) -> dict[str, Any]:
    """The model repositories in the cache, their sizes and who uses them."""
    repos = await asyncio.to_thread(cached_repos)
    free, _ = free_bytes()
    return {
        "object": "list",
        "path": str(cache_root()),
        "free_bytes": free,
        "data": [
            {
                "model": repo.repo,
                "size_on_disk": repo.size_on_disk,
                "revisions": repo.revisions,
                "last_used": iso_time(repo.last_used),
                "last_modified": iso_time(repo.last_modified),
                "launches": _live_launches(services, repo.repo),
                "profiles": _profiles(services, repo.repo),
                "downloading": services.downloads.fetching(repo.repo),
            }
            for repo in repos
        ],
    }


@router.delete("/cache/{repo:path}")
async def remove_from_cache(repo: str, services: ServicesDep) -> dict[str, Any]:
    """Free a repository's space; 409 while a live launch or a download uses it."""
    check_repo_id(repo)
    users = _live_launches(services, repo)
    if users:
        raise CacheInUse(f"{repo} is in use by launch(es) {', '.join(users)}: stop them first")
    cache = RepoCache(repo)
    with services.downloads.removing(repo):  # no download of it begins meanwhile
        if not cache.folder.is_dir():
            raise NotCached(repo)
        freed = await asyncio.to_thread(cache.remove)
    return {"model": repo, "deleted": True, "freed_bytes": freed}


def _live_launches(services: ServicesDep, repo: str) -> list[str]:
    return [
        launch.launch_id
        for launch in services.supervisor.registry.launches()
        if launch.model == repo
    ]


def _profiles(services: ServicesDep, repo: str) -> list[str]:
    return [
        profile.name for profile in services.swapper.wing.profiles.all() if profile.model == repo
    ]

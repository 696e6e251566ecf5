"""The Hugging Face cache, in huggingface_hub's own layout, so vLLM, transformers and
`hf download` find what we fetched and we find what they did:

    <HF_HUB_CACHE>/models--<org>--<name>/
        blobs/<etag>                    a complete file
        blobs/<etag>.vllm-bootstrap     one being fetched by us (resumed from its size)
        snapshots/<commit>/<path>       a link to its blob: only a complete file has one
        refs/<revision>                 the commit a branch or tag named when we fetched it

A file counts as cached only once its blob is whole and linked, so an interrupted or
failed fetch never leaves anything that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, scan_cache_dir
from huggingface_hub.errors import CacheNotFound

from vllm_bootstrap.downloads.hub import Listing, RepoFile

PARTIAL_SUFFIX = ".vllm-bootstrap"


def cache_root() -> Path:
    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo: str) -> Path:
    return cache_root() / f"models--{repo.replace('/', '--')}"


@dataclass(frozen=True)
class RepoCache:
    repo: str

    @property
    def folder(self) -> Path:
        return repo_folder(self.repo)

    def blob(self, item: RepoFile) -> Path:
        return self.folder / "blobs" / item.etag

    def partial(self, item: RepoFile) -> Path:
        return self.folder / "blobs" / f"{item.etag}{PARTIAL_SUFFIX}"

    def link(self, commit: str, item: RepoFile) -> Path:
        return self.folder / "snapshots" / commit / item.path

    def has(self, listing: Listing, item: RepoFile) -> bool:
        return self.link(listing.commit, item).exists()  # follows the link to a whole blob

    def bytes_on_disk(self, item: RepoFile) -> int:
        """How much of `item` is here already: all of it, part of it, or none."""
        for path in (self.blob(item), self.partial(item)):
            with contextlib.suppress(OSError):
                return path.stat().st_size
        return 0

    def commit_of(self, revision: str) -> str | None:
        """The commit `revision` named when it was last fetched (offline use)."""
        try:
            return (self.folder / "refs" / revision).read_text().strip() or None
        except OSError:
            return revision if (self.folder / "snapshots" / revision).is_dir() else None

    def prepare(self, listing: Listing) -> None:
        (self.folder / "blobs").mkdir(parents=True, exist_ok=True)
        (self.folder / "snapshots" / listing.commit).mkdir(parents=True, exist_ok=True)
        if listing.revision != listing.commit:
            _write_atomically(self.folder / "refs" / listing.revision, listing.commit)

    def complete(self, listing: Listing, item: RepoFile) -> None:
        """The whole file is in its partial blob: make it the blob, then link it."""
        blob = self.blob(item)
        partial = self.partial(item)
        if partial.exists():
            os.replace(partial, blob)
        link = self.link(listing.commit, item)
        link.parent.mkdir(parents=True, exist_ok=True)
        temporary = link.with_name(f".{link.name}{PARTIAL_SUFFIX}")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        temporary.symlink_to(os.path.relpath(blob, link.parent))
        os.replace(temporary, link)

    def drop_partial(self, item: RepoFile) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.partial(item).unlink()

    def remove(self) -> int:
        """Delete the repository from the cache; the bytes freed."""
        size = folder_size(self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)
        return size


def free_bytes() -> tuple[int, Path]:
    """The free space where the cache lives (its nearest existing folder)."""
    place = cache_root()
    while not place.exists() and place != place.parent:
        place = place.parent
    return shutil.disk_usage(place).free, place


def folder_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


@dataclass(frozen=True)
class CachedRepo:
    repo: str
    size_on_disk: int
    revisions: list[dict[str, object]]
    last_used: float | None
    last_modified: float | None


def cached_repos() -> list[CachedRepo]:
    """The model repositories in the cache (blocking: it reads every folder)."""
    try:
        info = scan_cache_dir(cache_root())
    except CacheNotFound:
        return []
    repos = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        revisions = [
            {
                "commit": revision.commit_hash,
                "refs": sorted(revision.refs),
                "size_on_disk": revision.size_on_disk,
                "files": revision.nb_files,
            }
            for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        ]
        repos.append(
            CachedRepo(
                repo.repo_id,
                folder_size(repo.repo_path),  # partial blobs too: they take the disk as well
                revisions,
                repo.last_accessed or None,
                repo.last_modified or None,
            )
        )
    return sorted(repos, key=lambda repo: repo.repo)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as file:
        file.write(text)
    os.replace(file.name, path)

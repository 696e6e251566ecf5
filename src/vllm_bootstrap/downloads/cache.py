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
from vllm_bootstrap.downloads.selection import WEIGHTS

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
        return self._inside(self.folder / "blobs" / item.etag)

    def partial(self, item: RepoFile) -> Path:
        return self._inside(self.folder / "blobs" / f"{item.etag}{PARTIAL_SUFFIX}")

    def link(self, commit: str, item: RepoFile) -> Path:
        return self._inside(self.folder / "snapshots" / commit / item.path)

    def _inside(self, path: Path) -> Path:
        """Listings are checked (hub.checked_listing); this is the last line, in case."""
        if ".." in path.relative_to(self.folder).parts:
            raise ValueError(f"{path} would leave {self.folder}")
        return path

    def has(self, listing: Listing, item: RepoFile) -> bool:
        return self.link(listing.commit, item).exists()  # follows the link to a whole blob

    def bytes_on_disk(self, item: RepoFile) -> int:
        """How much of `item` is here already: all of it, part of it, or none."""
        for path in (self.blob(item), self.partial(item)):
            with contextlib.suppress(OSError):
                return path.stat().st_size
        return 0

    def looks_cached(self, revision: str, weights: bool) -> bool:
        """Offline, with no listing to compare: the revision's snapshot has a config and,
        when they are wanted, weights (a download that stopped at the configs does not)."""
        commit = self.commit_of(revision)
        if commit is None:
            return False
        snapshot = self.folder / "snapshots" / commit
        names = {path.name for path in snapshot.iterdir()} if snapshot.is_dir() else set()
        described = bool(names & {"config.json", "params.json"})
        weighed = any(name.endswith(WEIGHTS) for name in names if (snapshot / name).exists())
        return described and (weighed or not weights)

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
        """Delete the repository from the cache; the bytes freed (what is gone, also when
        part of it could not be deleted)."""
        before = folder_size(self.folder)
        if self.folder.is_symlink():
            self.folder.unlink()  # the link goes; what it points to is not ours to delete
            return 0
        shutil.rmtree(self.folder, ignore_errors=True)
        return before - (folder_size(self.folder) if self.folder.exists() else 0)


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

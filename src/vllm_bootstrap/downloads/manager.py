"""The downloads: started by POST /downloads and by launches of Hub models not wholly in the
cache, one per repository and revision at a time (a launch and a download of the same model
share it), resumed after a restart, cancelled on request.

Each runs `transfer.fetch_all` in a worker thread; the event loop only starts, watches and
records them. Progress is read from the threads' tallies when someone asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from vllm_bootstrap.downloads import errors
from vllm_bootstrap.downloads.cache import RepoCache, free_bytes
from vllm_bootstrap.downloads.hub import (
    Listing,
    RepoFile,
    check_repo_id,
    check_revision,
    is_offline,
    list_repo,
)
from vllm_bootstrap.downloads.record import Download, DownloadState
from vllm_bootstrap.downloads.selection import files_to_fetch
from vllm_bootstrap.downloads.store import KEPT_FINISHED, DownloadStore
from vllm_bootstrap.downloads.transfer import BlobLocks, Cancelled, Stop, Tally, fetch_all
from vllm_bootstrap.log_text import escaped

logger = logging.getLogger("vllm_bootstrap.downloads")
# The rate is the bytes of the last few seconds, so a stall shows soon.
RATE_WINDOW_SECONDS = 5.0
# Readings closer together than this say nothing reliable about a rate.
MIN_RATE_SPAN_SECONDS = 0.2
GIB = 1024**3

_S = DownloadState


@dataclass
class _Job:
    download: Download
    stop: Stop = field(default_factory=Stop)
    tally: Tally = field(default_factory=Tally)
    # Bytes of the files that were whole before it began (the tally counts the rest).
    base_bytes: int = 0
    base_files: int = 0
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def refresh(self) -> Download:
        """Bring its record's counts up to the threads' tallies."""
        download = self.download
        if download.state is _S.DOWNLOADING:
            download.bytes_done = min(download.bytes_total, self.base_bytes + self.tally.total())
            download.files_done = self.base_files + len(self.tally.finished)
            now = time.monotonic()
            self.samples.append((now, download.bytes_done))
        return download

    def rate(self) -> float | None:
        """Bytes a second over the last few seconds of readings (or the last two, when
        nobody looked for longer than that)."""
        if len(self.samples) < 2:
            return None
        latest = self.samples[-1][0]
        recent = [sample for sample in self.samples if sample[0] >= latest - RATE_WINDOW_SECONDS]
        first, last = recent[0] if len(recent) > 1 else self.samples[-2], self.samples[-1]
        if last[0] - first[0] < MIN_RATE_SPAN_SECONDS:
            return None
        return (last[1] - first[1]) / (last[0] - first[0])


class Downloads:
    def __init__(self, store: DownloadStore, workers: int, disk_margin_bytes: int) -> None:
        self._store = store
        self._workers = workers
        self._margin = disk_margin_bytes
        self._jobs: dict[str, _Job] = {}
        self._finished: dict[str, Download] = {}
        self._closing = False
        self._blob_locks = BlobLocks()
        # Repositories being deleted from the cache (DELETE /cache): no download may begin.
        self._removing: set[str] = set()

    # ----------------------------------------------------------------- the API's side

    async def start(
        self, repo: str, revision: str = "main", weights: bool = True, reason: str = ""
    ) -> Download | None:
        """The live download of `repo` at `revision`, a new one, or None when the cache has
        every file already. Raises a DownloadError when the Hub or the disk refuses."""
        download, _ = await self._start(repo, revision, weights, reason)
        return download

    async def request(self, repo: str, revision: str = "main", weights: bool = True) -> Download:
        """POST /downloads: like `start`, with a completed record when the cache has it."""
        download, wanted = await self._start(repo, revision, weights, "POST /downloads")
        if download is not None:
            return download
        size = sum(item.size for item in wanted)
        done = Download(
            secrets.token_hex(6),
            repo,
            revision,
            DownloadState.COMPLETED,
            weights,
            files_total=len(wanted),
            files_done=len(wanted),
            bytes_total=size,
            bytes_done=size,
            reason="POST /downloads",
            cached=True,
            finished_at=time.time(),
        )
        self._remember(done)
        self._store.save(done)
        return done

    async def _start(
        self, repo: str, revision: str, weights: bool, reason: str
    ) -> tuple[Download | None, list[RepoFile]]:
        """A download (live or new) and the files it fetches; (None, the files) when the
        cache has them all (no files known: offline)."""
        check_repo_id(repo)
        check_revision(revision)
        self._check_not_removed(repo)
        live = self._live(repo, revision, weights)
        if live is not None:
            return live.download, []
        listing = await self._listing(repo, revision, weights)
        if listing is None:
            return None, []  # offline, and the cache has it
        wanted = files_to_fetch(listing.files, weights)
        missing = await asyncio.to_thread(self._missing_if_it_fits, listing, wanted)
        self._check_not_removed(repo)
        live = self._live(repo, revision, weights)  # one may have begun while we listed
        if live is not None:
            return live.download, wanted
        if not missing:
            return None, wanted
        download = Download(
            secrets.token_hex(6),
            repo,
            revision,
            weights=weights,
            commit=listing.commit,
            files_total=len(wanted),
            bytes_total=sum(item.size for item in wanted),
            reason=reason,
        )
        self._begin(download, listing, wanted, missing)
        return download, wanted

    def get(self, download_id: str) -> Download:
        job = self._jobs.get(download_id)
        if job is not None:
            return job.refresh()
        if download_id in self._finished:
            return self._finished[download_id]
        raise errors.DownloadNotFound(download_id)

    def view(self, download: Download) -> dict[str, object]:
        job = self._jobs.get(download.download_id)
        return download.to_public(job.rate() if job else None)

    def all(self) -> list[Download]:
        live = [job.refresh() for job in self._jobs.values()]
        return sorted([*self._finished.values(), *live], key=lambda d: d.created_at)

    def cancel(self, download_id: str) -> Download:
        """Stop it; the files it finished stay in the cache, its partial one goes."""
        download = self.get(download_id)
        job = self._jobs.get(download_id)
        if job is not None:
            job.stop.discard = True
            job.stop.cancelled.set()
        return download

    def under_way(self) -> list[tuple[str, str, int, int]]:
        """(model, revision, bytes done, bytes in all) of each download under way (/metrics)."""
        return [
            (d.repo, d.revision, d.bytes_done, d.bytes_total)
            for d in (job.refresh() for job in self._jobs.values())
        ]

    def fetching(self, repo: str) -> bool:
        return any(job.download.repo == repo for job in self._jobs.values())

    @contextlib.contextmanager
    def removing(self, repo: str) -> Iterator[None]:
        """While a repository is deleted from the cache, no download of it begins."""
        if self.fetching(repo) or repo in self._removing:
            raise errors.CacheInUse(
                f"{repo} is being downloaded: cancel it (DELETE /downloads/{{id}}) first"
            )
        self._removing.add(repo)
        try:
            yield
        finally:
            self._removing.discard(repo)

    async def wait(self, download: Download, timeout: float | None = None) -> Download:
        job = self._jobs.get(download.download_id)
        if job is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.ended.wait(), timeout)
        return self.get(download.download_id)

    # ----------------------------------------------------------------- start-up and exit

    def recover(self) -> None:
        """Take the downloads a previous run left under way up again, from their bytes."""
        for download in self._store.load_all():
            if download.is_terminal:
                self._remember(download)
            else:
                download.state = _S.QUEUED
                self._resume(download)

    async def shutdown(self) -> None:
        """Stop the threads; records stay under way for the next start to resume."""
        self._closing = True
        for job in self._jobs.values():
            job.stop.cancelled.set()
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    # ----------------------------------------------------------------- internals

    def _remember(self, download: Download) -> None:
        self._finished[download.download_id] = download
        while len(self._finished) > KEPT_FINISHED:
            self._finished.pop(next(iter(self._finished)))

    def _live(self, repo: str, revision: str, weights: bool) -> _Job | None:
        """A download under way that fetches what is asked (one with the weights serves a
        request for the configs alone, not the other way round)."""
        for job in self._jobs.values():
            download = job.download
            same = (download.repo, download.revision) == (repo, revision)
            if same and (download.weights or not weights):
                return job
        return None

    def _check_not_removed(self, repo: str) -> None:
        if repo in self._removing:
            raise errors.CacheInUse(f"{repo} is being deleted from the cache: try again")

    async def _listing(self, repo: str, revision: str, weights: bool) -> Listing | None:
        if is_offline():
            if await asyncio.to_thread(RepoCache(repo).looks_cached, revision, weights):
                return None
            raise errors.HubOffline(
                f"HF_HUB_OFFLINE is set and {repo} ({revision}) is not in the cache "
                f"({RepoCache(repo).folder}): unset HF_HUB_OFFLINE to download it"
            )
        return await asyncio.to_thread(list_repo, repo, revision)

    def _missing_if_it_fits(self, listing: Listing, wanted: list[RepoFile]) -> list[RepoFile]:
        """The files of `wanted` the cache lacks, once the disk is known to hold them
        (blocking: it reads the cache's folders and the disk's free space)."""
        cache = RepoCache(listing.repo)
        try:
            missing = [item for item in wanted if not cache.has(listing, item)]
            needed = sum(item.size - cache.bytes_on_disk(item) for item in missing)
            free, place = free_bytes()
        except OSError as exc:
            raise errors.CacheUnusable(
                f"the cache at {cache.folder} cannot be read: {exc}"
            ) from None
        if missing and needed + self._margin > free:
            raise errors.DiskTooSmall(
                f"{listing.repo} needs {_size(needed)} ({needed} bytes) more, but {place} has "
                f"{_size(free)} ({free} bytes) free and {_size(self._margin)} must stay free "
                "(VLLM_BOOTSTRAP_DISK_MARGIN_BYTES): free space there or point HF_HOME at a "
                "larger volume"
            )
        return missing

    def _begin(
        self, download: Download, listing: Listing, wanted: list[RepoFile], missing: list[RepoFile]
    ) -> None:
        job = _Job(download)
        cache = RepoCache(download.repo)
        whole = [item for item in wanted if item not in missing]
        job.base_bytes = sum(item.size for item in whole)
        job.base_files = len(whole)
        self._jobs[download.download_id] = job
        download.state = _S.DOWNLOADING
        download.bytes_done = job.base_bytes + sum(cache.bytes_on_disk(i) for i in missing)
        self._store.save(download)
        logger.info(
            "download %s: %s (%s) began, %d files, %s",
            download.download_id,
            escaped(download.repo),
            escaped(download.revision),
            len(missing),
            _size(download.bytes_total),
        )
        job.task = asyncio.create_task(self._run(job, listing, wanted), name="download")

    def _resume(self, download: Download) -> None:
        job = _Job(download)
        self._jobs[download.download_id] = job
        job.task = asyncio.create_task(self._relist_and_run(job), name="download")

    async def _relist_and_run(self, job: _Job) -> None:
        download = job.download
        try:
            listing = await asyncio.to_thread(list_repo, download.repo, download.revision)
        except errors.DownloadError as exc:
            self._end(job, _S.FAILED, str(exc))
            return
        wanted = files_to_fetch(listing.files, download.weights)
        cache = RepoCache(download.repo)
        whole = [item for item in wanted if cache.has(listing, item)]
        job.base_bytes, job.base_files = sum(i.size for i in whole), len(whole)
        download.commit = listing.commit
        download.files_total = len(wanted)
        download.bytes_total = sum(item.size for item in wanted)
        download.state = _S.DOWNLOADING
        logger.info("download %s: resumed after a restart", download.download_id)
        await self._run(job, listing, wanted)

    async def _run(self, job: _Job, listing: Listing, wanted: list[RepoFile]) -> None:
        try:
            await asyncio.to_thread(
                fetch_all, listing, wanted, job.tally, job.stop, self._workers, self._blob_locks
            )
        except Cancelled:
            if self._closing and not job.stop.discard:
                return  # the server stops: the record stays under way, to be resumed
            self._end(job, _S.CANCELLED, "cancelled by DELETE /downloads")
        except errors.DownloadError as exc:
            self._end(job, _S.FAILED, str(exc))
        except Exception as exc:  # a bug, or an OS error we did not foresee
            logger.exception("download %s crashed", job.download.download_id)
            self._end(job, _S.FAILED, f"{type(exc).__name__}: {exc}")
        else:
            job.refresh()
            self._end(job, _S.COMPLETED, None)

    def _end(self, job: _Job, state: DownloadState, error: str | None) -> None:
        download = job.refresh()
        download.state = state
        download.error = error
        download.finished_at = time.time()
        if state is _S.COMPLETED:
            download.bytes_done, download.files_done = download.bytes_total, download.files_total
        self._jobs.pop(download.download_id, None)
        self._remember(download)
        self._store.save(download)
        job.ended.set()
        log = logger.info if state is _S.COMPLETED else logger.warning
        log(
            "download %s: %s%s",
            download.download_id,
            state,
            f" ({escaped(error)})" if error else "",
        )


def _size(count: int) -> str:
    return f"{count / GIB:.2f} GiB" if count >= GIB / 10 else f"{count / 1024**2:.1f} MiB"

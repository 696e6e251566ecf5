"""Fetching a repository's files into the cache, resuming each from what is on disk.

huggingface_hub (2.x) writes each download to a file of its own process and deletes it when
interrupted, so a restart there fetches a 10 GB shard again from its first byte. Here the
bytes go to the blob's partial file, which survives a restart and is continued with an HTTP
Range request; huggingface_hub still supplies everything else (the URL, the token and
user agent, the cache layout's names). Blocking code: it runs in worker threads, one file
per thread, and looks at `Stop.cancelled` between chunks.

One blob has one writer: downloads that share a blob (two revisions of a repository, a
file listed twice) take turns on it through `BlobLocks`, so nobody truncates or deletes a
partial file another thread is writing.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

import httpx

from vllm_bootstrap.downloads import errors
from vllm_bootstrap.downloads.cache import RepoCache
from vllm_bootstrap.downloads.hub import Listing, RepoFile, file_url, request_headers

CHUNK_BYTES = 1024 * 1024
# A dropped connection or a passing refusal (429, 5xx) is retried from where it broke, this
# many times per file, waiting twice as long each time.
ATTEMPTS = 5
FIRST_BACKOFF_SECONDS = 0.5
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
CONNECT_TIMEOUT_SECONDS = 10.0
# A stalled transfer (no byte for this long) is a dropped one.
READ_TIMEOUT_SECONDS = 60.0
# How often a thread waiting for another's blob looks whether it was cancelled.
TURN_CHECK_SECONDS = 0.2


class Cancelled(Exception):
    """The download was cancelled (or the server is shutting down)."""


class _Passing(Exception):
    """A refusal worth another try (429, 5xx)."""


@dataclass
class Stop:
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Set with `cancelled` when the download is given up for good (DELETE /downloads): its
    # partial files go; a server that stops keeps them for its next start.
    discard: bool = False


@dataclass
class Tally:
    """Bytes on disk per file, written by its own thread only and summed by the reader."""

    by_file: dict[str, int] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)

    def total(self) -> int:
        return sum(list(self.by_file.values()))

    def finish(self, item: RepoFile) -> None:
        self.by_file[item.path] = item.size
        self.finished.add(item.path)


class BlobLocks:
    """One lock per blob in the cache, shared by every download of this server."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextmanager
    def turn(self, blob: str, stop: Stop) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(blob, threading.Lock())
        while not lock.acquire(timeout=TURN_CHECK_SECONDS):
            if stop.cancelled.is_set():
                raise Cancelled
        try:
            yield
        finally:
            lock.release()


@dataclass(frozen=True)
class _FileFetch:
    """One file of a download, with what fetching it needs."""

    client: httpx.Client
    headers: dict[str, str]
    cache: RepoCache
    listing: Listing
    item: RepoFile
    tally: Tally
    stop: Stop

    @property
    def url(self) -> str:
        return file_url(self.listing.repo, self.listing.commit, self.item.path)


def fetch_all(
    listing: Listing,
    wanted: list[RepoFile],
    tally: Tally,
    stop: Stop,
    workers: int,
    locks: BlobLocks,
) -> None:
    """Fetch every file of `wanted` that is not whole in the cache yet (blocking)."""
    cache = RepoCache(listing.repo)
    cache.prepare(listing)
    missing = [item for item in wanted if not cache.has(listing, item)]
    headers = request_headers()
    timeout = httpx.Timeout(READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
    with (
        httpx.Client(timeout=timeout, follow_redirects=True) as client,
        ThreadPoolExecutor(max(1, workers), thread_name_prefix="download") as pool,
    ):
        fetches = [
            pool.submit(
                _fetch_file, _FileFetch(client, headers, cache, listing, item, tally, stop), locks
            )
            for item in missing
        ]
        done, _ = wait(fetches, return_when=FIRST_EXCEPTION)
        failed = [fetch for fetch in done if fetch.exception() is not None]
        if failed:
            stop.cancelled.set()  # one file failed: the others stop too, and its error is told
            wait(fetches)
            raise failed[0].exception()  # type: ignore[misc]


def _fetch_file(fetch: _FileFetch, locks: BlobLocks) -> None:
    cache, item = fetch.cache, fetch.item
    with locks.turn(str(cache.blob(item)), fetch.stop):
        if not cache.blob(item).exists():  # else whole already (another revision, or hf)
            try:
                _fetch_with_retries(fetch)
            except Cancelled:
                if fetch.stop.discard:
                    cache.drop_partial(item)
                raise
        cache.complete(fetch.listing, item)
    fetch.tally.finish(item)


def _fetch_with_retries(fetch: _FileFetch) -> None:
    cache, item = fetch.cache, fetch.item
    for attempt in range(ATTEMPTS):
        if fetch.stop.cancelled.is_set():
            raise Cancelled
        try:
            _transfer(fetch)
            break
        except (httpx.TransportError, _Passing) as exc:
            if attempt == ATTEMPTS - 1:
                raise errors.TransferFailed(
                    f"{item.path} could not be fetched after {ATTEMPTS} tries: {exc}"
                ) from None
            fetch.stop.cancelled.wait(FIRST_BACKOFF_SECONDS * 2**attempt)
    have = cache.bytes_on_disk(item)
    if have != item.size:
        cache.drop_partial(item)
        raise errors.TransferFailed(
            f"{item.path}: the Hub sent {have} bytes, its listing says {item.size}"
        )


def _transfer(fetch: _FileFetch) -> None:
    cache, item = fetch.cache, fetch.item
    partial = cache.partial(item)
    have = cache.bytes_on_disk(item) if partial.exists() else 0
    if have > item.size:
        cache.drop_partial(item)
        have = 0
    fetch.tally.by_file[item.path] = have
    if have == item.size and item.size > 0:
        return
    asked = {**fetch.headers, "Range": f"bytes={have}-"} if have else fetch.headers
    with fetch.client.stream("GET", fetch.url, headers=asked) as response:
        if response.status_code in RETRIED_STATUSES:
            raise _Passing(f"the Hub answered {response.status_code}")
        if response.status_code not in (200, 206):
            raise errors.TransferFailed(_refusal(item, response))
        if response.status_code == 200:
            have = 0  # the server sent the whole file: start the partial file again
        on_full_disk = _written(cache, item)
        try:
            with partial.open("r+b" if have else "wb") as out:
                out.seek(have)
                out.truncate()
                _copy(fetch, response, out, have, on_full_disk)
        except OSError as exc:  # opening, or the last bytes flushed at close
            raise on_full_disk(exc) from None


def _copy(
    fetch: _FileFetch,
    response: httpx.Response,
    out: BinaryIO,
    have: int,
    on_full_disk: Callable[[OSError], errors.TransferFailed],
) -> None:
    for chunk in response.iter_raw(CHUNK_BYTES):
        if fetch.stop.cancelled.is_set():
            raise Cancelled
        try:
            out.write(chunk)
        except OSError as exc:
            raise on_full_disk(exc) from None
        have += len(chunk)
        fetch.tally.by_file[fetch.item.path] = have


def _written(cache: RepoCache, item: RepoFile) -> Callable[[OSError], errors.TransferFailed]:
    def failed(exc: OSError) -> errors.TransferFailed:
        cache.drop_partial(item)  # give the space back; nothing of it counts as a file
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return errors.TransferFailed(
                f"the disk filled while {item.path} was written ({exc.strerror}): "
                f"free space in {cache.folder.parent} and download again"
            )
        return errors.TransferFailed(f"{item.path} could not be written: {exc}")

    return failed


def _refusal(item: RepoFile, response: httpx.Response) -> str:
    reason = response.headers.get("x-error-message") or response.reason_phrase
    hint = (
        " (set HF_TOKEN to a token that may read it)" if response.status_code in (401, 403) else ""
    )
    return f"{item.path}: the Hub answered {response.status_code} {reason}{hint}"

"""What can go wrong with a download, each error saying what to do about it (str(error) is
the message a client reads; api/errors.py maps each class to its HTTP status)."""

from __future__ import annotations


class DownloadError(Exception):
    """A download could not be done; the message says why."""


class InvalidRepo(DownloadError):
    """Not a repository id the Hub could have."""


class InvalidRevision(DownloadError):
    """Not a revision: one that would leave the cache's refs folder, say."""


class CacheUnusable(DownloadError):
    """The cache's folder could not be read or written (permissions, a vanished volume)."""


class RepoNotFound(DownloadError):
    """The Hub has no such repository, or hides it from us (no token, or the wrong one)."""


class RevisionNotFound(DownloadError):
    """The repository exists, the revision does not."""


class GatedRepo(DownloadError):
    """A gated or private repository, and our token (if any) may not read it."""


class HubOffline(DownloadError):
    """HF_HUB_OFFLINE is set and the model is not (wholly) in the cache."""


class HubUnreachable(DownloadError):
    """The Hub did not answer, or answered with an error of its own."""


class DiskTooSmall(DownloadError):
    """The files do not fit where the cache lives; the message has both numbers."""


class TransferFailed(DownloadError):
    """A file could not be fetched after its retries (or the disk filled while it was)."""


class DownloadNotFound(DownloadError):
    def __init__(self, download_id: str) -> None:
        super().__init__(f"no download {download_id!r}: GET /downloads lists them")


class NotCached(DownloadError):
    def __init__(self, repo: str) -> None:
        super().__init__(f"{repo} is not in the cache: GET /cache lists what is")


class CacheInUse(DownloadError):
    """A live launch or a running download uses the repository."""

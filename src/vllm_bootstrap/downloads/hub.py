"""What the Hub says of a repository: its commit for a revision and its files with their
sizes, through huggingface_hub (which reads HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE), and
its refusals turned into errors that say what to do."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from huggingface_hub import constants, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, validate_repo_id

from vllm_bootstrap.downloads import errors
from vllm_bootstrap.log_text import escaped

# The Hub answers metadata in well under a second; past this it is down for our purposes.
LISTING_TIMEOUT_SECONDS = 30.0
MAX_REVISION_CHARACTERS = 256
MAX_NAME_BYTES = 255  # a file name's limit on Linux filesystems
_COMMIT = re.compile(r"[0-9a-f]{40}")
# A git blob id (sha1) or an LFS sha256: the names of blobs in the cache.
_BLOB = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    # Its blob's name in the cache: the LFS sha256, else the git blob id (as huggingface_hub
    # names it, so either of us finds the other's files).
    etag: str


@dataclass(frozen=True)
class Listing:
    repo: str
    revision: str
    commit: str
    files: tuple[RepoFile, ...]


def check_repo_id(repo: str) -> str:
    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise errors.InvalidRepo(f"{escaped(repo)!s} is not a Hub repository id: {exc}") from None
    return repo


def is_offline() -> bool:
    return constants.HF_HUB_OFFLINE


def endpoint() -> str:
    return constants.ENDPOINT


def list_repo(repo: str, revision: str) -> Listing:
    """The repository's files at `revision` (blocking: run it in a thread)."""
    if is_offline():
        raise errors.HubOffline(
            f"HF_HUB_OFFLINE is set: {repo} ({revision}) is not wholly in the cache and "
            "nothing may be downloaded; unset HF_HUB_OFFLINE or fill the cache first"
        )
    # Imported here: its module is half the server's start-up time, and only a download
    # that is not wholly cached needs it.
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(
            repo, revision=revision, files_metadata=True, timeout=LISTING_TIMEOUT_SECONDS
        )
    except GatedRepoError:
        raise errors.GatedRepo(_gated_message(repo)) from None
    except RepositoryNotFoundError:
        raise errors.RepoNotFound(_not_found_message(repo)) from None
    except RevisionNotFoundError:
        raise errors.RevisionNotFound(
            f"{repo} has no revision {revision!r} on the Hub ({endpoint()})"
        ) from None
    except OfflineModeIsEnabled as exc:
        raise errors.HubOffline(str(exc)) from None
    except HfHubHTTPError as exc:
        raise errors.HubUnreachable(f"the Hub ({endpoint()}) refused: {exc}") from None
    except Exception as exc:  # connection refused, timeouts, TLS: the Hub is out of reach
        raise errors.HubUnreachable(
            f"the Hub ({endpoint()}) could not be reached: {type(exc).__name__}: {exc}"
        ) from None
    files = tuple(
        RepoFile(
            sibling.rfilename,
            sibling.lfs.size if sibling.lfs else (sibling.size or 0),
            sibling.lfs.sha256 if sibling.lfs else (sibling.blob_id or ""),
        )
        for sibling in info.siblings or ()
    )
    return checked_listing(Listing(repo, revision, info.sha or "", files))


def check_revision(revision: str) -> str:
    """A branch, tag or commit as a path under refs/ may have it: no way out of the folder."""
    segments = revision.split("/")
    if (
        not revision
        or len(revision) > MAX_REVISION_CHARACTERS
        or any(segment in ("", ".", "..") for segment in segments)
        or any(character in revision for character in "\\\x00")
        or not revision.isprintable()
    ):
        raise errors.InvalidRevision(
            f"{escaped(revision)} is not a revision: a branch, tag or commit id, without "
            "empty, '.' or '..' parts"
        )
    return revision


def checked_listing(listing: Listing) -> Listing:
    """The Hub's (or a mirror's) word becomes file names in the cache: a commit that is not
    a commit id, a blob name that is not a hash, or a path that leaves its folder would let
    it write anywhere, so the whole listing is refused."""
    if not _COMMIT.fullmatch(listing.commit):
        raise errors.HubUnreachable(_unsafe(listing, f"commit {escaped(listing.commit)}"))
    for item in listing.files:
        if not _BLOB.fullmatch(item.etag):
            raise errors.HubUnreachable(_unsafe(listing, f"blob id {escaped(item.etag)}"))
        if not _is_safe_path(item.path):
            raise errors.HubUnreachable(_unsafe(listing, f"path {escaped(item.path)}"))
        if item.size < 0:
            raise errors.HubUnreachable(_unsafe(listing, f"size of {escaped(item.path)}"))
    return listing


def _is_safe_path(path: str) -> bool:
    segments = path.split("/")
    return (
        all(segment not in ("", ".", "..") for segment in segments)
        and all(len(segment.encode()) <= MAX_NAME_BYTES for segment in segments)
        and "\\" not in path
        and path.isprintable()
    )


def _unsafe(listing: Listing, what: str) -> str:
    return (
        f"the Hub ({endpoint()}) listed {listing.repo} with a {what} that is not safe to "
        "write to the cache; nothing was downloaded"
    )


def file_url(repo: str, commit: str, path: str) -> str:
    return hf_hub_url(repo, path, revision=commit)


def request_headers() -> dict[str, str]:
    """The Hub's headers for a file request: our token (HF_TOKEN) and user agent."""
    headers = build_hf_headers(library_name="vllm-bootstrap")
    headers["Accept-Encoding"] = "identity"  # the sizes we count are the files' own
    return headers


def _has_token() -> bool:
    return bool(os.environ.get("HF_TOKEN") or build_hf_headers().get("authorization"))


def _gated_message(repo: str) -> str:
    if _has_token():
        return (
            f"{repo} is gated or private and the token in HF_TOKEN may not read it: accept its "
            f"terms at https://huggingface.co/{repo} with the token's account, or set HF_TOKEN "
            "to a token that has access"
        )
    return (
        f"{repo} is gated or private: set HF_TOKEN to a Hugging Face token that has access "
        f"(and accept its terms at https://huggingface.co/{repo})"
    )


def _not_found_message(repo: str) -> str:
    hint = "" if _has_token() else "; if it is private, set HF_TOKEN to a token that can read it"
    return f"{repo} was not found on the Hub ({endpoint()}){hint}"

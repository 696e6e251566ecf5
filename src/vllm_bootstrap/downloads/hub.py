"""What the Hub says of a repository: its commit for a revision and its files with their
sizes, through huggingface_hub (which reads HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE), and
its refusals turned into errors that say what to do."""

from __future__ import annotations

import os
from dataclasses import dataclass

from huggingface_hub import HfApi, constants, hf_hub_url
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
    return Listing(repo, revision, info.sha or revision, files)


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

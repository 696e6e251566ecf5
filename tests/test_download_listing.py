"""The Hub's listing becomes file names in the cache: what a hostile or broken mirror could
send is refused whole, before anything is written."""

from __future__ import annotations

import pytest

from vllm_bootstrap.downloads import HubUnreachable, InvalidRevision
from vllm_bootstrap.downloads.hub import Listing, RepoFile, check_revision, checked_listing

COMMIT = "a" * 40
BLOB = "b" * 64


def listing(commit: str = COMMIT, path: str = "config.json", etag: str = BLOB) -> Listing:
    return Listing("org/tiny", "main", commit, (RepoFile(path, 10, etag),))


def test_a_sound_listing_passes() -> None:
    assert checked_listing(listing()) == listing()
    assert checked_listing(listing(path="1_Pooling/config.json", etag="c" * 40))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("commit", "../../../tmp/x"),
        ("commit", ""),
        ("etag", "../../escaped"),
        ("etag", ""),
        ("etag", "B" * 64),
        ("path", "../../etc/passwd"),
        ("path", "/etc/passwd"),
        ("path", "a/../../b"),
        ("path", "a//b"),
        ("path", "."),
        ("path", "x" * 256),
        ("path", "a\\b"),
        ("path", "a\x00b"),
    ],
)
def test_an_unsafe_listing_is_refused_whole(field: str, value: str) -> None:
    with pytest.raises(HubUnreachable, match="not safe to write to the cache"):
        checked_listing(listing(**{field: value}))


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/12", COMMIT])
def test_branches_tags_and_commits_are_revisions(revision: str) -> None:
    assert check_revision(revision) == revision


@pytest.mark.parametrize(
    "revision", ["", "..", "../x", "a/../b", "/abs", "a\\b", "x\x00", "x" * 300]
)
def test_a_revision_that_leaves_its_folder_is_refused(revision: str) -> None:
    with pytest.raises(InvalidRevision):
        check_revision(revision)

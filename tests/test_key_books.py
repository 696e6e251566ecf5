"""The keys' books in-process: usage written in groups that a failed write never counts
twice, a deleted key's late requests still written, and the admin key never kept empty."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from vllm_bootstrap.config import Settings
from vllm_bootstrap.keys.admin_key import with_admin_key
from vllm_bootstrap.keys.scopes import _JUDGED, JUDGED_PATH_CHARACTERS, required_scope
from vllm_bootstrap.keys.usage import UsageBook


def written(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT key_id, model, requests, prompt_tokens FROM key_usage ORDER BY key_id"
        ).fetchall()


def test_a_failed_write_is_retried_once_and_a_deleted_keys_late_requests_are_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    book = UsageBook(path, flush_seconds=1.0)
    book.count("key_a", "m", 10, 1)
    book.forget("key_a")  # deleted with a request still in flight...
    book.count("key_a", "m", 10, 1)  # ...which ends after
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # an operator's shell holding the database
    book.flush()  # cannot be written: kept for the next try
    book.flush()
    locker.execute("ROLLBACK")
    locker.close()
    book.flush()
    book.flush()  # nothing new: nothing written twice
    assert written(path) == [("key_a", "m", 2, 20)]
    assert list(book.totals()) == []  # its /metrics series ended with it


def test_an_empty_admin_key_file_is_replaced_not_taken_for_no_key(tmp_path: Path) -> None:
    settings = Settings(host="0.0.0.0", state_dir=tmp_path)
    settings.admin_key_path.write_text("\n")  # a write that a full disk cut short
    made = with_admin_key(settings)
    assert made.access_key
    assert settings.admin_key_path.read_text().strip() == made.access_key
    assert with_admin_key(settings).access_key == made.access_key  # and kept from then on


def test_empty_segments_need_the_admin_scope_and_long_paths_are_not_kept() -> None:
    assert required_scope("/v1//load_lora_adapter") == "admin"
    assert required_scope("/v1/chat/completions") == "inference"
    long_path = "/v1/" + "x" * JUDGED_PATH_CHARACTERS
    assert required_scope(long_path) == "inference"
    assert long_path not in _JUDGED

"""The batch database in-process (real SQLite, no server): what no HTTP round trip shows."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from vllm_bootstrap.batches.files import FileDirectory
from vllm_bootstrap.batches.record import Batch
from vllm_bootstrap.batches.store import (
    CLEAR_PAGE_ROWS,
    BatchStore,
    FileRecord,
    RequestRow,
    clear_requests,
)


@pytest.mark.anyio
async def test_clearing_a_batchs_rows_gives_the_event_loop_turns_between_pages(
    tmp_path: Path,
) -> None:
    store = BatchStore(tmp_path / "batches.sqlite3")
    rows = [
        RequestRow(line, line * 10, 10, "m", f"r{line}")
        for line in range(1, 2 * CLEAR_PAGE_ROWS + 2)
    ]
    assert store.add_requests("batch_a", rows) == []
    store.add_requests("batch_b", rows[:5])  # another batch's rows stay
    turns = 0
    clearing = asyncio.ensure_future(clear_requests(store, "batch_a"))
    while not clearing.done():
        turns += 1
        await asyncio.sleep(0)
    await clearing
    # Three pages, with the loop's turn between them: other requests were served meanwhile.
    assert turns >= 3
    assert store.pending("batch_a", None, 0, 10) == []
    assert len(store.pending("batch_b", None, 0, 10)) == 5
    store.close()


def test_a_version_1_database_gains_file_expiry_and_keeps_its_files(tmp_path: Path) -> None:
    path = tmp_path / "batches.sqlite3"
    with sqlite3.connect(path) as db:  # the files table as version 1 had it
        db.execute(
            "CREATE TABLE files (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL "
            "UNIQUE, purpose TEXT NOT NULL, filename TEXT NOT NULL, bytes INTEGER NOT NULL, "
            "created_at INTEGER NOT NULL, path TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO files (id, purpose, filename, bytes, created_at, path) "
            "VALUES ('file-old', 'batch', 'in.jsonl', 3, 100, '/nowhere')"
        )
        db.execute("PRAGMA user_version = 1")
    store = BatchStore(path)
    old = store.file("file-old")
    assert old is not None
    assert (old.expires_at, old.expired_at) == (None, None)
    store.add_file(FileRecord("file-new", "batch", "b.jsonl", 3, 100, tmp_path / "b", 101))
    assert [record.id for record in store.files_due(200, 10)] == ["file-new"]
    store.mark_expired("file-new", 200)
    assert store.files_due(200, 10) == []
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3


def test_a_version_2_database_gains_owners_and_keeps_its_files_and_batches(
    tmp_path: Path,
) -> None:
    path = tmp_path / "batches.sqlite3"
    with sqlite3.connect(path) as db:  # files and batches as version 2 had them
        db.execute(
            "CREATE TABLE files (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL "
            "UNIQUE, purpose TEXT NOT NULL, filename TEXT NOT NULL, bytes INTEGER NOT NULL, "
            "created_at INTEGER NOT NULL, path TEXT NOT NULL, expires_at INTEGER, "
            "expired_at INTEGER)"
        )
        db.execute(
            "CREATE TABLE batches (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL "
            "UNIQUE, input_file_id TEXT NOT NULL, status TEXT NOT NULL, document TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO files (id, purpose, filename, bytes, created_at, path) "
            "VALUES ('file-old', 'batch', 'in.jsonl', 3, 100, '/nowhere')"
        )
        db.execute("PRAGMA user_version = 2")
    store = BatchStore(path)
    old = store.file("file-old")
    assert old is not None
    assert old.owner is None  # the access key's, as every file was before scoped keys
    assert [record.id for record in store.files(None, 10, None, True).items] == ["file-old"]
    assert store.files(None, 10, None, True, owner="key_x").items == []
    store.add_file(
        FileRecord("file-new", "batch", "b.jsonl", 3, 100, tmp_path / "b", owner="key_x")
    )
    assert [record.id for record in store.files(None, 10, None, True, owner="key_x").items] == [
        "file-new"
    ]
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3


def test_expiry_skips_what_it_cannot_delete_and_what_a_running_batch_reads(
    tmp_path: Path,
) -> None:
    store = BatchStore(tmp_path / "batches.sqlite3")
    files = FileDirectory(store, tmp_path / "files", max_bytes=1024)
    stuck = tmp_path / "stuck"
    (stuck / "inside").mkdir(parents=True)  # a directory in the file's place: unlink fails
    plain = tmp_path / "plain"
    plain.write_text("x")
    used = tmp_path / "used"
    used.write_text("x")
    for file_id, path in [("file-stuck", stuck), ("file-plain", plain), ("file-used", used)]:
        store.add_file(FileRecord(file_id, "batch", "f.jsonl", 1, 100, path, 101))
    store.add_batch(Batch("batch_x", "file-used", "/v1/chat/completions", "24h", None, 100, 999))
    assert files.expire_due(200) == 1
    assert not plain.exists()
    assert stuck.exists()
    assert used.exists()
    assert store.file("file-plain").expired_at == 200  # type: ignore[union-attr]
    assert store.file("file-stuck").expired_at is None  # type: ignore[union-attr]
    assert [record.id for record in store.files_due(200, 10)] == ["file-stuck"]
    store.close()

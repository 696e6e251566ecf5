"""The batch database: file records, batch records, and one row per request line.

A separate SQLite file beside the launch database (`batches.sqlite3`). Each request line of
a batch has a row (where its body lies in the input file, its model, its custom_id) with a
`done` flag. Dispatching reads pending rows a page at a time and results flip the flag in the same
transaction that records the output files' new lengths, so after a kill -9 a batch resumes
with exactly the lines that had no recorded result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from vllm_bootstrap.batches.record import TERMINAL, Batch
from vllm_bootstrap.sqlite import Transaction, open_private

SCHEMA_VERSION = 3  # 2: files expire (expires_at, expired_at); 3: owners (scoped keys)
WRITE_RETRY_SECONDS = 0.25
T = TypeVar("T")
logger = logging.getLogger("vllm_bootstrap.batches")
_TERMINAL_LIST = ", ".join(f"'{status.value}'" for status in TERMINAL)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    path TEXT NOT NULL,
    expires_at INTEGER,
    expired_at INTEGER,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS expiring_files ON files(expires_at)
    WHERE expires_at IS NOT NULL AND expired_at IS NULL;
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    input_file_id TEXT NOT NULL,
    status TEXT NOT NULL,
    document TEXT NOT NULL,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS live_batch_inputs ON batches(input_file_id)
    WHERE status NOT IN ({_TERMINAL_LIST});
CREATE TABLE IF NOT EXISTS batch_requests (
    batch_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    model TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, line)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS batch_custom_ids ON batch_requests(batch_id, custom_id);
CREATE INDEX IF NOT EXISTS pending_requests ON batch_requests(batch_id, model, line)
    WHERE done = 0;
"""


class BatchWriteFailed(RuntimeError):
    """The batch database could not be written (a full disk, say); the message says why."""


async def until_written(write: Callable[[], T], batch_id: str) -> T:
    """`write()`, tried again until the database takes it: a locked or full database delays
    a batch, it does not end it (a server shutdown cancels the wait)."""
    warned = False
    while True:
        try:
            return write()
        except BatchWriteFailed as exc:
            if not warned:
                logger.warning("batch %s: waiting for the database: %s", batch_id, exc)
                warned = True
        await asyncio.sleep(WRITE_RETRY_SECONDS)


# Rows deleted per transaction when a batch's rows are cleared: a million at once held the
# event loop for about a second; a page takes a few milliseconds.
CLEAR_PAGE_ROWS = 5000


async def clear_requests(store: BatchStore, batch_id: str) -> None:
    """Every request row of the batch deleted, a page at a time with the event loop's turn
    in between (and each page tried again while the database is locked or full)."""
    while True:
        deleted = await until_written(
            lambda: store.clear_some_requests(batch_id, CLEAR_PAGE_ROWS), batch_id
        )
        if deleted < CLEAR_PAGE_ROWS:
            return
        await asyncio.sleep(0)


@dataclass(frozen=True)
class FileRecord:
    id: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    path: Path
    expires_at: int | None = None  # None: kept until deleted
    expired_at: int | None = None  # when its content was deleted for its expiry
    owner: str | None = None  # the scoped key that uploaded it (or whose batch wrote it)

    def to_public(self) -> dict[str, object]:
        expired = self.expired_at is not None
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "expired" if expired else "processed",
            "status_details": (
                f"expired at {self.expired_at}; its content was deleted" if expired else None
            ),
        }


@dataclass(frozen=True)
class RequestRow:
    line: int
    offset: int
    length: int
    model: str
    custom_id: str


@dataclass(frozen=True)
class Page:
    """One page of a listing, in OpenAI's cursor style."""

    items: list
    has_more: bool


class BatchStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_private(path)
        with Transaction(self._db):
            found = self._db.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the batch database {path} was written by a newer vllm-bootstrap "
                    f"(schema {found}, this one knows {SCHEMA_VERSION})"
                )
            self._add_expiry_columns()  # a version 1 database's files table lacks them
            self._add_owner_columns()  # and a version 2 one its owners
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _add_expiry_columns(self) -> None:
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(files)")}
        if columns and "expires_at" not in columns:
            self._db.execute("ALTER TABLE files ADD COLUMN expires_at INTEGER")
            self._db.execute("ALTER TABLE files ADD COLUMN expired_at INTEGER")

    def _add_owner_columns(self) -> None:
        for table in ("files", "batches"):
            columns = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if columns and "owner" not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN owner TEXT")

    def close(self) -> None:
        self._db.close()

    # --- files -----------------------------------------------------------------------

    def add_file(self, record: FileRecord) -> None:
        """Record a file; one recorded before under the same id keeps its place and date
        (a batch finalized again after a crash registers its files again)."""
        self._write(
            "INSERT INTO files (id, purpose, filename, bytes, created_at, path, expires_at, "
            "owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET bytes = excluded.bytes",
            (
                record.id,
                record.purpose,
                record.filename,
                record.bytes,
                record.created_at,
                str(record.path),
                record.expires_at,
                record.owner,
            ),
        )

    def file(self, file_id: str) -> FileRecord | None:
        row = self._db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        return _file(row) if row else None

    def files(
        self,
        purpose: str | None,
        limit: int,
        after: str | None,
        newest_first: bool,
        owner: str | None = None,
    ) -> Page:
        """A page of the files (`owner`'s only, when given)."""
        where, params = ["1"], []
        for column, value in (("purpose", purpose), ("owner", owner)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        rows = self._page("files", where, params, limit, after, newest_first)
        return Page([_file(row) for row in rows[:limit]], len(rows) > limit)

    def files_due(self, now: int, limit: int) -> list[FileRecord]:
        """Files past their expiry whose content is still kept, oldest expiry first; not
        the input of a batch that has not ended (it goes once the batch has)."""
        rows = self._db.execute(
            "SELECT * FROM files WHERE expires_at <= ? AND expired_at IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM batches WHERE batches.input_file_id = files.id "
            f"AND batches.status NOT IN ({_TERMINAL_LIST})) "
            "ORDER BY expires_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_file(row) for row in rows]

    def mark_expired(self, file_id: str, now: int) -> None:
        self._write("UPDATE files SET expired_at = ? WHERE id = ?", (now, file_id))

    def delete_file(self, file_id: str) -> None:
        self._write("DELETE FROM files WHERE id = ?", (file_id,))

    def file_in_use(self, file_id: str) -> bool:
        row = self._db.execute(
            f"SELECT 1 FROM batches WHERE input_file_id = ? AND status NOT IN ({_TERMINAL_LIST})",
            (file_id,),
        ).fetchone()
        return row is not None

    # --- batches ---------------------------------------------------------------------

    def add_batch(self, batch: Batch) -> None:
        self._write(
            "INSERT INTO batches (id, input_file_id, status, document, owner) "
            "VALUES (?, ?, ?, ?, ?)",
            (batch.id, batch.input_file_id, batch.status.value, _document(batch), batch.owner),
        )

    def save_batch(self, batch: Batch, done_lines: Iterable[int] = ()) -> None:
        """Write the batch's fields and mark `done_lines` done, in one transaction."""
        try:
            with Transaction(self._db):
                self._db.executemany(
                    "UPDATE batch_requests SET done = 1 WHERE batch_id = ? AND line = ?",
                    ((batch.id, line) for line in done_lines),
                )
                self._db.execute(
                    "UPDATE batches SET status = ?, document = ? WHERE id = ?",
                    (batch.status.value, _document(batch), batch.id),
                )
        except sqlite3.Error as exc:
            raise BatchWriteFailed(self._failure(exc)) from None

    def batch(self, batch_id: str) -> Batch | None:
        row = self._db.execute("SELECT document FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return Batch.from_document(json.loads(row["document"])) if row else None

    def batches(self, limit: int, after: str | None, owner: str | None = None) -> Page:
        """A page of the batches, newest first (`owner`'s only, when given)."""
        where, params = (["owner = ?"], [owner]) if owner is not None else (["1"], [])
        rows = self._page("batches", where, params, limit, after, newest_first=True)
        return Page(
            [Batch.from_document(json.loads(row["document"])) for row in rows[:limit]],
            len(rows) > limit,
        )

    def unfinished_batches(self) -> list[Batch]:
        rows = self._db.execute(
            f"SELECT document FROM batches WHERE status NOT IN ({_TERMINAL_LIST}) ORDER BY seq"
        ).fetchall()
        return [Batch.from_document(json.loads(row["document"])) for row in rows]

    # --- request lines ---------------------------------------------------------------

    def add_requests(self, batch_id: str, rows: list[RequestRow]) -> list[int]:
        """Record request lines; the lines whose custom_id was already taken (not recorded)."""
        repeats = []
        try:
            with Transaction(self._db):
                for r in rows:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO batch_requests (batch_id, line, offset, length, "
                        "model, custom_id) VALUES (?, ?, ?, ?, ?, ?)",
                        (batch_id, r.line, r.offset, r.length, r.model, r.custom_id),
                    )
                    if cursor.rowcount == 0:
                        repeats.append(r.line)
        except sqlite3.Error as exc:
            raise BatchWriteFailed(self._failure(exc)) from None
        return repeats

    def clear_some_requests(self, batch_id: str, limit: int) -> int:
        """Delete up to `limit` of the batch's request rows; how many went."""
        try:
            with Transaction(self._db):
                cursor = self._db.execute(
                    "DELETE FROM batch_requests WHERE batch_id = ? AND line IN "
                    "(SELECT line FROM batch_requests WHERE batch_id = ? LIMIT ?)",
                    (batch_id, batch_id, limit),
                )
        except sqlite3.Error as exc:
            raise BatchWriteFailed(self._failure(exc)) from None
        return cursor.rowcount

    def pending_models(self, batch_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT DISTINCT model FROM batch_requests WHERE batch_id = ? AND done = 0",
            (batch_id,),
        ).fetchall()
        return sorted(row["model"] for row in rows)

    def pending(self, batch_id: str, model: str | None, after_line: int, limit: int) -> list:
        """Up to `limit` lines without a result, after `after_line`, in file order."""
        model_clause = "AND model = ?" if model is not None else ""
        params = (
            (batch_id, model, after_line, limit)
            if model is not None
            else (
                batch_id,
                after_line,
                limit,
            )
        )
        rows = self._db.execute(
            "SELECT line, offset, length, model, custom_id FROM batch_requests "
            f"WHERE batch_id = ? {model_clause} AND done = 0 AND line > ? "
            "ORDER BY line LIMIT ?",
            params,
        ).fetchall()
        return [RequestRow(**dict(row)) for row in rows]

    # --- helpers ---------------------------------------------------------------------

    def _page(
        self,
        table: str,
        where: list[str],
        params: list,
        limit: int,
        after: str | None,
        newest_first: bool,
    ) -> list[sqlite3.Row]:
        if after is not None:
            where.append(
                f"seq {'<' if newest_first else '>'} "
                f"coalesce((SELECT seq FROM {table} WHERE id = ?), "
                f"{'-1' if newest_first else '1e18'})"
            )
            params.append(after)
        order = "DESC" if newest_first else "ASC"
        return self._db.execute(
            f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT ?",
            (*params, limit + 1),
        ).fetchall()

    def _write(self, statement: str, params: tuple) -> None:
        try:
            with Transaction(self._db):
                self._db.execute(statement, params)
        except sqlite3.Error as exc:
            raise BatchWriteFailed(self._failure(exc)) from None

    def _failure(self, exc: sqlite3.Error) -> str:
        return f"the batch database {self.path} could not be written ({exc})"


def _file(row: sqlite3.Row) -> FileRecord:
    return FileRecord(
        row["id"],
        row["purpose"],
        row["filename"],
        row["bytes"],
        row["created_at"],
        Path(row["path"]),
        row["expires_at"],
        row["expired_at"],
        row["owner"],
    )


def _document(batch: Batch) -> str:
    return json.dumps(batch.to_document(), separators=(",", ":"))

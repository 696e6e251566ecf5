"""SQLite habits shared by the state databases: how they are opened, and transactions."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path


def open_private(path: Path) -> sqlite3.Connection:
    """A database only this user may read (it can hold tokens), in WAL mode, autocommit."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        # Made private before SQLite creates it. Never open and close a database file that
        # is already open: closing any descriptor of a file drops every POSIX lock this
        # process holds on it, those of the connections already open included.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    # Only this process writes; a lock held by another (an operator's sqlite3 shell) must
    # not stall the event loop for long: the write fails fast and is retried later.
    db.execute("PRAGMA busy_timeout = 200")
    return db


class Transaction:
    """`with Transaction(db):` one BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self._roll_back()
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._roll_back()  # a failed COMMIT (a full disk) leaves the transaction open
            raise

    def _roll_back(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

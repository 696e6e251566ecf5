"""Bringing a state database written by an older release up to the current schema.

Version 1 stored a launch as one column per field; version 2 added the restart columns;
version 3 stores the record as one JSON document with generated columns; version 4 keys
GPU leases by (node, GPU), for the boxes of a cluster. Runs inside the
store's opening transaction, so a failed migration leaves the old database untouched.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

# Columns added in version 2, for databases written by version 1.
_V2_COLUMNS = [
    "restart_policy TEXT NOT NULL DEFAULT 'never'",
    "max_restarts INTEGER NOT NULL DEFAULT 0",
    "restart_backoff_seconds REAL NOT NULL DEFAULT 1.0",
    "restart_count INTEGER NOT NULL DEFAULT 0",
    "last_error TEXT",
    "spawned_at REAL",
]
# Version 1 and 2 columns that held JSON text.
_JSON_COLUMNS = ("gpu_ids", "command", "extra_args", "env", "served_models")


def migrate(db: sqlite3.Connection, path: Path, version: int, schema: str) -> None:
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > version:
        raise RuntimeError(
            f"the state database {path} was written by a newer vllm-bootstrap "
            f"(schema {found}, this one knows {version})"
        )
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "launches" in tables and found < 3:
        _from_columns_to_documents(db, found, schema)
    elif "launches" in tables and found == 3:
        _leases_per_node(db, schema)
    else:
        _create(db, schema)
    db.execute(f"PRAGMA user_version = {version}")


def _create(db: sqlite3.Connection, schema: str) -> None:
    for statement in schema.split(";"):
        if statement.strip():
            db.execute(statement)


def _from_columns_to_documents(db: sqlite3.Connection, found: int, schema: str) -> None:
    if found <= 1:
        for column in _V2_COLUMNS:
            db.execute(f"ALTER TABLE launches ADD COLUMN {column}")
    launches = [_document(row) for row in db.execute("SELECT * FROM launches").fetchall()]
    leases = db.execute("SELECT gpu_index, launch_id FROM gpu_leases").fetchall()
    db.execute("DROP TABLE gpu_leases")
    db.execute("DROP TABLE launches")
    _create(db, schema)
    db.executemany(
        "INSERT INTO launches (launch_id, record) VALUES (?, ?)",
        [(document["launch_id"], json.dumps(document)) for document in launches],
    )
    db.executemany(
        "INSERT INTO gpu_leases (gpu_index, launch_id) VALUES (?, ?)",
        [tuple(lease) for lease in leases],
    )


def _leases_per_node(db: sqlite3.Connection, schema: str) -> None:
    """Version 3's leases were this box's alone: they keep their GPUs, on this box."""
    leases = db.execute("SELECT gpu_index, launch_id FROM gpu_leases").fetchall()
    db.execute("DROP TABLE gpu_leases")
    _create(db, schema)
    db.executemany(
        "INSERT INTO gpu_leases (gpu_index, launch_id) VALUES (?, ?)",
        [tuple(lease) for lease in leases],
    )


def _document(row: sqlite3.Row) -> dict[str, Any]:
    document = dict(row)
    for column in _JSON_COLUMNS:
        document[column] = json.loads(document[column])
    return document

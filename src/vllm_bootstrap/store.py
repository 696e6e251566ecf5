"""The SQLite state store: one row per launch, one lease row per owned GPU.

GPU ownership is enforced by the database as well as by the supervisor: `gpu_leases` has the
GPU index as its primary key and a partial unique index covers the ports of live launches, so
no bug above this layer can hand one GPU or port to two launches. Every change is one
transaction in WAL mode, so a kill -9 at any moment leaves the previous or the next state.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from vllm_bootstrap.launch import TERMINAL_STATES, Launch, LaunchState, RestartPolicy

SCHEMA_VERSION = 2

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS launches (
    launch_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    gpu_ids TEXT NOT NULL,
    port INTEGER NOT NULL,
    host TEXT NOT NULL,
    command TEXT NOT NULL,
    log_path TEXT NOT NULL,
    extra_args TEXT NOT NULL,
    env TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ready_at REAL,
    pid INTEGER,
    process_start_ticks INTEGER,
    return_code INTEGER,
    error TEXT,
    served_models TEXT NOT NULL,
    restart_policy TEXT NOT NULL DEFAULT 'never',
    max_restarts INTEGER NOT NULL DEFAULT 0,
    restart_backoff_seconds REAL NOT NULL DEFAULT 1.0,
    restart_count INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    spawned_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS live_launch_port ON launches(port)
    WHERE state NOT IN ({", ".join(f"'{state.value}'" for state in TERMINAL_STATES)});
CREATE TABLE IF NOT EXISTS gpu_leases (
    gpu_index INTEGER PRIMARY KEY,
    launch_id TEXT NOT NULL REFERENCES launches(launch_id)
);
"""
# Columns added after version 1, for databases written by an older release.
_MIGRATIONS = {
    2: [
        "ALTER TABLE launches ADD COLUMN restart_policy TEXT NOT NULL DEFAULT 'never'",
        "ALTER TABLE launches ADD COLUMN max_restarts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE launches ADD COLUMN restart_backoff_seconds REAL NOT NULL DEFAULT 1.0",
        "ALTER TABLE launches ADD COLUMN restart_count INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE launches ADD COLUMN last_error TEXT",
        "ALTER TABLE launches ADD COLUMN spawned_at REAL",
    ]
}

_COLUMNS = (
    "launch_id, model, gpu_ids, port, host, command, log_path, extra_args, env, state, "
    "created_at, updated_at, ready_at, pid, process_start_ticks, return_code, error, "
    "served_models, restart_policy, max_restarts, restart_backoff_seconds, restart_count, "
    "last_error, spawned_at"
)
_PLACEHOLDERS = ", ".join("?" * len(_COLUMNS.split(",")))


class ResourceTaken(RuntimeError):
    """A GPU or port is already leased to a live launch."""


class StateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Launch environments can hold tokens: keep the database private to this user.
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._migrate()

    def _migrate(self) -> None:
        with self._transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            fresh = (
                self._db.execute(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'launches'"
                ).fetchone()[0]
                == 0
            )
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the state database {self.path} was written by a newer vllm-bootstrap "
                    f"(schema {version}, this one knows {SCHEMA_VERSION})"
                )
            if not fresh:
                for step in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        self._db.execute(statement)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def insert(self, launch: Launch) -> None:
        """Record a new launch and lease its GPUs, all or nothing."""
        try:
            with self._transaction():
                self._db.execute(
                    f"INSERT INTO launches ({_COLUMNS}) VALUES ({_PLACEHOLDERS})",
                    _row(launch),
                )
                self._db.executemany(
                    "INSERT INTO gpu_leases (gpu_index, launch_id) VALUES (?, ?)",
                    [(gpu, launch.launch_id) for gpu in launch.gpu_ids],
                )
        except sqlite3.IntegrityError as exc:
            raise ResourceTaken(str(exc)) from None

    def save(self, launch: Launch) -> None:
        """Write a launch's current fields; a terminal launch gives its leases back."""
        row = _row(launch)
        with self._transaction():
            self._db.execute(
                f"UPDATE launches SET ({_COLUMNS}) = ({_PLACEHOLDERS}) WHERE launch_id = ?",
                (*row, launch.launch_id),
            )
            if launch.is_terminal:
                self._db.execute("DELETE FROM gpu_leases WHERE launch_id = ?", (launch.launch_id,))

    def load_all(self) -> list[Launch]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM launches ORDER BY created_at").fetchall()
        return [_launch(row) for row in rows]

    def leases(self) -> dict[int, str]:
        rows = self._db.execute("SELECT gpu_index, launch_id FROM gpu_leases").fetchall()
        return {row["gpu_index"]: row["launch_id"] for row in rows}

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _row(launch: Launch) -> tuple[object, ...]:
    return (
        launch.launch_id,
        launch.model,
        json.dumps(launch.gpu_ids),
        launch.port,
        launch.host,
        json.dumps(launch.command),
        str(launch.log_path),
        json.dumps(launch.extra_args),
        json.dumps(launch.env),
        launch.state.value,
        launch.created_at,
        launch.updated_at,
        launch.ready_at,
        launch.pid,
        launch.process_start_ticks,
        launch.return_code,
        launch.error,
        json.dumps(launch.served_models),
        launch.restart_policy.value,
        launch.max_restarts,
        launch.restart_backoff_seconds,
        launch.restart_count,
        launch.last_error,
        launch.spawned_at,
    )


def _launch(row: sqlite3.Row) -> Launch:
    return Launch(
        launch_id=row["launch_id"],
        model=row["model"],
        gpu_ids=json.loads(row["gpu_ids"]),
        port=row["port"],
        host=row["host"],
        command=json.loads(row["command"]),
        log_path=Path(row["log_path"]),
        extra_args=json.loads(row["extra_args"]),
        env=json.loads(row["env"]),
        state=LaunchState(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        ready_at=row["ready_at"],
        pid=row["pid"],
        process_start_ticks=row["process_start_ticks"],
        return_code=row["return_code"],
        error=row["error"],
        served_models=json.loads(row["served_models"]),
        restart_policy=RestartPolicy(row["restart_policy"]),
        max_restarts=row["max_restarts"],
        restart_backoff_seconds=row["restart_backoff_seconds"],
        restart_count=row["restart_count"],
        last_error=row["last_error"],
        spawned_at=row["spawned_at"],
    )

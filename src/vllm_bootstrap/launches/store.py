"""The SQLite state store: one JSON document per launch, one lease row per owned GPU.

A launch is stored as its record's document (`Launch.to_document`); the columns that are
queried or constrained (state, port, ...) are generated from it by SQLite, so no field is
written twice. GPU ownership is enforced by the database as well as by the supervisor:
`gpu_leases` has the (node, GPU index) pair as its primary key (the node is '' for this
box, a Ray node id for another box of the cluster) and a partial unique index covers the
ports of live launches, so no bug above this layer can hand one GPU or port to two launches.
Every change is one transaction in WAL mode, so a kill -9 at any moment leaves the previous
or the next state.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from vllm_bootstrap.launches import migrations
from vllm_bootstrap.launches.record import Launch
from vllm_bootstrap.launches.states import TERMINAL_STATES, LaunchState
from vllm_bootstrap.sqlite import Transaction, open_private

SCHEMA_VERSION = 4  # 4: GPU leases per (node, GPU)
THIS_BOX = ""  # the lease table's node for this box's own GPUs


def _generated(name: str, kind: str) -> str:
    return f"{name} {kind} GENERATED ALWAYS AS (json_extract(record, '$.{name}')) VIRTUAL"


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS launches (
    launch_id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    {_generated("state", "TEXT")},
    {_generated("port", "INTEGER")},
    {_generated("model", "TEXT")},
    {_generated("pid", "INTEGER")},
    {_generated("created_at", "REAL")}
);
CREATE UNIQUE INDEX IF NOT EXISTS live_launch_port ON launches(port)
    WHERE state NOT IN ({", ".join(f"'{state.value}'" for state in TERMINAL_STATES)});
CREATE TABLE IF NOT EXISTS gpu_leases (
    node_id TEXT NOT NULL DEFAULT '',
    gpu_index INTEGER NOT NULL,
    launch_id TEXT NOT NULL REFERENCES launches(launch_id),
    PRIMARY KEY (node_id, gpu_index)
);
"""


class ResourceTaken(RuntimeError):
    """A GPU or port is already leased to a live launch."""


class StateWriteFailed(RuntimeError):
    """The database could not be written (a full disk, say); the message says why."""


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Launch environments can hold tokens: the database is private to this user.
        self._db = open_private(path)
        with self._transaction():
            migrations.migrate(self._db, path, SCHEMA_VERSION, SCHEMA)
        self._db.execute("PRAGMA foreign_keys = ON")

    def close(self) -> None:
        self._db.close()

    def insert(self, launch: Launch) -> None:
        """Record a new launch and lease its GPUs, all or nothing."""
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT INTO launches (launch_id, record) VALUES (?, ?)",
                    (launch.launch_id, _document(launch)),
                )
                self._db.executemany(_INSERT_LEASE, _lease_rows(launch))
        except sqlite3.IntegrityError as exc:
            raise ResourceTaken(str(exc)) from None
        except sqlite3.Error as exc:
            raise StateWriteFailed(self._write_failure(exc)) from None

    def save(self, launch: Launch) -> None:
        """Write a launch's current fields and, in the same transaction, its GPU leases: none
        once it ended or fell asleep, its GPUs again when it wakes (ResourceTaken if another
        launch holds one)."""
        try:
            with self._transaction():
                self._db.execute(
                    "UPDATE launches SET record = ? WHERE launch_id = ?",
                    (_document(launch), launch.launch_id),
                )
                if not launch.holds_gpus:
                    self._db.execute(
                        "DELETE FROM gpu_leases WHERE launch_id = ?", (launch.launch_id,)
                    )
                elif launch.state is LaunchState.WAKING:
                    self._lease(launch)
        except sqlite3.IntegrityError as exc:
            raise ResourceTaken(str(exc)) from None
        except sqlite3.Error as exc:
            raise StateWriteFailed(self._write_failure(exc)) from None

    def reset_leases(self, launches: list[Launch]) -> None:
        """Rewrite the lease table from the launches that hold GPUs (at start-up): whatever
        a crash left half written, the leases follow the records."""
        try:
            with self._transaction():
                self._db.execute("DELETE FROM gpu_leases")
                self._db.executemany(
                    _INSERT_LEASE.replace("INSERT", "INSERT OR IGNORE"),
                    [
                        row
                        for launch in launches
                        if launch.holds_gpus
                        for row in _lease_rows(launch)
                    ],
                )
        except sqlite3.Error as exc:
            raise StateWriteFailed(self._write_failure(exc)) from None

    def _lease(self, launch: Launch) -> None:
        self._db.execute("DELETE FROM gpu_leases WHERE launch_id = ?", (launch.launch_id,))
        self._db.executemany(_INSERT_LEASE, _lease_rows(launch))

    def _write_failure(self, exc: sqlite3.Error) -> str:
        return f"the state database {self.path} could not be written ({exc})"

    def load_all(self) -> list[Launch]:
        rows = self._db.execute("SELECT record FROM launches ORDER BY created_at").fetchall()
        return [Launch.from_document(json.loads(row["record"])) for row in rows]

    def leases(self, node_id: str | None = None) -> dict[int, str]:
        """GPU index -> the launch leasing it, on node `node_id` (None: this box)."""
        rows = self._db.execute(
            "SELECT gpu_index, launch_id FROM gpu_leases WHERE node_id = ?",
            (node_id or THIS_BOX,),
        ).fetchall()
        return {row["gpu_index"]: row["launch_id"] for row in rows}

    def _transaction(self) -> Transaction:
        return Transaction(self._db)


_INSERT_LEASE = "INSERT INTO gpu_leases (node_id, gpu_index, launch_id) VALUES (?, ?, ?)"


def _lease_rows(launch: Launch) -> list[tuple[str, int, str]]:
    node = launch.node_id or THIS_BOX
    rows = [(node, gpu, launch.launch_id) for gpu in launch.gpu_ids]
    for other, gpus in launch.other_node_gpus.items():
        rows += [(other, gpu, launch.launch_id) for gpu in gpus]
    return rows


def _document(launch: Launch) -> str:
    return json.dumps(launch.to_document(), separators=(",", ":"))

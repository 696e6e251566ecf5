"""Model profiles in the state database: one JSON document per profile, by name."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from vllm_bootstrap.models.profile import ModelProfile
from vllm_bootstrap.sqlite import Transaction, open_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS model_profiles (
    name TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    source TEXT NOT NULL
)
"""


class ProfileWriteFailed(RuntimeError):
    """The state database could not be written; the message says why."""


class ProfileStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_private(path)
        with Transaction(self._db):
            self._db.execute(SCHEMA)
        # /v1 asks for a profile on every request for a model no launch serves: from memory.
        self._cache = {profile.name: profile for profile in self._load_all()}

    def close(self) -> None:
        self._db.close()

    def put(self, profile: ModelProfile, source: str) -> None:
        """Add or replace a profile; `source` says where it came from ("api", "file")."""
        self._write(
            "INSERT INTO model_profiles (name, document, source) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET document = excluded.document, "
            "source = excluded.source",
            (profile.name, json.dumps(profile.to_document()), source),
        )
        self._cache[profile.name] = profile

    def delete(self, name: str) -> bool:
        try:
            with Transaction(self._db):
                cursor = self._db.execute("DELETE FROM model_profiles WHERE name = ?", (name,))
        except sqlite3.Error as exc:
            raise ProfileWriteFailed(self._failure(exc)) from None
        self._cache.pop(name, None)
        return cursor.rowcount > 0

    def get(self, name: str) -> ModelProfile | None:
        return self._cache.get(name)

    def all(self) -> list[ModelProfile]:
        return [self._cache[name] for name in sorted(self._cache)]

    def _load_all(self) -> list[ModelProfile]:
        rows = self._db.execute("SELECT document FROM model_profiles ORDER BY name").fetchall()
        return [ModelProfile.model_validate(json.loads(row["document"])) for row in rows]

    def _write(self, statement: str, params: tuple) -> None:
        try:
            with Transaction(self._db):
                self._db.execute(statement, params)
        except sqlite3.Error as exc:
            raise ProfileWriteFailed(self._failure(exc)) from None

    def _failure(self, exc: sqlite3.Error) -> str:
        return f"the state database {self.path} could not be written ({exc})"

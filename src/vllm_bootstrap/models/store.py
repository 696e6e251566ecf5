"""Model profiles in the state database: one JSON document per profile, by name."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from vllm_bootstrap.log_text import escaped
from vllm_bootstrap.models.profile import ModelProfile
from vllm_bootstrap.sqlite import Transaction, open_private

logger = logging.getLogger("vllm_bootstrap.models")

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
        """Every stored profile that today's rules accept. One stored under an older, looser
        rule (a name with an empty or '..' segment, say) is left in the database, not served,
        and named in the log: refusing to start would make DELETE unreachable."""
        rows = self._db.execute("SELECT name, document FROM model_profiles ORDER BY name")
        profiles = []
        for row in rows.fetchall():
            try:
                profiles.append(ModelProfile.model_validate(json.loads(row["document"])))
            except (ValueError, RecursionError) as exc:  # pydantic's ValidationError included
                logger.warning(
                    "model profile %s in %s is not valid any more and is not served (%s): "
                    "DELETE /models/<name> removes it; PUT it again under a valid name",
                    escaped(repr(row["name"])),
                    self.path,
                    escaped(_first_line(exc)),
                )
        return profiles

    def _write(self, statement: str, params: tuple) -> None:
        try:
            with Transaction(self._db):
                self._db.execute(statement, params)
        except sqlite3.Error as exc:
            raise ProfileWriteFailed(self._failure(exc)) from None

    def _failure(self, exc: sqlite3.Error) -> str:
        return f"the state database {self.path} could not be written ({exc})"


def _first_line(exc: Exception) -> str:
    """pydantic's errors run to many lines; the first problem says enough for a log line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)

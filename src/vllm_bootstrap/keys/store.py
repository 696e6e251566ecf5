"""The scoped keys: a table in the state database, and all of it in memory for the check
every request makes (a dict lookup by the presented secret's hash).

A deleted key's row stays, marked deleted, so usage it left is still shown by its name; it
is out of the lookup at once, so its next request is refused, on a kept-alive connection
too.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from vllm_bootstrap.keys.record import (
    SHOWN_PREFIX_CHARACTERS,
    ApiKey,
    digest_of,
    hash_of,
    new_key_id,
    new_secret,
)
from vllm_bootstrap.sqlite import Transaction, open_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    document TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS live_key_names ON api_keys(name) WHERE deleted_at IS NULL;
"""
# What PATCH may change (the id, secret and creation time stay).
EDITABLE = (
    "name",
    "scopes",
    "models",
    "max_concurrency",
    "requests_per_minute",
    "tokens_per_minute",
    "priority",
    "expires_at",
)


class NameTaken(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"a key named {name!r} exists already: names are unique")


class KeyWriteFailed(RuntimeError):
    """The state database could not take a key's change (locked, or a full disk)."""


class KeyNotFound(LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no key with id (or name) {key_id!r}")


class KeyStore:
    def __init__(self, path: Path) -> None:
        self._db = open_private(path)
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        self._by_hash: dict[bytes, ApiKey] = {}  # by the digest (the stored hash's bytes)
        self._by_id: dict[str, ApiKey] = {}
        self._names: dict[str, str] = {}  # every key's name by id, deleted ones too
        for row in self._db.execute("SELECT * FROM api_keys ORDER BY created_at"):
            key = _key(row)
            self._names[key.id] = key.name
            if row["deleted_at"] is None:
                self._remember(key)

    def close(self) -> None:
        self._db.close()

    # ----------------------------------------------------------------- the hot path

    def find(self, presented: bytes) -> ApiKey | None:
        """The live key whose secret was presented (expired ones included: the caller says
        so). Looked up by the secret's hash, so no comparison runs on the secret itself."""
        return self._by_hash.get(digest_of(presented))

    def current(self, key_id: str) -> ApiKey | None:
        """The key as it is now (edits apply to requests and batch lines from then on)."""
        return self._by_id.get(key_id)

    def name_of(self, key_id: str) -> str:
        return self._names.get(key_id, key_id)

    def id_of(self, id_or_name: str) -> str | None:
        """The key an id or a name means: a live key's name first, then a deleted one's."""
        if id_or_name in self._names:
            return id_or_name
        for key in self._by_id.values():
            if key.name == id_or_name:
                return key.id
        deleted = [key_id for key_id, name in self._names.items() if name == id_or_name]
        return deleted[-1] if deleted else None

    # ----------------------------------------------------------------- the admin's routes

    def all(self) -> list[ApiKey]:
        return sorted(self._by_id.values(), key=lambda key: (key.created_at, key.id))

    def get(self, key_id: str) -> ApiKey:
        key = self._by_id.get(key_id)
        if key is None:
            raise KeyNotFound(key_id)
        return key

    def create(self, fields: dict[str, Any]) -> tuple[ApiKey, str]:
        """A new key and its secret (never kept: this is the only time it is known)."""
        secret = new_secret()
        key = ApiKey(
            id=new_key_id(),
            prefix=secret[:SHOWN_PREFIX_CHARACTERS],
            secret_hash=hash_of(secret.encode()),
            created_at=int(time.time()),
            **fields,
        )
        self._check_name(key.name, key.id)
        with self._writing():
            self._db.execute(
                "INSERT INTO api_keys (id, name, prefix, secret_hash, document, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key.id, key.name, key.prefix, key.secret_hash, _document(key), key.created_at),
            )
        self._remember(key)
        return key, secret

    def update(self, key_id: str, changes: dict[str, Any]) -> ApiKey:
        key = replace(self.get(key_id), **changes)
        self._check_name(key.name, key.id)
        with self._writing():
            self._db.execute(
                "UPDATE api_keys SET name = ?, document = ? WHERE id = ?",
                (key.name, _document(key), key.id),
            )
        self._remember(key)
        return key

    def delete(self, key_id: str) -> ApiKey:
        key = self.get(key_id)
        with self._writing():
            self._db.execute(
                "UPDATE api_keys SET deleted_at = ? WHERE id = ?", (int(time.time()), key_id)
            )
        del self._by_id[key_id]
        del self._by_hash[bytes.fromhex(key.secret_hash)]
        return key

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One transaction; KeyWriteFailed (nothing changed) when the database refuses it."""
        try:
            with Transaction(self._db):
                yield
        except sqlite3.Error as exc:
            raise KeyWriteFailed(f"the state database could not be written ({exc})") from None

    def _check_name(self, name: str, key_id: str) -> None:
        if any(other.name == name and other.id != key_id for other in self._by_id.values()):
            raise NameTaken(name)

    def _remember(self, key: ApiKey) -> None:
        self._by_id[key.id] = key
        self._by_hash[bytes.fromhex(key.secret_hash)] = key
        self._names[key.id] = key.name


def _document(key: ApiKey) -> str:
    public = key.to_public()
    return json.dumps({name: public[name] for name in EDITABLE})


def _key(row: sqlite3.Row) -> ApiKey:
    document = json.loads(row["document"])
    models = document["models"]
    return ApiKey(
        id=row["id"],
        name=document["name"],
        prefix=row["prefix"],
        secret_hash=row["secret_hash"],
        scopes=frozenset(document["scopes"]),
        models=frozenset(models) if models is not None else None,
        max_concurrency=document["max_concurrency"],
        requests_per_minute=document["requests_per_minute"],
        tokens_per_minute=document["tokens_per_minute"],
        priority=document["priority"],
        expires_at=document["expires_at"],
        created_at=row["created_at"],
    )

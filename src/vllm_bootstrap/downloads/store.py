"""Downloads in the state database, so a restart finds the ones under way and resumes them."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from vllm_bootstrap.downloads.record import Download
from vllm_bootstrap.sqlite import open_private

logger = logging.getLogger("vllm_bootstrap.downloads")
SCHEMA = """
CREATE TABLE IF NOT EXISTS downloads (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    document TEXT NOT NULL
);
"""
# Finished downloads kept for GET /downloads; older ones are forgotten.
KEPT_FINISHED = 200


class DownloadStore:
    def __init__(self, path: Path) -> None:
        self._db = open_private(path)
        self._db.executescript(SCHEMA)

    def save(self, download: Download) -> bool:
        """Write it; False when the database refuses (a full disk): the download goes on,
        and only a restart in the meantime would lose its record (never its files)."""
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO downloads (id, created_at, document) VALUES (?, ?, ?)",
                (download.download_id, download.created_at, json.dumps(download.to_document())),
            )
            self._db.execute(
                "DELETE FROM downloads WHERE id IN (SELECT id FROM downloads "
                "WHERE json_extract(document, '$.finished_at') IS NOT NULL "
                "ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
                (KEPT_FINISHED,),
            )
        except sqlite3.Error:
            return False
        return True

    def load_all(self) -> list[Download]:
        """Every stored download; a row that cannot be read (edited by hand, from a newer
        version) is skipped with a warning rather than stopping start-up."""
        rows = self._db.execute("SELECT id, document FROM downloads ORDER BY created_at")
        downloads = []
        for row in rows.fetchall():
            try:
                downloads.append(Download.from_document(json.loads(row["document"])))
            except (ValueError, TypeError, KeyError) as exc:
                logger.warning(
                    "download %s skipped: its record cannot be read (%s)", row["id"], exc
                )
        return downloads

    def close(self) -> None:
        self._db.close()

"""Files: uploads (`purpose=batch`) and the output and error files batches produce.

A file's bytes live in `<state dir>/files/<id>`; its record in the batch database. An
upload is written under a temporary name and renamed into place only once complete, so a
crash mid-upload never leaves a file that looks whole.

A file may expire (OpenAI's `expires_after` on an upload, a batch's `output_expires_after`
or the server's default retention for output files): once past it, its bytes are deleted
and its record stays, saying so. The input of a batch that has not ended is kept until it
has.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import secrets
import time
from pathlib import Path

from python_multipart.exceptions import FormParserError
from starlette.types import Receive

from vllm_bootstrap.batches.multipart import (
    StorageFull,
    UploadRefused,
    boundary_of,
    receive_upload,
)
from vllm_bootstrap.batches.store import BatchStore, FileRecord, Page

logger = logging.getLogger("vllm_bootstrap.batches")
UPLOAD_PURPOSES = ("batch",)
OUTPUT_PURPOSE = "batch_output"
# OpenAI takes 3600 to 2592000 seconds (30 days); shorter ones are allowed here.
MAX_EXPIRY_SECONDS = 2_592_000
EXPIRY_PAGE = 100


class FileExpired(LookupError):
    """The file is past its expiry: its content is deleted, or about to be."""

    def __init__(self, record: FileRecord) -> None:
        when = record.expired_at or record.expires_at
        super().__init__(f"file {record.id} expired at {when} and its content is deleted")


def check_not_expired(record: FileRecord) -> None:
    """FileExpired once `record` is past its expiry, deleted by the sweeper yet or not."""
    if record.expired_at is not None or (
        record.expires_at is not None and record.expires_at <= time.time()
    ):
        raise FileExpired(record)


class FileInUse(RuntimeError):
    """The file is the input of a batch that has not ended."""


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


class FileDirectory:
    def __init__(self, store: BatchStore, folder: Path, max_bytes: int) -> None:
        self._store = store
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in folder.glob("*.partial"):  # uploads cut off by a crash
            leftover.unlink(missing_ok=True)

    async def upload(
        self, receive: Receive, content_type: bytes, owner: str | None = None
    ) -> FileRecord:
        """Take a multipart upload (`owner`'s: a scoped key's); raises UploadRefused saying
        what to fix."""
        boundary = boundary_of(content_type)
        file_id = new_id("file")
        partial = self.folder / f"{file_id}.partial"
        try:
            upload = await receive_upload(receive, boundary, partial, self.max_bytes)
        except FormParserError as exc:  # the body, or its boundary, is malformed
            raise UploadRefused(f"malformed multipart body: {exc}") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull("no space left on the server's disk for the file") from None
            raise
        try:
            purpose = _check(upload.fields.get("purpose"), upload.filename)
            keep_seconds = _expires_after(upload.fields)
            now = int(time.time())
            record = FileRecord(
                file_id,
                purpose,
                upload.filename or "",
                upload.bytes,
                now,
                self.folder / file_id,
                now + keep_seconds if keep_seconds is not None else None,
                owner=owner,
            )
            partial.rename(record.path)
            self._store.add_file(record)
        except BaseException:
            partial.unlink(missing_ok=True)
            (self.folder / file_id).unlink(missing_ok=True)
            raise
        return record

    def add_output(
        self,
        file_id: str,
        path: Path,
        filename: str,
        keep_seconds: int | None,
        owner: str | None = None,
    ) -> FileRecord:
        """Register a file a batch wrote (its id is chosen by the batch, so this is
        idempotent: finalizing again after a crash registers the same file)."""
        now = int(time.time())
        expires_at = now + keep_seconds if keep_seconds is not None else None
        record = FileRecord(
            file_id,
            OUTPUT_PURPOSE,
            filename,
            path.stat().st_size,
            now,
            path,
            expires_at,
            owner=owner,
        )
        self._store.add_file(record)
        return record

    def get(self, file_id: str, viewer: str | None = None) -> FileRecord | None:
        """The file; None when there is none, or it is not `viewer`'s (a scoped key sees its
        own files only; None: every file)."""
        record = self._store.file(file_id)
        if record is None or (viewer is not None and record.owner != viewer):
            return None
        return record

    def list(
        self,
        purpose: str | None,
        limit: int,
        after: str | None,
        newest_first: bool,
        viewer: str | None = None,
    ) -> Page:
        return self._store.files(purpose, limit, after, newest_first, viewer)

    def expire_due(self, now: int) -> int:
        """Delete the content of every file past its expiry (but the input of a batch that
        has not ended); how many went."""
        expired = 0
        for record in self._store.files_due(now, EXPIRY_PAGE):
            try:
                with contextlib.suppress(FileNotFoundError):
                    record.path.unlink()
            except OSError as exc:  # kept, and tried again at the next round
                logger.warning("expired file %s could not be deleted: %s", record.id, exc)
                continue
            self._store.mark_expired(record.id, now)
            expired += 1
        return expired

    def delete(self, file_id: str) -> None:
        if self._store.file_in_use(file_id):
            raise FileInUse(file_id)
        record = self._store.file(file_id)
        self._store.delete_file(file_id)
        if record is not None:
            with contextlib.suppress(FileNotFoundError):
                record.path.unlink()


def _check(purpose: str | None, filename: str | None) -> str:
    if filename is None:
        raise UploadRefused("the form has no `file` field")
    if purpose is None:
        raise UploadRefused("the form has no `purpose` field: use purpose=batch")
    if purpose not in UPLOAD_PURPOSES:
        raise UploadRefused(f"purpose {purpose!r} is not supported here: use purpose=batch")
    return purpose


def _expires_after(fields: dict[str, str]) -> int | None:
    """Seconds the upload is kept (OpenAI's `expires_after`, sent as form fields
    `expires_after[anchor]` and `expires_after[seconds]`); None: until deleted."""
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise UploadRefused("expires_after[anchor] must be created_at")
    if (
        seconds is None
        or not (seconds.isascii() and seconds.isdigit())  # "²" is a digit to isdigit()
        or not 1 <= int(seconds) <= MAX_EXPIRY_SECONDS
    ):
        raise UploadRefused(
            f"expires_after[seconds] must be a whole number of seconds from 1 to "
            f"{MAX_EXPIRY_SECONDS}"
        )
    return int(seconds)

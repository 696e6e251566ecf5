"""The task that deletes expired files' content, every so often (files.py says which)."""

from __future__ import annotations

import asyncio
import logging
import time

from vllm_bootstrap.background import BackgroundTask
from vllm_bootstrap.batches.files import FileDirectory
from vllm_bootstrap.batches.store import BatchWriteFailed

logger = logging.getLogger("vllm_bootstrap.batches")


class FileExpiry(BackgroundTask):
    def __init__(self, files: FileDirectory, check_seconds: float) -> None:
        super().__init__(self._rounds, "file expiry")
        self._files = files
        self._check_seconds = check_seconds

    async def _rounds(self) -> None:  # they never raise: see _expire_all_due
        while True:
            await self._expire_all_due()
            await asyncio.sleep(self._check_seconds)

    async def _expire_all_due(self) -> None:
        """A page at a time, with the loop's turn in between."""
        more = True
        while more:
            try:
                more = self._files.expire_due(int(time.time())) > 0
            except BatchWriteFailed as exc:  # a full or locked disk: the next round retries
                logger.warning("expired files not recorded yet: %s", exc)
                return
            except Exception:  # never the end of expiry, nor of the server's shutdown
                logger.exception("expiring files failed; trying again at the next round")
                return
            await asyncio.sleep(0)

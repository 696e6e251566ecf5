"""Launch records, written behind memory: what happens to processes never waits on the
state database.

A write that fails (a full disk, a lock held by someone's shell) keeps the record in memory,
and a background task writes it every SAVE_RETRY_SECONDS until memory and database agree
again; one line is logged when writes start failing and one when they succeed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from vllm_bootstrap.launches import Launch, ResourceTaken, StateStore, StateWriteFailed

logger = logging.getLogger("vllm_bootstrap.supervisor")
SAVE_RETRY_SECONDS = 1.0


class LaunchRecords:
    def __init__(self, store: StateStore) -> None:
        self._store = store
        # Launches whose latest change could not be written yet, and the task retrying them.
        self._unsaved: dict[str, Launch] = {}
        self._retry: asyncio.Task[None] | None = None

    def save(self, launch: Launch) -> None:
        """Write a launch's change now, or as soon as the database takes it."""
        try:
            self._store.save(launch)
        except ResourceTaken as exc:
            # Admission and waking check ownership in memory first: this is a bug, not a race.
            logger.error(
                "launch %s: GPU lease conflict in the state database: %s", launch.launch_id, exc
            )
        except StateWriteFailed as exc:
            if not self._unsaved:
                logger.error("%s; launches go on, and their state is written once it can be", exc)
            self._unsaved[launch.launch_id] = launch
            if self._retry is None or self._retry.done():
                self._retry = asyncio.create_task(self._retry_saves(), name="retry-saves")
        else:
            self._unsaved.pop(launch.launch_id, None)

    def save_if_current(self, launch: Launch) -> None:
        """Best effort, for what only matters if it survives (the idle clock): a launch with
        a change still waiting is written with that change."""
        with contextlib.suppress(StateWriteFailed):
            if launch.launch_id not in self._unsaved:
                self._store.save(launch)

    def write_waiting(self) -> None:
        """Write every change that could not be written yet; StateWriteFailed if one fails."""
        for launch in list(self._unsaved.values()):
            self._store.save(launch)
            self._unsaved.pop(launch.launch_id, None)

    def flush(self) -> None:
        """One last try, at exit; say so for each record that still cannot be written."""
        if self._retry is not None:
            self._retry.cancel()
        for launch in list(self._unsaved.values()):
            try:
                self._store.save(launch)
            except StateWriteFailed as exc:
                logger.error(
                    "launch %s: its last state (%s) is lost: %s",
                    launch.launch_id,
                    launch.state,
                    exc,
                )

    async def _retry_saves(self) -> None:
        while self._unsaved:
            await asyncio.sleep(SAVE_RETRY_SECONDS)
            with contextlib.suppress(StateWriteFailed):
                self.write_waiting()
        logger.warning("the state database is written again; memory and database agree")

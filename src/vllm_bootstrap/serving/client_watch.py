"""Noticing that a proxied request's client hung up, at a price only long requests pay."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive

CLIENT_WATCH_DELAY_SECONDS = 0.05


class ClientWatch:
    """Cancels the proxying task when the client disconnects.

    Armed once the request body has been read: from then on the only message an ASGI
    server sends is `http.disconnect`. Listening takes a task, so it starts only after
    CLIENT_WATCH_DELAY_SECONDS: the many requests that finish sooner never pay for one,
    and a hang-up during a long generation still reaches vLLM within that delay.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Future[Message] | None = None
        self._disconnected = False
        self._finished = False

    def arm(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(CLIENT_WATCH_DELAY_SECONDS, self._listen)

    def cancelled_us(self) -> bool:
        """Whether a cancellation came from this watch (then it is absorbed)."""
        if self._disconnected and self._task is not None:
            self._task.uncancel()
            return True
        return False

    def stop(self) -> None:
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()

    def _listen(self) -> None:
        if not self._finished:
            self._watcher = asyncio.ensure_future(self._receive())
            self._watcher.add_done_callback(self._on_message)

    def _on_message(self, watcher: asyncio.Future[Message]) -> None:
        if watcher.cancelled() or self._finished or self._task is None or self._task.done():
            return
        self._disconnected = True
        self._task.cancel()

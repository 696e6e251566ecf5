"""The launches this control plane knows, and the events that tell others when one changed.

The supervisor is the only writer. Everything else (the proxy, the `/v1` router, later the
batch runner and the model swapper) reads through `LaunchDirectory`, the narrow read-only
face, and subscribes to changes instead of polling: each subscriber is called, on the event
loop, right after a launch was added or changed state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from vllm_bootstrap.launches.record import Launch

logger = logging.getLogger("vllm_bootstrap.launches")

Subscriber = Callable[[Launch], None]


class LaunchNotFound(LookupError):
    def __init__(self, launch_id: str) -> None:
        super().__init__(f"no launch with id {launch_id!r}")


class LaunchDirectory(Protocol):
    """What the data plane may know about launches: look up, list, hear of changes."""

    def find(self, launch_id: str) -> Launch | None: ...

    def launches(self, include_terminal: bool = False) -> list[Launch]: ...

    def subscribe(self, subscriber: Subscriber) -> None: ...


class LaunchRegistry:
    """Every known launch by id, in creation order; publishes each change."""

    def __init__(self) -> None:
        self._launches: dict[str, Launch] = {}
        self._subscribers: list[Subscriber] = []

    def find(self, launch_id: str) -> Launch | None:
        return self._launches.get(launch_id)

    def get(self, launch_id: str) -> Launch:
        launch = self._launches.get(launch_id)
        if launch is None:
            raise LaunchNotFound(launch_id)
        return launch

    def launches(self, include_terminal: bool = False) -> list[Launch]:
        return [
            launch
            for launch in self._launches.values()
            if include_terminal or not launch.is_terminal
        ]

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def add(self, launch: Launch) -> None:
        self._launches[launch.launch_id] = launch
        self.changed(launch)

    def changed(self, launch: Launch) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(launch)
            except Exception:
                # One broken listener must not stop the others or the state change itself.
                logger.exception("a subscriber to launch changes failed")

"""Choosing a launch for a model: the routing behind /v1 and batch lines. It writes nothing.

Replicas of one model (launches on different GPUs) share the load by least outstanding
requests, read from the usage ledger (which counts every route, /proxy too): a replica
stuck on long generations gets fewer new ones than a blind rotation would give it. Ties
rotate, so idle replicas take turns.

The index of ready replicas is rebuilt only after the launch directory says something
changed (it pushes every change to its subscribers), never per request. Only `ready`
launches are routed to: one falling asleep is in a state of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from vllm_bootstrap.launches import LOADING_STATES, Launch, LaunchDirectory, LaunchState
from vllm_bootstrap.serving.errors import NoReadyReplica, UnknownModel
from vllm_bootstrap.usage import UsageLedger


class ModelRouter:
    def __init__(self, directory: LaunchDirectory, ledger: UsageLedger) -> None:
        self._directory = directory
        self._ledger = ledger
        self._turn = itertools.count()
        self._ready: dict[str, list[Launch]] = {}
        self._loading: set[str] = set()
        self._stale = True
        directory.subscribe(self._launch_changed)

    def choose(self, model: str, has_room: Callable[[Launch], bool] | None = None) -> Launch:
        """The least busy ready replica of `model`; of those that `has_room`, when any has."""
        replicas = self._index().get(model)
        if not replicas:
            if model in self._loading:
                raise NoReadyReplica(model)
            raise UnknownModel(model, self.ready_models())
        if len(replicas) == 1:
            return replicas[0]
        start = next(self._turn) % len(replicas)
        rotated = replicas[start:] + replicas[:start]
        if has_room is not None:
            rotated = [launch for launch in rotated if has_room(launch)] or rotated
        return min(rotated, key=lambda launch: self._ledger.in_flight(launch.launch_id))

    def replica_count(self, model: str) -> int:
        return len(self._index().get(model, ()))

    def replicas(self, model: str) -> list[Launch]:
        """The ready launches serving `model`."""
        return list(self._index().get(model, ()))

    def is_loading(self, model: str) -> bool:
        """A launch that will serve `model` is starting (or restarting)."""
        self._index()
        return model in self._loading

    def ready_models(self) -> list[str]:
        return sorted(self._index())

    def models_listing(self) -> dict[str, Any]:
        """`GET /v1/models` across every ready launch, each served name once."""
        data = [
            {
                "id": name,
                "object": "model",
                "created": int(replicas[0].ready_at or replicas[0].created_at),
                "owned_by": "vllm",
                "root": replicas[0].model,
                "replicas": len(replicas),
            }
            for name, replicas in sorted(self._index().items())
        ]
        return {"object": "list", "data": data}

    def _launch_changed(self, _launch: Launch) -> None:
        self._stale = True

    def _index(self) -> dict[str, list[Launch]]:
        """Ready replicas by served name, rebuilt after a change was announced."""
        if self._stale:
            self._rebuild()
        return self._ready

    def _rebuild(self) -> None:
        ready: dict[str, list[Launch]] = {}
        loading: set[str] = set()
        for launch in self._directory.launches():
            if launch.state is LaunchState.READY:
                for name in launch.served_models:
                    ready.setdefault(name, []).append(launch)
            elif launch.state in LOADING_STATES:
                loading.update(expected_names(launch))
        self._ready, self._loading = ready, loading
        self._stale = False


def expected_names(launch: Launch) -> list[str]:
    """The names a loading launch will serve: --served-model-name if given, else the model."""
    args = launch.extra_args
    for position, arg in enumerate(args):
        if arg == "--served-model-name":
            names = list(itertools.takewhile(lambda a: not a.startswith("-"), args[position + 1 :]))
            return names or [launch.model]
        if arg.startswith("--served-model-name="):
            return [arg.split("=", 1)[1]]
    return [launch.model]

"""The launch record: every field of a launch, defined once.

The store keeps a record as one JSON document (`to_document` / `from_document`) and the API
shows `to_public()`; both are derived from the dataclass fields below, so a new field is
written in one place. A field's `metadata` says how the API shows it: hidden, renamed, or
shown through a function (timestamps as ISO 8601, the environment as its names only).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from vllm_bootstrap.launches.states import LaunchState, check_transition
from vllm_bootstrap.upstream import probe_host


class RestartPolicy(StrEnum):
    NEVER = "never"
    ON_FAILURE = "on-failure"


# The one set of launch defaults: the API's request schema and the record both use them.
DEFAULT_RESTART_POLICY = RestartPolicy.NEVER
DEFAULT_MAX_RESTARTS = 3
DEFAULT_RESTART_BACKOFF_SECONDS = 1.0
MAX_RESTART_BACKOFF_SECONDS = 300.0


def iso_time(timestamp: float | None) -> str | None:
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
        if timestamp
        else None
    )


def _names(env: dict[str, str]) -> list[str]:
    # Environment values often hold tokens (HF_TOKEN): the API shows the names only.
    return sorted(env)


def _shown(name: str | None = None, show: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    return {"public_name": name, "show": show}


_HIDDEN: dict[str, Any] = {"hidden": True}
# Not stored: facts about this run of the control plane, not about the launch.
_RUNTIME: dict[str, Any] = {"stored": False}


@dataclass
class Launch:
    launch_id: str
    model: str
    gpu_ids: list[int]
    port: int
    host: str
    command: list[str]
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, metadata=_shown("env_keys", _names))
    state: LaunchState = LaunchState.BOOTSTRAPPING
    created_at: float = field(default_factory=time.time, metadata=_shown(show=iso_time))
    updated_at: float = field(default_factory=time.time, metadata=_shown(show=iso_time))
    ready_at: float | None = field(default=None, metadata=_shown(show=iso_time))
    pid: int | None = None
    process_start_ticks: int | None = field(default=None, metadata=_HIDDEN)
    return_code: int | None = None
    error: str | None = None
    served_models: list[str] = field(default_factory=list)
    restart_policy: RestartPolicy = field(
        default=DEFAULT_RESTART_POLICY, metadata=_shown("restart")
    )
    max_restarts: int = DEFAULT_MAX_RESTARTS
    restart_backoff_seconds: float = DEFAULT_RESTART_BACKOFF_SECONDS
    restart_count: int = 0
    last_error: str | None = None
    spawned_at: float | None = field(default=None, metadata=_HIDDEN)
    # The model profile this launch was started for (None: started by hand, POST /launch),
    # and what asked for it ("a /v1 request", "preload", ...).
    profile: str | None = None
    reason: str | None = None
    # On a cluster's head: the Ray node (another box) that runs it; None: this box.
    node_id: str | None = None
    # A launch across boxes (vLLM's Ray executor): the other boxes it holds, node id -> GPUs
    # (it runs on `node_id`, its first box, and vLLM places its workers on all of them).
    other_node_gpus: dict[str, list[int]] = field(default_factory=dict)
    # The download of its Hub model's files, while vLLM waits for them (downloads/).
    download_id: str | None = None
    # When a request through /v1 or a batch last finished on it: the idle clock of profiles.
    last_request_at: float | None = field(default=None, metadata=_shown(show=iso_time))
    # Set when it fell asleep and until it wakes: its GPUs are not its own meanwhile, also
    # while a sleeping launch is being stopped.
    gpus_released: bool = False
    # True when this run of the control plane took the process over from a previous one
    # (its exit code will then be unknown).
    adopted: bool = field(default=False, metadata=_RUNTIME)
    # How far start-up has got: "downloading" (its weights, downloads/), then from vLLM's
    # log (launches/progress.py) "starting" ... "ready"; and the fraction of the current
    # step where it is known (a download's bytes, vLLM's progress bars).
    phase: str | None = field(default=None, metadata=_RUNTIME)
    progress: float | None = field(default=None, metadata=_RUNTIME)

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    @property
    def holds_gpus(self) -> bool:
        """Its GPUs are its own: live and not asleep (a sleeping launch holds them softly)."""
        return self.state.holds_gpus and not self.gpus_released

    @property
    def across_boxes(self) -> bool:
        return bool(self.other_node_gpus)

    def gpus_on(self, node_id: str | None) -> list[int]:
        """Its GPUs on the box `node_id` (None: the head, or a box alone)."""
        if node_id == self.node_id:
            return self.gpu_ids
        return self.other_node_gpus.get(node_id, []) if node_id is not None else []

    @property
    def local_host(self) -> str:
        """The address at which the control plane reaches this launch's vLLM server."""
        return probe_host(self.host)

    @property
    def pgid(self) -> int | None:
        # Children start in a session of their own, so the group id is the leader's pid.
        return self.pid

    def move_to(self, state: LaunchState, *, error: str | None = None) -> None:
        check_transition(self.launch_id, self.state, state)
        self.state = state
        self.updated_at = time.time()
        if state is LaunchState.READY:
            self.ready_at = self.updated_at
            self.phase, self.progress = "ready", None
        elif state is not LaunchState.BOOTSTRAPPING:
            self.phase, self.progress = None, None
        if state is LaunchState.SLEEPING:
            self.gpus_released = True
        elif state is LaunchState.WAKING:
            self.gpus_released = False
        if error is not None:
            self.error = error

    def next_restart_delay(self) -> float:
        """The backoff before restart number `restart_count` (1 for the first): doubling."""
        delay = self.restart_backoff_seconds * 2 ** max(0, self.restart_count - 1)
        return float(min(delay, MAX_RESTART_BACKOFF_SECONDS))

    def to_public(self) -> dict[str, Any]:
        """The launch as the API shows it."""
        view = {}
        for spec in _FIELDS:
            if spec.metadata.get("hidden"):
                continue
            value = getattr(self, spec.name)
            show = spec.metadata.get("show")
            view[spec.metadata.get("public_name") or spec.name] = show(value) if show else value
        return view

    def to_document(self) -> dict[str, Any]:
        """Every stored field, as JSON-ready values."""
        return {
            spec.name: _plain(getattr(self, spec.name))
            for spec in _FIELDS
            if spec.metadata.get("stored", True)
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Launch:
        known = {spec.name for spec in _FIELDS if spec.metadata.get("stored", True)}
        values = {name: value for name, value in document.items() if name in known}
        values["state"] = LaunchState(values["state"])
        values["log_path"] = Path(values["log_path"])
        if "restart_policy" in values:
            values["restart_policy"] = RestartPolicy(values["restart_policy"])
        launch = cls(**values)
        if launch.state is LaunchState.READY:
            launch.phase = "ready"  # not stored: a ready launch's phase is always this
        return launch


_FIELDS = dataclasses.fields(Launch)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, StrEnum):
        return value.value
    return value

"""The launch record and its state machine.

    bootstrapping -> ready -> stopping -> stopped
          |            |          |
          +------------+----------+-----> failed

A launch owns its GPUs and its port for as long as it is not terminal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from vllm_bootstrap.ports import probe_host, url_host


class LaunchState(StrEnum):
    BOOTSTRAPPING = "bootstrapping"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({LaunchState.STOPPED, LaunchState.FAILED})

_ALLOWED_TRANSITIONS: dict[LaunchState, frozenset[LaunchState]] = {
    # -> bootstrapping again: a crash restarted under the launch's restart policy.
    LaunchState.BOOTSTRAPPING: frozenset(
        {LaunchState.BOOTSTRAPPING, LaunchState.READY, LaunchState.STOPPING, LaunchState.FAILED}
    ),
    LaunchState.READY: frozenset(
        {LaunchState.BOOTSTRAPPING, LaunchState.STOPPING, LaunchState.FAILED}
    ),
    LaunchState.STOPPING: frozenset({LaunchState.STOPPED, LaunchState.FAILED}),
    LaunchState.STOPPED: frozenset(),
    LaunchState.FAILED: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


class RestartPolicy(StrEnum):
    NEVER = "never"
    ON_FAILURE = "on-failure"


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
    env: dict[str, str] = field(default_factory=dict)
    state: LaunchState = LaunchState.BOOTSTRAPPING
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    pid: int | None = None
    process_start_ticks: int | None = None
    return_code: int | None = None
    error: str | None = None
    served_models: list[str] = field(default_factory=list)
    restart_policy: RestartPolicy = RestartPolicy.NEVER
    max_restarts: int = 0
    restart_backoff_seconds: float = 1.0
    restart_count: int = 0
    last_error: str | None = None
    spawned_at: float | None = None
    # Not stored: true when this run of the control plane took the process over from a
    # previous one (its exit code will be unknown).
    adopted: bool = False

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    @property
    def local_url(self) -> str:
        """Where the control plane reaches this launch's vLLM server."""
        return f"http://{url_host(probe_host(self.host))}:{self.port}"

    @property
    def pgid(self) -> int | None:
        # Children start in a session of their own, so the group id is the leader's pid.
        return self.pid

    def move_to(self, state: LaunchState, *, error: str | None = None) -> None:
        if state not in _ALLOWED_TRANSITIONS[self.state]:
            raise InvalidTransition(f"launch {self.launch_id}: {self.state} -> {state}")
        self.state = state
        self.updated_at = time.time()
        if state is LaunchState.READY:
            self.ready_at = self.updated_at
        if error is not None:
            self.error = error

    def to_public(self) -> dict[str, Any]:
        """The launch as the API shows it. Environment values stay private: they often hold
        tokens (HF_TOKEN), so only the names are shown."""
        return {
            "launch_id": self.launch_id,
            "model": self.model,
            "gpu_ids": self.gpu_ids,
            "port": self.port,
            "host": self.host,
            "state": self.state.value,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "ready_at": _iso(self.ready_at) if self.ready_at else None,
            "return_code": self.return_code,
            "error": self.error,
            "pid": self.pid,
            "command": self.command,
            "extra_args": self.extra_args,
            "env_keys": sorted(self.env),
            "served_models": self.served_models,
            "log_path": str(self.log_path),
            "restart": self.restart_policy.value,
            "max_restarts": self.max_restarts,
            "restart_count": self.restart_count,
            "last_error": self.last_error,
            "adopted": self.adopted,
        }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")

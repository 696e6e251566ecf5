"""A launch's states and the moves between them: one table, drawn the same everywhere.

The usual life is bootstrapping -> ready -> stopping -> stopped; this table is every move:

    from            to
    bootstrapping   ready, stopping, failing, restarting, failed
    ready           stopping, restarting, failed, falling_asleep
    falling_asleep  sleeping, stopping, restarting, failed
    sleeping        waking, stopping, failed
    waking          ready, stopping, restarting, failed
    stopping        stopped
    failing         failed
    restarting      bootstrapping, stopped, failed

- bootstrapping: vLLM runs and loads its model (again, after a restart).
- ready: it answers `/health` and lists its models.
- stopping: asked to stop; SIGTERM went to its process group, SIGKILL follows after the grace.
- failing: it did not become ready in time; it is being stopped and will end failed.
- restarting: it crashed under restart policy "on-failure"; nothing runs while the backoff
  timer waits, and the launch keeps its GPUs and port. A stop ends it at once (stopped).
- falling_asleep: a profile launch asked to sleep (vLLM's POST /sleep is under way): no
  new request is routed to it, and it keeps its GPUs, which still hold its weights.
- sleeping: a profile launch put to sleep with vLLM's sleep mode (models/): its process and
  port live on, its weights wait in CPU memory, and its GPUs are free for another launch
  (a sleeping launch that is then stopped does not claim them back while it stops).
- waking: it holds its GPUs again while vLLM's /wake_up runs; ready once that answered.
- failed: the process exited on its own (a crash past the restart limit), could not be
  started, or was stopped after failing.
- stopped, failed: ended; GPUs and port are free again.

Every state but stopped and failed owns the launch's port; all of those but sleeping own
its GPUs too.
"""

from __future__ import annotations

from enum import StrEnum


class LaunchState(StrEnum):
    BOOTSTRAPPING = "bootstrapping"
    READY = "ready"
    STOPPING = "stopping"
    FAILING = "failing"
    RESTARTING = "restarting"
    FALLING_ASLEEP = "falling_asleep"
    SLEEPING = "sleeping"
    WAKING = "waking"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def holds_gpus(self) -> bool:
        return self not in TERMINAL_STATES and self is not LaunchState.SLEEPING


TERMINAL_STATES = frozenset({LaunchState.STOPPED, LaunchState.FAILED})
# A launch in one of these will serve its models soon: nothing to start, only to wait for.
LOADING_STATES = frozenset({LaunchState.BOOTSTRAPPING, LaunchState.RESTARTING, LaunchState.WAKING})

_S = LaunchState
TRANSITIONS: dict[LaunchState, frozenset[LaunchState]] = {
    # failed straight from bootstrapping: the process exited, or could not be started.
    _S.BOOTSTRAPPING: frozenset({_S.READY, _S.STOPPING, _S.FAILING, _S.RESTARTING, _S.FAILED}),
    _S.READY: frozenset({_S.STOPPING, _S.RESTARTING, _S.FAILED, _S.FALLING_ASLEEP}),
    # Until vLLM answered /sleep the launch holds its GPUs: a crash may restart it there.
    _S.FALLING_ASLEEP: frozenset({_S.SLEEPING, _S.STOPPING, _S.RESTARTING, _S.FAILED}),
    # No restart from sleep: restarting would claim GPUs another launch may hold now.
    _S.SLEEPING: frozenset({_S.WAKING, _S.STOPPING, _S.FAILED}),
    _S.WAKING: frozenset({_S.READY, _S.STOPPING, _S.RESTARTING, _S.FAILED}),
    _S.STOPPING: frozenset({_S.STOPPED}),
    _S.FAILING: frozenset({_S.FAILED}),
    # The backoff ends by starting vLLM again, or a stop ends it at once (nothing runs).
    _S.RESTARTING: frozenset({_S.BOOTSTRAPPING, _S.STOPPED, _S.FAILED}),
    _S.STOPPED: frozenset(),
    _S.FAILED: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


def check_transition(launch_id: str, current: LaunchState, wanted: LaunchState) -> None:
    if wanted not in TRANSITIONS[current]:
        raise InvalidTransition(f"launch {launch_id}: {current} -> {wanted}")

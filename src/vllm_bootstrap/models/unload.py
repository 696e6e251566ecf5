"""Taking a profile launch off its GPUs, and giving a sleeping one its GPUs back: the
sequences, each step a compare-and-swap of the launch's state (`Supervisor.move`).

Sleep: ready -> falling_asleep (no request is routed to it any more, its GPUs hold its
weights), vLLM's POST /sleep, then -> sleeping (its GPUs are free). Wake: sleeping ->
waking (its GPUs are claimed back first, so nothing else can take them), vLLM's POST
/wake_up, then -> ready. A launch that does not fall asleep or wake is stopped: a vLLM in an
unknown sleep state must not share GPUs with anyone. `ProfileRun` decides when; these only
carry it out.
"""

from __future__ import annotations

import logging
import time

from vllm_bootstrap.launches import Launch, LaunchState
from vllm_bootstrap.log_text import escaped
from vllm_bootstrap.models import sleep_mode
from vllm_bootstrap.models.errors import LoadFailed
from vllm_bootstrap.models.wing import Wing
from vllm_bootstrap.supervision import LaunchRefused

logger = logging.getLogger("vllm_bootstrap.models")
_S = LaunchState


async def stop(wing: Wing, launch: Launch) -> None:
    wing.supervisor.stop(launch.launch_id)
    await wing.supervisor.wait_until_ended(
        launch.launch_id, wing.settings.stop_timeout_seconds + 10
    )


async def put_to_sleep(wing: Wing, launch: Launch, reason: str) -> bool:
    """True once its GPUs are free (asleep, or stopped because it did not fall asleep);
    False when it was no longer ready, or was moved while it fell asleep (stopped, crashed:
    whoever moved it owns what happens to its GPUs)."""
    if not move(wing, launch, _S.READY, _S.FALLING_ASLEEP, reason):
        return False
    return await finish_falling_asleep(wing, launch, reason)


async def finish_falling_asleep(wing: Wing, launch: Launch, reason: str) -> bool:
    try:
        await sleep_mode.fall_asleep(wing.pool, launch)
    except sleep_mode.SleepModeFailed as exc:
        logger.warning("launch %s: %s; stopping it instead", launch.launch_id, escaped(str(exc)))
        await stop(wing, launch)
        return True
    return move(wing, launch, _S.FALLING_ASLEEP, _S.SLEEPING, reason)


def record_asleep(wing: Wing, launch: Launch, reason: str) -> bool:
    """A ready launch that vLLM says is asleep already: recorded so, its GPUs freed."""
    return move(wing, launch, _S.READY, _S.FALLING_ASLEEP, reason) and move(
        wing, launch, _S.FALLING_ASLEEP, _S.SLEEPING, reason
    )


async def finish_waking(wing: Wing, launch: Launch) -> None:
    """vLLM's POST /wake_up for a launch that holds its GPUs again (`waking`); LoadFailed
    when it does not wake (it is stopped) or was stopped meanwhile."""
    started = time.monotonic()
    try:
        await sleep_mode.wake_up(wing.pool, launch)
    except sleep_mode.SleepModeFailed as exc:
        await stop(wing, launch)
        raise LoadFailed(f"launch {launch.launch_id} did not wake: {exc}") from None
    if not move(wing, launch, _S.WAKING, _S.READY, "awake"):
        raise LoadFailed(f"launch {launch.launch_id} was stopped while it woke")
    logger.info(
        "model %s: launch %s woke in %.2f s",
        escaped(launch.profile or "?"),
        launch.launch_id,
        time.monotonic() - started,
    )


def move(wing: Wing, launch: Launch, expected: LaunchState, new: LaunchState, why: str) -> bool:
    """The supervisor's compare-and-swap; False when the launch moved meanwhile, or (waking)
    another launch holds one of its GPUs."""
    try:
        return wing.supervisor.move(launch.launch_id, expected, new, why)
    except LaunchRefused as refused:
        logger.info("launch %s: cannot wake: %s", launch.launch_id, refused.message)
        return False

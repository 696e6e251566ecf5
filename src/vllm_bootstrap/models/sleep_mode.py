"""vLLM's sleep mode, as vLLM 0.32 serves it (vllm/entrypoints/serve/dev/sleep/):

    POST /sleep?level=1&mode=abort   weights to CPU memory, KV cache dropped; answers when done
    POST /wake_up                    back on the GPU, {"status": "awake"} when fully awake
    GET  /is_sleeping                {"is_sleeping": bool}

The server must be started with --enable-sleep-mode, and the routes exist only when
VLLM_SERVER_DEV_MODE=1 is in its environment (profile.py's SLEEP_ARGS and SLEEP_ENV). Sleep
mode needs a CUDA (or ROCm, XPU) GPU: vLLM's CPU build refuses --enable-sleep-mode.
"""

from __future__ import annotations

import asyncio
import json

from vllm_bootstrap.launches import Launch
from vllm_bootstrap.upstream import UpstreamError, UpstreamPool

# Level 1 keeps the weights in CPU memory, so waking is a copy, not a reload.
SLEEP_TARGET = b"/sleep?level=1&mode=abort"
WAKE_TARGET = b"/wake_up"
# Moving tens of GB between CPU and GPU memory takes seconds; a minute means it is stuck.
CALL_TIMEOUT_SECONDS = 120.0


class SleepModeFailed(RuntimeError):
    """vLLM did not fall asleep or wake up; the message says what it answered."""


async def fall_asleep(pool: UpstreamPool, launch: Launch) -> None:
    await _call(pool, launch, SLEEP_TARGET)


async def wake_up(pool: UpstreamPool, launch: Launch) -> None:
    answer = await _call(pool, launch, WAKE_TARGET)
    if answer.get("status") not in (None, "awake"):
        raise SleepModeFailed(f"POST /wake_up answered {answer!r}: not fully awake")


async def is_sleeping(pool: UpstreamPool, launch: Launch) -> bool:
    """GET /is_sleeping; False when it cannot say (an older vLLM, or no answer)."""
    try:
        async with asyncio.timeout(10):
            response = await pool.request(
                launch.local_host, launch.port, b"GET", b"/is_sleeping", [], b""
            )
            async with response:
                status, body = response.status, await response.read()
    except (UpstreamError, TimeoutError):
        return False
    if status != 200:
        return False
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("is_sleeping") is True


async def _call(pool: UpstreamPool, launch: Launch, target: bytes) -> dict[str, object]:
    name = target.split(b"?")[0].decode()
    try:
        async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
            response = await pool.request(launch.local_host, launch.port, b"POST", target, [], b"")
            async with response:
                status, body = response.status, await response.read()
    except (UpstreamError, TimeoutError) as exc:
        raise SleepModeFailed(f"POST {name} did not answer: {exc or 'timed out'}") from None
    if status != 200:
        text = body[:300].decode(errors="replace")
        raise SleepModeFailed(f"POST {name} answered {status}: {text}")
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}

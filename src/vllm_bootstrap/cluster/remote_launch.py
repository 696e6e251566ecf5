"""The head's handle on one launch's vLLM on another box (supervision/remote.py's
`RemoteProcess`), through that launch's actor (launch_actor.py).

Ray's results are awaited as futures (`ObjectRef.future()`), never by a thread blocked in
`ray.get`: a launch waits for its vLLM's exit for days, and a thread per launch would use up
the event loop's pool. Whatever Ray raises while the launch's vLLM is awaited means its box
can no longer be reached: the launch fails saying so (`lost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

from vllm_bootstrap.cluster.launch_actor import MAX_LOG_READ_BYTES, find, start_on
from vllm_bootstrap.cluster.node_readings import alive_node_ids, pinned_to
from vllm_bootstrap.launches import Launch, log_size

logger = logging.getLogger("vllm_bootstrap.cluster")
# How often a launch's log is copied from its box while it has nothing new.
LOG_MIRROR_SECONDS = 0.25
# How long a restarted head waits for one launch's actor to answer before it counts it gone.
ADOPT_SECONDS = 30.0


class RemoteLaunch:
    def __init__(self, launch: Launch) -> None:
        assert launch.node_id is not None
        self._launch = launch
        self._node_id = launch.node_id
        self._actor: Any = None
        self._offset: int | None = None  # how much of its log the head has
        self._copying = asyncio.Lock()
        self.lost: str | None = None

    async def start(self, argv: list[str], env: dict[str, str]) -> int:
        _append(self._launch.log_path, b"")  # its log here exists from the start, as a local one's
        try:
            actor = await self._the_actor(env)
            answer = await _result(actor.start.remote(argv))
        except Exception as exc:
            raise RuntimeError(_reason(exc)) from None
        return int(answer["pid"])

    async def wait(self) -> int | None:
        try:
            return int(await _result(self._actor.wait.remote()))
        except Exception as exc:  # Ray's: the actor died with its box, or cannot be reached
            failure = exc
        self.lost = self._lost_because(failure)
        # Its actor alone may have died (Ray's memory monitor, say) on a box that lives: its
        # vLLM would run on there, holding GPUs the launch gives back now.
        with contextlib.suppress(Exception):  # the box is gone too: nothing runs there
            if self._node_id in await asyncio.to_thread(alive_node_ids):
                strategy = pinned_to(self._node_id)
                ended = await _result(
                    _ender().options(scheduling_strategy=strategy).remote(self._launch.launch_id)
                )
                self.lost = (
                    f"its actor on box {self._launch.host} died ({type(failure).__name__}); "
                    f"its vLLM there was ended with it (processes {ended})"
                )
        return None

    async def stop(self, grace_seconds: float) -> None:
        # A box that is gone has nothing left to stop: `wait` says what happened.
        with contextlib.suppress(Exception):
            await _result(self._actor.stop.remote(grace_seconds))

    async def mirror_log(self) -> None:
        while (copied := await self._copy_log()) is not None:
            if copied == "idle":  # the log is on another box: asking again is all there is
                await asyncio.sleep(LOG_MIRROR_SECONDS)

    async def adopt(self) -> bool:
        try:
            return await asyncio.wait_for(self._find_running(), ADOPT_SECONDS)
        except Exception as exc:  # the cluster cannot say: the launch is settled as gone
            logger.warning(
                "launch %s: its actor could not be asked (%s)", self._launch.launch_id, _reason(exc)
            )
            return False

    async def copy_log(self) -> None:
        if self.lost is None and self._actor is not None:
            await self._copy_rest(self._actor)

    async def release(self) -> None:
        """The rest of its log, then its actor ended (its name free for the next head);
        once, whichever path gets here first."""
        actor, self._actor = self._actor, None
        if actor is None:
            return
        if self.lost is None:
            await self._copy_rest(actor)
        import ray

        with contextlib.suppress(Exception):
            await asyncio.to_thread(ray.kill, actor, no_restart=True)

    # ----------------------------------------------------------------- internals

    async def _the_actor(self, env: dict[str, str]) -> Any:
        """The launch's actor: the one it had (a restart after a crash starts vLLM again in
        the same), or a new one on its box."""
        if self._actor is None:
            launch = self._launch
            self._actor = await asyncio.to_thread(find, launch.launch_id)
            if self._actor is None:
                self._actor = await asyncio.to_thread(
                    start_on,
                    self._node_id,
                    launch.launch_id,
                    launch.gpu_ids,
                    env,
                    launch.across_boxes,
                )
        return self._actor

    async def _find_running(self) -> bool:
        """Its actor again, by name; True while its vLLM runs (an exited one's remnants are
        ended first: a restart on the same GPUs must find them free)."""
        self._actor = await asyncio.to_thread(find, self._launch.launch_id)
        if self._actor is None:
            return False
        if await _result(self._actor.running.remote()):
            return True
        await _result(self._actor.reap.remote())
        return False

    async def _copy_rest(self, actor: Any) -> None:
        with contextlib.suppress(TimeoutError):  # a box that stops answering: the rest waits
            async with asyncio.timeout(ADOPT_SECONDS):
                while await self._copy_log(actor) == "more":
                    pass

    async def _copy_log(self, actor: Any = None) -> str | None:
        """Copy what is new in its log; "more" when a read was full, None once the box
        cannot be read (its launch's end says why), else "idle"."""
        path = self._launch.log_path
        actor = actor or self._actor
        async with self._copying:
            if self._offset is None:
                self._offset = log_size(path)
            try:
                data, _size_there = await _result(actor.read_log.remote(self._offset))
            except Exception:
                return None
            if data:
                _append(path, data)
                self._offset += len(data)
            return "more" if len(data) >= MAX_LOG_READ_BYTES else "idle"

    def _lost_because(self, exc: BaseException) -> str:
        launch = self._launch
        return (
            f"its box {launch.host} (Ray node {self._node_id[:12]}) could no longer be "
            f"reached ({type(exc).__name__}): the box or its Ray node ended, and its vLLM with "
            "it"
        )


@functools.cache
def _ender() -> Any:
    import ray

    return ray.remote(num_cpus=0, max_retries=0)(_end_launch_processes)


def _end_launch_processes(launch_id: str) -> list[int]:
    """On the launch's box: kill every process that carries its marker."""
    from vllm_bootstrap.supervision import kill_remnants

    return kill_remnants(launch_id)


def _reason(exc: BaseException) -> str:
    """What went wrong, without Ray's wrapping (a remote error carries the whole traceback
    of the box it came from)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}" if text else type(exc).__name__


async def _result(ref: Any) -> Any:
    return await asyncio.wrap_future(ref.future())


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as log:
        log.write(data)

"""One launch's lifetime: its vLLM process, readiness, restarts, the stop, the end.

A `LaunchRun` owns everything that lives as long as the launch does, so no other object
keeps per-launch state:

- the watcher task, from spawn (or adoption) until the process group is gone: it notices
  readiness, the start-up deadline and the exit (at once, through a pidfd) on its own;
- the terminator task of a stop in progress (SIGTERM, then SIGKILL after the grace);
- the restart timer while a crashed launch waits out its backoff (state `restarting`);
- the "ended" event that `wait_ended` and the supervisor's shutdown wait on.

A launch on another box of a cluster (`launch.node_id`) has a `RemoteProcess` instead
(supervision/remote.py): the same lifetime, with its process started, awaited and stopped
there, and its log mirrored here.

Every state change goes through `_move`, which checks it against the transition table and
hands the record to `publish` (the supervisor saves it and tells the registry's subscribers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from vllm_bootstrap.config import Settings
from vllm_bootstrap.downloads import Download, DownloadError, LaunchWeights
from vllm_bootstrap.launches import (
    Launch,
    LaunchState,
    LoadProgress,
    RestartPolicy,
    log_size,
)
from vllm_bootstrap.log_text import escaped
from vllm_bootstrap.supervision import child, exits, processes, recovery
from vllm_bootstrap.supervision.readiness import ReadinessProbe, wait_until_ready
from vllm_bootstrap.supervision.remote import Fence, RemoteProcess

logger = logging.getLogger("vllm_bootstrap.supervisor")

_S = LaunchState


class LaunchRun:
    def __init__(
        self,
        launch: Launch,
        settings: Settings,
        publish: Callable[[Launch], None],
        weights: LaunchWeights | None = None,
        remote: RemoteProcess | None = None,
        fences: Callable[[], Fence] | None = None,
    ) -> None:
        self.launch = launch
        self._settings = settings
        self._publish = publish
        self._weights = weights
        self._remote = remote
        # A launch across boxes: the GPUs its workers must not take, kept from vLLM's Ray
        # executor while it places them (a new fence for each spawn, until it is ready or
        # has ended).
        self._fences = fences
        self._fence: Fence | None = None
        self._starting: asyncio.Task[None] | None = None
        self._mirror: asyncio.Task[None] | None = None
        # Downloading the model before vLLM starts (a Hub model not wholly cached).
        self._fetcher: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._terminator: asyncio.Task[None] | None = None
        self._restart_timer: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        # Where this run of vLLM begins in its log (restarts append to the same file); on
        # adoption, the start when it never restarted, else only what comes next.
        self._log_start = 0 if launch.restart_count == 0 else log_size(launch.log_path)

    # ----------------------------------------------------------------- the supervisor's side

    def start(self) -> bool:
        """Start vLLM, after downloading its model when the cache lacks it; False (and the
        launch failed, saying why) if it could not be started."""
        if self._weights is not None and self._weights.needed_for(self.launch):
            self._fetcher = asyncio.create_task(
                self._fetch_then_spawn(self._weights), name=f"fetch-{self.launch.launch_id}"
            )
            self._fetcher.add_done_callback(_report_crash)
            return True
        return self._spawn()

    async def _fetch_then_spawn(self, weights: LaunchWeights) -> None:
        launch = self.launch
        launch.phase, launch.progress = "downloading", None

        def show(download: Download) -> None:
            if launch.state is _S.BOOTSTRAPPING:
                launch.phase, launch.progress = "downloading", download.progress

        try:
            await weights.fetch(launch, show)
        except DownloadError as exc:
            self._fail_fetch(f"its model could not be downloaded: {exc}")
            return
        except Exception as exc:  # a bug, or an OS error nobody foresaw: never stuck here
            logger.exception("launch %s: downloading its model failed", launch.launch_id)
            self._fail_fetch(f"its model could not be downloaded: {type(exc).__name__}: {exc}")
            return
        finally:
            self._fetcher = None
        if launch.state is _S.BOOTSTRAPPING:
            self._publish(launch)  # its download id and environment, before vLLM starts
            self._spawn()

    def _fail_fetch(self, error: str) -> None:
        if self.launch.state is _S.BOOTSTRAPPING:
            self._move(_S.FAILED, error=error)

    @property
    def fetching(self) -> bool:
        """Downloading its model: nothing runs yet (found so after a restart: no pid)."""
        launch = self.launch
        return launch.state is _S.BOOTSTRAPPING and (
            self._fetcher is not None or launch.pid is None
        )

    def _spawn(self) -> bool:
        launch = self.launch
        self._log_start = log_size(launch.log_path)
        if self._remote is not None or self._fences is not None:
            self._starting = asyncio.create_task(
                self._start_later(), name=f"start-{launch.launch_id}"
            )
            self._starting.add_done_callback(_report_crash)
            return True
        return self._spawn_here()

    async def _start_later(self) -> None:
        """Start vLLM on another box, or once the fence of a launch across boxes stands. A
        stop meanwhile left the launch `stopping`: it ends here, once nothing runs."""
        try:
            if self._fences is not None and not await self._hold_fence(self._fences()):
                return
            if self._remote is not None:
                await self._spawn_remote(self._remote)
            elif self.launch.state is _S.BOOTSTRAPPING:
                self._spawn_here()
        except Exception as exc:  # a bug, or an error nobody foresaw: never stuck starting
            logger.exception("launch %s: starting it failed", self.launch.launch_id)
            if self.launch.state is _S.BOOTSTRAPPING:
                self._move(_S.FAILED, error=f"vLLM could not be started: {type(exc).__name__}")
        finally:
            self._starting = None
            if self.launch.state is _S.STOPPING and self.launch.pid is None:
                self._move(_S.STOPPED)

    async def _hold_fence(self, fence: Fence) -> bool:
        self._fence = fence
        try:
            await fence.hold()
        except Exception as exc:  # Ray's, or a box that has no room for the fence
            if self.launch.state is _S.BOOTSTRAPPING:
                self._move(
                    _S.FAILED,
                    error=f"the GPUs its workers must not take could not be fenced: {exc}",
                )
            self._release_fence()
            return False
        if self.launch.state is not _S.BOOTSTRAPPING:  # stopped meanwhile
            self._release_fence()
            return False
        return True

    def _release_fence(self) -> None:
        fence, self._fence = self._fence, None
        if fence is not None:
            task = asyncio.create_task(fence.release(), name=f"fence-{self.launch.launch_id}")
            task.add_done_callback(_report_crash)

    def _spawn_here(self) -> bool:
        launch = self.launch
        try:
            environment = child.environment(launch, ray_driver=launch.across_boxes)
            process = processes.spawn(launch.command, environment, launch.log_path)
        except OSError as exc:
            self._move(_S.FAILED, error=f"vLLM could not be started: {exc}")
            return False
        launch.pid = process.pid
        launch.process_start_ticks = processes.process_start_ticks(process.pid)
        launch.spawned_at = time.time()
        # Its first phase from now: a status read before the watcher's first step (one turn
        # of the event loop) must not show a running start-up without one.
        start = LoadProgress()
        launch.phase, launch.progress = start.phase, start.progress
        self._publish(launch)
        self._watch(processes.wait_for_exit(process))
        logger.info(
            "launch %s: started %s on GPUs %s, port %d, pid %d",
            launch.launch_id,
            escaped(launch.model),
            launch.gpu_ids,
            launch.port,
            process.pid,
        )
        return True

    async def _spawn_remote(self, remote: RemoteProcess) -> None:
        """Start vLLM on the launch's box, then watch it as a local one."""
        launch = self.launch
        try:
            pid = await remote.start(launch.command, launch.env)
        except Exception as exc:  # Ray's errors, or the box refusing (vLLM missing there)
            if launch.state is _S.BOOTSTRAPPING:
                self._move(_S.FAILED, error=f"vLLM could not be started on {launch.host}: {exc}")
            await remote.release()
            return
        if launch.state is not _S.BOOTSTRAPPING:  # stopped while it was starting there
            await remote.stop(self._settings.stop_timeout_seconds)
            await remote.release()
            return  # _start_later ends the stop
        launch.pid, launch.process_start_ticks = pid, None
        launch.spawned_at = time.time()
        start = LoadProgress()
        launch.phase, launch.progress = start.phase, start.progress
        self._publish(launch)
        self._mirror = asyncio.create_task(remote.mirror_log(), name=f"log-{launch.launch_id}")
        self._mirror.add_done_callback(_report_crash)
        self._watch(remote.wait())
        logger.info(
            "launch %s: started %s on node %s (%s), GPUs %s, port %d, pid %d there",
            launch.launch_id,
            escaped(launch.model),
            launch.node_id,
            launch.host,
            launch.gpu_ids,
            launch.port,
            pid,
        )

    def adopt(self, leader: int) -> None:
        """Watch a vLLM process that a previous run of the control plane started."""
        launch = self.launch
        if launch.pid != leader:
            launch.pid = leader
            launch.process_start_ticks = processes.process_start_ticks(leader)
            self._publish(launch)
        launch.adopted = True
        logger.info("launch %s: re-adopted %s (pid %d)", launch.launch_id, launch.state, leader)
        self._watch(processes.wait_for_adopted_exit(leader, launch.process_start_ticks))

    async def adopt_remote(self) -> None:
        """Watch a launch on another box that a previous run of the control plane started
        (the cluster lived on through the restart), or settle it if its vLLM is gone."""
        remote, launch = self._remote, self.launch
        if remote is None:
            self.abandon_after_restart()
            return
        if await remote.adopt():
            launch.adopted = True
            logger.info(
                "launch %s: re-adopted %s on %s", launch.launch_id, launch.state, launch.host
            )
            self._mirror = asyncio.create_task(remote.mirror_log(), name=f"log-{launch.launch_id}")
            self._mirror.add_done_callback(_report_crash)
            self._watch(remote.wait())
            return
        await self.settle_vanished()
        if launch.is_terminal:
            await remote.release()

    async def settle_vanished(self) -> None:
        """Its process died while the control plane was away: end what is left of it, then
        finish what was under way (a stop, a failing start) or apply the restart policy."""
        if self._remote is None and recovery.kill_remnants(self.launch.launch_id):
            await asyncio.sleep(0.1)  # SIGKILL is quick; let the kernel finish
        state = self.launch.state
        if state is _S.STOPPING:
            self._move(_S.STOPPED)  # the stop finished while we were away
        elif state is _S.FAILING:
            self._move(_S.FAILED)  # so did the failing launch's stop
        elif state is _S.RESTARTING:
            self._resume_restart()  # the backoff goes on where it was
        else:
            error = (
                f"control plane restarted while the launch was {state}; its vLLM process was gone"
            )
            if self._may_restart():
                self._restart_later(error)  # a crash while we were away is still a crash
            else:
                self._move(_S.FAILED, error=error)

    def abandon_after_restart(self) -> None:
        """A launch on another box, found by a control plane that no longer heads a cluster
        (started again without VLLM_BOOTSTRAP_RAY_HEAD): its box ends what it ran once it
        loses the head. Its record ends."""
        state = self.launch.state
        if state is _S.STOPPING:
            self._move(_S.STOPPED)
        elif state is _S.FAILING:
            self._move(_S.FAILED)
        elif not self.launch.is_terminal:
            error = (
                f"the control plane restarted while the launch was {state} on another box "
                f"({self.launch.host}), and no longer heads a cluster "
                "(VLLM_BOOTSTRAP_RAY_HEAD): that box ends it once the cluster's head is gone"
            )
            self._move(_S.FAILED, error=error)

    def stop(self) -> None:
        """Begin stopping; harmless for a launch that is already ending or has ended."""
        state = self.launch.state
        if state is _S.RESTARTING:
            if self._restart_timer is not None:
                self._restart_timer.cancel()  # nothing runs between a crash and its restart
            self._move(_S.STOPPED)
        elif self.fetching and self._starting is not None:
            # Its start is under way (on another box, or its fence): it may run any moment,
            # so the launch ends, its GPUs free, once that start has ended it (_start_later).
            self._move(_S.STOPPING)
        elif self.fetching:
            # Nothing runs yet: the download goes on for the cache (DELETE /downloads/{id}
            # stops it), the launch ends now.
            if self._fetcher is not None:
                self._fetcher.cancel()
            self._move(_S.STOPPING)
            self._move(_S.STOPPED)
        elif state in (_S.BOOTSTRAPPING, _S.READY, _S.FALLING_ASLEEP, _S.SLEEPING, _S.WAKING):
            self._move(_S.STOPPING)
            self._terminate()

    def move_by_sleep_mode(self, state: LaunchState, reason: str) -> None:
        """ready -> falling_asleep -> sleeping -> waking -> ready, as the model swapper drives
        vLLM's sleep mode (the state table refuses any other move)."""
        self._move(state, note=reason)

    def detach(self) -> None:
        """Stop watching and leave the process running, for the next start to re-adopt."""
        for task in (self._watcher, self._restart_timer, self._fetcher, self._mirror):
            if task is not None:
                task.cancel()

    async def wait_ended(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)
        return self._ended.is_set()

    # ----------------------------------------------------------------- watching the process

    def _watch(self, exit_code: Awaitable[int | None]) -> None:
        self._watcher = asyncio.create_task(
            self._watch_until_exit(exit_code), name=f"watch-{self.launch.launch_id}"
        )
        self._watcher.add_done_callback(_report_crash)

    async def _watch_until_exit(self, exit_code: Awaitable[int | None]) -> None:
        exited = asyncio.ensure_future(exit_code)
        try:
            if self.launch.state is _S.BOOTSTRAPPING:
                await self._watch_start_up(exited)
            elif self.launch.state in (_S.STOPPING, _S.FAILING):
                self._terminate()  # re-adopted in the middle of a stop
            return_code = await exited
        finally:
            exited.cancel()  # a no-op unless this watcher itself was cancelled (detach)
        await self._settle_exit(return_code)

    async def _watch_start_up(self, exited: asyncio.Future[int | None]) -> None:
        launch = self.launch
        probe = ReadinessProbe(launch.local_host, launch.port)
        progress = LoadProgress()
        launch.phase, launch.progress = progress.phase, progress.progress

        def read_progress(output: bytes) -> None:
            progress.feed(output)
            if launch.state is _S.BOOTSTRAPPING:
                launch.phase, launch.progress = progress.phase, progress.progress

        ready = asyncio.create_task(
            wait_until_ready(probe, launch.log_path, read_progress, self._log_start)
        )
        started = launch.spawned_at or launch.created_at
        time_left = started + self._settings.startup_timeout_seconds - time.time()
        try:
            done, _ = await asyncio.wait(
                {exited, ready}, timeout=max(0.0, time_left), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
        if ready in done and launch.state is _S.BOOTSTRAPPING:
            launch.served_models = ready.result()
            self._move(_S.READY)
        elif not done and launch.state is _S.BOOTSTRAPPING:
            timeout = self._settings.startup_timeout_seconds
            self._move(
                _S.FAILING,
                error=f"vLLM did not become ready within VLLM_STARTUP_TIMEOUT_SECONDS "
                f"({timeout:g} s); it was stopped",
            )
            self._terminate()

    def _terminate(self) -> None:
        grace = self._settings.stop_timeout_seconds
        if self._remote is not None:
            ending = self._remote.stop(grace)
        else:
            # Never this box's process table for a launch on another box (its pid is there).
            assert self.launch.node_id is None
            assert self.launch.pgid is not None
            ending = processes.end_group(self.launch.pgid, grace)
        self._terminator = asyncio.create_task(ending, name=f"stop-{self.launch.launch_id}")

    async def _settle_exit(self, return_code: int | None) -> None:
        """The leader exited: end what is left of its group, then record the outcome."""
        launch = self.launch
        crashed = self._terminator is None
        if self._terminator is not None:
            await self._terminator  # a stop in progress escalates to SIGKILL on its schedule
            self._terminator = None
        if self._remote is not None:
            await self._settle_remote_exit(self._remote)
        else:
            await self._end_local_remnants(crashed)
        launch.return_code = return_code
        if launch.state is _S.STOPPING:
            self._move(_S.STOPPED)
        elif launch.state is _S.FAILING:
            self._move(_S.FAILED)
        elif self._may_restart():
            self._restart_later(self._exit_error())
        else:
            self._move(_S.FAILED, error=self._exit_error())

    async def _settle_remote_exit(self, remote: RemoteProcess) -> None:
        """Its box ended the group (or is gone): take the rest of the log, and free the box's
        handle once the launch will not start there again."""
        if self._mirror is not None:
            self._mirror.cancel()
            self._mirror = None
        await remote.copy_log()  # its last lines say why it ended (a restart's error too)
        if self.launch.state in (_S.STOPPING, _S.FAILING) or not self._may_restart():
            await remote.release()

    async def _end_local_remnants(self, crashed: bool) -> None:
        launch = self.launch
        assert launch.node_id is None  # a launch on another box: never this process table
        assert launch.pgid is not None
        if crashed:
            # A crash: leftover EngineCore/workers have nothing to finish gracefully.
            processes.signal_group(launch.pgid, signal.SIGKILL)
            await processes.wait_for_group_exit(launch.pgid, processes.REMNANT_KILL_WAIT_SECONDS)
        # A process that left the group (setsid in a plugin, say) still carries the launch's
        # marker: it must not outlive the launch and keep its GPU busy.
        if recovery.kill_remnants(launch.launch_id):
            logger.warning("launch %s: killed processes that had left its group", launch.launch_id)

    def _exit_error(self) -> str:
        lost = self._remote.lost if self._remote is not None else None
        return lost or exits.exit_error(self.launch)

    # ----------------------------------------------------------------- restarts

    def _may_restart(self) -> bool:
        launch = self.launch
        return (
            launch.restart_policy is RestartPolicy.ON_FAILURE
            and launch.restart_count < launch.max_restarts
            and not launch.gpus_released  # its GPUs may be another launch's by now
            and (self._remote is None or self._remote.lost is None)  # a box gone for good
        )

    def _restart_later(self, error: str) -> None:
        """Start vLLM again after an exponential backoff, keeping the GPUs, port and id."""
        launch = self.launch
        launch.restart_count += 1
        launch.last_error = error
        launch.served_models = []
        delay = launch.next_restart_delay()
        self._move(_S.RESTARTING)
        logger.warning(
            "launch %s: %s; restart %d of %d in %g s",
            launch.launch_id,
            escaped(error),
            launch.restart_count,
            launch.max_restarts,
            delay,
        )
        self._restart_timer = asyncio.create_task(
            self._restart_after(delay), name=f"restart-{launch.launch_id}"
        )

    def _resume_restart(self) -> None:
        """Wait out what is left of a backoff that began before the control plane restarted."""
        launch = self.launch
        remaining = max(0.0, launch.updated_at + launch.next_restart_delay() - time.time())
        logger.info(
            "launch %s: restart %d of %d resumes in %.1f s",
            launch.launch_id,
            launch.restart_count,
            launch.max_restarts,
            remaining,
        )
        self._restart_timer = asyncio.create_task(
            self._restart_after(remaining), name=f"restart-{launch.launch_id}"
        )

    async def _restart_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._restart_timer = None
        # The crashed process is gone: until the new one runs, the launch has no pid (a
        # stop meanwhile must not signal a group that may be someone else's by now).
        self.launch.pid = self.launch.process_start_ticks = None
        self._move(_S.BOOTSTRAPPING)
        self.start()

    # ----------------------------------------------------------------- state

    def _move(self, state: LaunchState, error: str | None = None, note: str = "") -> None:
        launch = self.launch
        launch.move_to(state, error=error)
        self._publish(launch)
        if state is not _S.BOOTSTRAPPING:  # its workers are placed (or it ended)
            self._release_fence()
        if launch.is_terminal:
            self._ended.set()
            if self._remote is not None:  # its actor on that box, whatever path ended it
                task = asyncio.create_task(
                    self._remote.release(), name=f"release-{launch.launch_id}"
                )
                task.add_done_callback(_report_crash)
        log = logger.warning if state in (_S.FAILING, _S.FAILED) else logger.info
        why = error or note
        log("launch %s: %s%s", launch.launch_id, state, f" ({escaped(why)})" if why else "")


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s crashed", task.get_name(), exc_info=task.exception())

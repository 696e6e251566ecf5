"""The supervisor: owns every launch, its process, its GPUs and its port.

Each launch is watched by a background task from spawn to exit: it notices readiness, the
child's exit (at once, through a pidfd) and the start-up deadline on its own, so states and
GPU ownership are right before anyone asks. All claims happen on the event loop without an
`await` between the ownership check and the database insert, so racing requests for one GPU
cannot both win; the database's lease table backs that up.

A restarted control plane re-adopts the launches whose processes survived it (see
recovery.py), and a launch with restart policy "on-failure" is started again, on the same
GPUs and under the same id, after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field

import aiohttp

from vllm_bootstrap import processes, recovery
from vllm_bootstrap.config import SETTING_VARIABLES, Settings
from vllm_bootstrap.gpus import GPU, GPUDiscoveryError, query_gpu_processes, query_gpus
from vllm_bootstrap.launch import Launch, LaunchState, RestartPolicy
from vllm_bootstrap.logs import last_error_line
from vllm_bootstrap.ports import PortAllocator, is_port_free
from vllm_bootstrap.readiness import ReadinessProbe, wait_until_ready
from vllm_bootstrap.store import ResourceTaken, StateStore

logger = logging.getLogger("vllm_bootstrap.supervisor")

# Flags that set a parallel layout: when the caller passes one, we do not add our own
# --tensor-parallel-size.
PARALLEL_FLAGS = (
    "--tensor-parallel-size",
    "-tp",
    "--pipeline-parallel-size",
    "-pp",
    "--data-parallel-size",
    "-dp",
)
# A crashed server's leftover EngineCore/workers get this long to vanish after SIGKILL.
REMNANT_KILL_WAIT_SECONDS = 5.0
MAX_RESTART_BACKOFF_SECONDS = 300.0


class LaunchRefused(Exception):
    """A launch request that cannot be carried out; the message says what to fix."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class LaunchNotFound(KeyError):
    pass


@dataclass(frozen=True)
class LaunchSpec:
    model: str
    gpu_ids: list[int] | None = None
    port: int | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    force: bool = False
    restart_policy: RestartPolicy = RestartPolicy.NEVER
    max_restarts: int = 3
    restart_backoff_seconds: float = 1.0


class Supervisor:
    def __init__(
        self, settings: Settings, store: StateStore, session: aiohttp.ClientSession
    ) -> None:
        self.settings = settings
        self.store = store
        self._session = session
        self._launches: dict[str, Launch] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._terminators: dict[str, asyncio.Task[None]] = {}
        self._restarts: dict[str, asyncio.Task[None]] = {}
        self._ended: dict[str, asyncio.Event] = {}
        self._failure_on_exit: dict[str, str] = {}
        self._ports = PortAllocator(
            settings.launch_host, settings.launch_port_start, settings.launch_port_end
        )
        self._gpus: list[GPU] | None = None
        # Bumped on every state change, so readers can cache what they derive from launches.
        self.version = 0

    # ----------------------------------------------------------------- queries

    def get(self, launch_id: str) -> Launch:
        try:
            return self._launches[launch_id]
        except KeyError:
            raise LaunchNotFound(launch_id) from None

    def launches(self, include_terminal: bool = False) -> list[Launch]:
        return [
            launch
            for launch in self._launches.values()
            if include_terminal or not launch.is_terminal
        ]

    def gpu_owners(self) -> dict[int, str]:
        return {gpu: launch.launch_id for launch in self.launches() for gpu in launch.gpu_ids}

    async def detect_gpus(self, refresh: bool = False) -> list[GPU]:
        """The GPUs this server may use; the first successful answer is kept."""
        if self._gpus is None or refresh:
            self._gpus = await query_gpus()
        return self._gpus

    # ----------------------------------------------------------------- start-up

    async def recover(self) -> None:
        """Take over the launches a previous run of the control plane left live.

        A launch whose vLLM process is still the one we started is re-adopted: it keeps
        its GPUs and port and is watched as before. Any other is failed, after whatever is
        left of its process group has been killed, and its GPUs are freed.
        """
        self._launches = {launch.launch_id: launch for launch in self.store.load_all()}
        for launch in self.launches():
            leader = recovery.find_leader(launch)
            if leader is None:
                await self._settle_vanished(launch)
            else:
                self._adopt(launch, leader)
        self.version += 1

    async def _settle_vanished(self, launch: Launch) -> None:
        if recovery.kill_remnants(launch.launch_id):
            await asyncio.sleep(0.1)  # SIGKILL is quick; let the kernel finish
        if launch.state is LaunchState.STOPPING:
            self._move(launch, LaunchState.STOPPED)  # the stop finished while we were away
            return
        self._move(
            launch,
            LaunchState.FAILED,
            error=f"control plane restarted while the launch was {launch.state}; its vLLM "
            "process was gone",
        )

    def _adopt(self, launch: Launch, leader: int) -> None:
        if launch.pid != leader:
            launch.pid = leader
            launch.process_start_ticks = processes.process_start_ticks(leader)
            self.store.save(launch)
        launch.adopted = True
        logger.info("launch %s: re-adopted %s (pid %d)", launch.launch_id, launch.state, leader)
        exit_code = processes.wait_for_adopted_exit(leader, launch.process_start_ticks)
        self._start_watching(launch, exit_code)

    # ----------------------------------------------------------------- launch

    async def launch(self, spec: LaunchSpec) -> Launch:
        self.check_vllm_available()
        gpu_ids = await self._choose_gpus(spec.gpu_ids)
        if not spec.force:
            await self._check_no_foreign_users(gpu_ids)
        # From here to the insert there is no await: the claim is atomic.
        self._check_gpus_free(gpu_ids)
        port = self._choose_port(spec.port)
        launch_id = secrets.token_hex(6)
        launch = Launch(
            launch_id=launch_id,
            model=spec.model,
            gpu_ids=gpu_ids,
            port=port,
            host=self.settings.launch_host,
            command=self._command(spec, port, gpu_ids),
            log_path=self.settings.log_dir / f"{launch_id}.log",
            extra_args=list(spec.extra_args),
            env=dict(spec.env),
            restart_policy=spec.restart_policy,
            max_restarts=spec.max_restarts,
            restart_backoff_seconds=spec.restart_backoff_seconds,
        )
        try:
            self.store.insert(launch)
        except ResourceTaken as exc:
            raise LaunchRefused(409, f"GPU or port already taken: {exc}") from None
        self._launches[launch_id] = launch
        self.version += 1
        if not self._spawn(launch):
            raise LaunchRefused(503, launch.error or "vLLM could not be started")
        return launch

    def check_vllm_available(self) -> None:
        command = self.settings.vllm_command
        if self.settings.uses_default_vllm_command:
            if importlib.util.find_spec("vllm") is None:
                raise LaunchRefused(
                    503,
                    "vLLM is not installed in the server's Python environment: install it "
                    "(uv sync --extra vllm) or point VLLM_BOOTSTRAP_VLLM_COMMAND at a vLLM "
                    "installation",
                )
        elif shutil.which(command[0]) is None:
            raise LaunchRefused(
                503,
                f"VLLM_BOOTSTRAP_VLLM_COMMAND starts with {command[0]!r}, which is not an "
                "executable file or on PATH",
            )

    async def _choose_gpus(self, requested: list[int] | None) -> list[int]:
        try:
            detected = [gpu.index for gpu in await self.detect_gpus()]
        except GPUDiscoveryError as exc:
            raise LaunchRefused(503, str(exc)) from None
        if requested is None:
            if not detected:
                raise LaunchRefused(
                    503,
                    "no GPUs are available: nvidia-smi lists none" + _visible_devices_note(),
                )
            return detected
        unknown = sorted(set(requested) - set(detected))
        if unknown:
            raise LaunchRefused(
                400,
                f"gpu_ids {unknown} are not detected GPUs; detected: {detected}"
                + _visible_devices_note(),
            )
        return sorted(requested)

    async def _check_no_foreign_users(self, gpu_ids: list[int]) -> None:
        """Refuse GPUs on which a process that is not one of our launches holds memory.

        The usual culprit is a vLLM left behind by a previous container: launching next
        to it would fail later with a confusing out-of-memory error.
        """
        try:
            users = await query_gpu_processes()
        except GPUDiscoveryError as exc:
            raise LaunchRefused(
                503, f'{exc}; pass "force": true to launch without checking GPU users'
            ) from None
        index_of = {gpu.uuid: gpu.index for gpu in self._gpus or []}
        our_groups = {launch.pgid for launch in self.launches()}
        foreign = [
            user
            for user in users
            if index_of.get(user.gpu_uuid) in gpu_ids
            and processes.process_group(user.pid) not in our_groups
        ]
        if foreign:
            described = "; ".join(
                f"GPU {index_of[user.gpu_uuid]} by pid {user.pid} ({_process_name(user.pid)}, "
                f"{user.used_memory_mib} MiB)"
                for user in foreign
            )
            raise LaunchRefused(
                409,
                f"GPUs in use by processes that are not our launches: {described}. Stop "
                'them (a vLLM left behind by an earlier container?), or pass "force": true '
                "to launch anyway",
            )

    def _check_gpus_free(self, gpu_ids: Iterable[int]) -> None:
        owners = self.gpu_owners()
        taken = {gpu: owners[gpu] for gpu in gpu_ids if gpu in owners}
        if taken:
            described = ", ".join(
                f"GPU {gpu} by launch {owner} ({self._launches[owner].state})"
                for gpu, owner in sorted(taken.items())
            )
            raise LaunchRefused(409, f"GPUs already owned: {described}; stop it first")

    def _choose_port(self, requested: int | None) -> int:
        held = {launch.port: launch.launch_id for launch in self.launches()}
        if requested is None:
            port = self._ports.allocate(taken=held)
            if port is None:
                raise LaunchRefused(
                    503,
                    f"no free port left in VLLM_LAUNCH_PORT_START..VLLM_LAUNCH_PORT_END "
                    f"({self._ports.start}-{self._ports.end}): the range is exhausted; stop a "
                    "launch or widen the range",
                )
            return port
        if requested in held:
            raise LaunchRefused(409, f"port {requested} is used by launch {held[requested]}")
        if not is_port_free(self.settings.launch_host, requested):
            raise LaunchRefused(
                400,
                f"port {requested} is busy on {self.settings.launch_host}: another process "
                "listens there; choose another port or leave `port` out",
            )
        return requested

    def _command(self, spec: LaunchSpec, port: int, gpu_ids: list[int]) -> list[str]:
        command = [
            *self.settings.vllm_command,
            "--model",
            spec.model,
            "--host",
            self.settings.launch_host,
            "--port",
            str(port),
        ]
        if not any(_is_flag(arg, PARALLEL_FLAGS) for arg in spec.extra_args):
            command += ["--tensor-parallel-size", str(len(gpu_ids))]
        return command + list(spec.extra_args)

    def _child_env(self, launch: Launch) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in SETTING_VARIABLES}
        env["PYTHONUNBUFFERED"] = "1"  # log lines (and readiness hints) arrive at once
        env.update(launch.env)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as nvidia-smi does
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in launch.gpu_ids)
        env[recovery.LAUNCH_MARKER_ENV] = launch.launch_id
        return env

    def _spawn(self, launch: Launch) -> bool:
        """Start the launch's vLLM process; False (and the launch failed) if it could not."""
        try:
            process = processes.spawn(launch.command, self._child_env(launch), launch.log_path)
        except OSError as exc:
            self._move(launch, LaunchState.FAILED, error=f"vLLM could not be started: {exc}")
            return False
        launch.pid = process.pid
        launch.process_start_ticks = processes.process_start_ticks(process.pid)
        launch.spawned_at = time.time()
        self.store.save(launch)
        self._start_watching(launch, processes.wait_for_exit(process))
        logger.info(
            "launch %s: started %s on GPUs %s, port %d, pid %d",
            launch.launch_id,
            launch.model,
            launch.gpu_ids,
            launch.port,
            process.pid,
        )
        return True

    # ----------------------------------------------------------------- watching

    def _start_watching(self, launch: Launch, exit_code: Awaitable[int | None]) -> None:
        watcher = asyncio.create_task(
            self._watch(launch, exit_code), name=f"watch-{launch.launch_id}"
        )
        watcher.add_done_callback(_report_watcher_crash)
        self._watchers[launch.launch_id] = watcher

    async def _watch(self, launch: Launch, exit_code: Awaitable[int | None]) -> None:
        exited = asyncio.ensure_future(exit_code)
        try:
            if launch.state is LaunchState.BOOTSTRAPPING:
                await self._watch_start_up(launch, exited)
            elif launch.state is LaunchState.STOPPING:
                self._begin_termination(launch)  # re-adopted in the middle of a stop
            return_code = await exited
        finally:
            exited.cancel()  # a no-op unless this watcher itself was cancelled (detach)
        await self._settle_exit(launch, return_code)

    async def _watch_start_up(self, launch: Launch, exited: asyncio.Future[int | None]) -> None:
        ready = asyncio.create_task(
            wait_until_ready(ReadinessProbe(self._session, launch.local_url), launch.log_path)
        )
        started = launch.spawned_at or launch.created_at
        time_left = started + self.settings.startup_timeout_seconds - time.time()
        try:
            done, _ = await asyncio.wait(
                {exited, ready}, timeout=max(0.0, time_left), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
        if ready in done and launch.state is LaunchState.BOOTSTRAPPING:
            launch.served_models = ready.result()
            self._move(launch, LaunchState.READY)
        elif not done:
            self._failure_on_exit[launch.launch_id] = (
                f"vLLM did not become ready within VLLM_STARTUP_TIMEOUT_SECONDS "
                f"({self.settings.startup_timeout_seconds:g} s); it was stopped"
            )
            self.stop(launch.launch_id)

    async def _settle_exit(self, launch: Launch, return_code: int | None) -> None:
        """The leader exited: end what is left of its group, then record the outcome."""
        assert launch.pgid is not None
        terminator = self._terminators.pop(launch.launch_id, None)
        if terminator is not None:
            await terminator  # a stop in progress escalates to SIGKILL on its own schedule
        else:
            # A crash: leftover EngineCore/workers have nothing to finish gracefully.
            processes.signal_group(launch.pgid, signal.SIGKILL)
            await processes.wait_for_group_exit(launch.pgid, REMNANT_KILL_WAIT_SECONDS)
        self._watchers.pop(launch.launch_id, None)
        launch.return_code = return_code
        failure = self._failure_on_exit.pop(launch.launch_id, None)
        if launch.state is LaunchState.STOPPING and failure is None:
            self._move(launch, LaunchState.STOPPED)
        elif failure is None and self._may_restart(launch):
            self._restart_later(launch, error=_exit_error(launch))
        else:
            self._move(launch, LaunchState.FAILED, error=failure or _exit_error(launch))

    def _may_restart(self, launch: Launch) -> bool:
        return (
            launch.restart_policy is RestartPolicy.ON_FAILURE
            and launch.restart_count < launch.max_restarts
            and launch.state in (LaunchState.BOOTSTRAPPING, LaunchState.READY)
        )

    def _restart_later(self, launch: Launch, error: str) -> None:
        """Start the launch again after an exponential backoff, keeping its GPUs and id."""
        launch.restart_count += 1
        launch.last_error = error
        delay = min(
            launch.restart_backoff_seconds * 2 ** (launch.restart_count - 1),
            MAX_RESTART_BACKOFF_SECONDS,
        )
        launch.served_models = []
        self._move(launch, LaunchState.BOOTSTRAPPING)
        logger.warning(
            "launch %s: %s; restart %d of %d in %g s",
            launch.launch_id,
            error,
            launch.restart_count,
            launch.max_restarts,
            delay,
        )
        self._restarts[launch.launch_id] = asyncio.create_task(
            self._restart_after(launch, delay), name=f"restart-{launch.launch_id}"
        )

    async def _restart_after(self, launch: Launch, delay: float) -> None:
        await asyncio.sleep(delay)
        self._restarts.pop(launch.launch_id, None)
        self._spawn(launch)

    def _move(self, launch: Launch, state: LaunchState, error: str | None = None) -> None:
        launch.move_to(state, error=error)
        self.store.save(launch)
        self.version += 1
        if launch.is_terminal:
            self._ended_event(launch.launch_id).set()
        log = logger.warning if state is LaunchState.FAILED else logger.info
        log("launch %s: %s%s", launch.launch_id, state, f" ({error})" if error else "")

    def _ended_event(self, launch_id: str) -> asyncio.Event:
        return self._ended.setdefault(launch_id, asyncio.Event())

    # ----------------------------------------------------------------- stopping

    def stop(self, launch_id: str) -> Launch:
        """Begin stopping a launch; harmless for one that is stopping or has ended."""
        launch = self.get(launch_id)
        if launch.state not in (LaunchState.BOOTSTRAPPING, LaunchState.READY):
            return launch
        self._move(launch, LaunchState.STOPPING)
        pending_restart = self._restarts.pop(launch_id, None)
        if pending_restart is not None:
            pending_restart.cancel()  # nothing runs between a crash and its restart
            self._move(launch, LaunchState.STOPPED)
        else:
            self._begin_termination(launch)
        return launch

    def _begin_termination(self, launch: Launch) -> None:
        assert launch.pgid is not None
        self._terminators[launch.launch_id] = asyncio.create_task(
            processes.end_group(launch.pgid, self.settings.stop_timeout_seconds),
            name=f"stop-{launch.launch_id}",
        )

    async def wait_until_terminal(self, launch_id: str, timeout: float) -> Launch:
        launch = self.get(launch_id)
        if not launch.is_terminal:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended_event(launch_id).wait(), timeout)
        return launch

    async def shutdown(self) -> None:
        """Stop every live launch and wait until each has ended.

        With VLLM_BOOTSTRAP_DETACH_ON_EXIT=1 the launches are left running instead, for the
        next start of the control plane to re-adopt.
        """
        if self.settings.detach_on_exit:
            self._detach()
            return
        live = self.launches()
        for launch in live:
            self.stop(launch.launch_id)
        if live:
            logger.info("stopping %d launch(es) before exit", len(live))
            waiters = [
                asyncio.ensure_future(self._ended_event(launch.launch_id).wait()) for launch in live
            ]
            await asyncio.wait(waiters, timeout=self.settings.stop_timeout_seconds + 10)
            for waiter in waiters:
                waiter.cancel()

    def _detach(self) -> None:
        for task in [*self._watchers.values(), *self._restarts.values()]:
            task.cancel()
        live = self.launches()
        if live:
            logger.info(
                "leaving %d launch(es) running for the next start to re-adopt "
                "(VLLM_BOOTSTRAP_DETACH_ON_EXIT): %s",
                len(live),
                ", ".join(launch.launch_id for launch in live),
            )


def _report_watcher_crash(watcher: asyncio.Task[None]) -> None:
    if not watcher.cancelled() and watcher.exception() is not None:
        logger.error("%s crashed", watcher.get_name(), exc_info=watcher.exception())


def _is_flag(arg: str, flags: Iterable[str]) -> bool:
    return any(arg == flag or arg.startswith(f"{flag}=") for flag in flags)


def _exit_error(launch: Launch) -> str:
    code = launch.return_code
    if code is None:
        how = "exited (its exit code is unknown: it was re-adopted after a restart)"
    elif code < 0:
        how = f"was killed by {_signal_name(-code)}"
    else:
        how = f"exited with code {code}"
    if launch.state is LaunchState.READY:
        how = f"{how} after it was ready"
    line = last_error_line(launch.log_path)
    return f"vLLM {how}: {line}" if line else f"vLLM {how} (its log is empty)"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return "not visible from here"


def _visible_devices_note() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f" (the server's CUDA_VISIBLE_DEVICES={visible!r} limits them)" if visible else ""

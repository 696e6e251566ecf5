"""The supervisor: owns every launch, its process, its GPUs and its port.

Each launch is watched by a background task from spawn to exit: it notices readiness, the
child's exit (at once, through a pidfd) and the start-up deadline on its own, so states and
GPU ownership are right before anyone asks. All claims happen on the event loop without an
`await` between the ownership check and the database insert, so racing requests for one GPU
cannot both win; the database's lease table backs that up.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp

from vllm_bootstrap import processes
from vllm_bootstrap.config import SETTING_VARIABLES, Settings
from vllm_bootstrap.gpus import GPU, GPUDiscoveryError, query_gpus
from vllm_bootstrap.launch import Launch, LaunchState
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


class Supervisor:
    def __init__(
        self, settings: Settings, store: StateStore, session: aiohttp.ClientSession
    ) -> None:
        self.settings = settings
        self.store = store
        self._session = session
        self._launches: dict[str, Launch] = {}
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._terminators: dict[str, asyncio.Task[None]] = {}
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
        """Settle launches left live by a previous run of the control plane.

        Until restart recovery re-adopts them, a child we no longer supervise is ended, so
        its GPUs are really free before they are handed out again.
        """
        self._launches = {launch.launch_id: launch for launch in self.store.load_all()}
        stale = [launch for launch in self._launches.values() if not launch.is_terminal]
        await asyncio.gather(*(self._end_stale(launch) for launch in stale))
        self.version += 1

    async def _end_stale(self, launch: Launch) -> None:
        was = launch.state
        ours = launch.pid is not None and self._is_our_group(launch)
        if ours and launch.pgid is not None:
            await processes.end_group(launch.pgid, self.settings.stop_timeout_seconds)
        fate = "its vLLM process was stopped" if ours else "its vLLM process was already gone"
        launch.move_to(
            LaunchState.FAILED, error=f"control plane restarted while the launch was {was}; {fate}"
        )
        self.store.save(launch)
        logger.warning("launch %s: %s", launch.launch_id, launch.error)

    @staticmethod
    def _is_our_group(launch: Launch) -> bool:
        assert launch.pid is not None
        ticks = processes.process_start_ticks(launch.pid)
        if ticks is not None:
            return ticks == launch.process_start_ticks
        # The leader is gone; the kernel keeps its pid unused while its group has members,
        # so any member left is a remnant of our launch.
        return bool(processes.group_members(launch.pid))

    # ----------------------------------------------------------------- launch

    async def launch(self, spec: LaunchSpec) -> Launch:
        self.check_vllm_available()
        gpu_ids = await self._choose_gpus(spec.gpu_ids)
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
        )
        try:
            self.store.insert(launch)
        except ResourceTaken as exc:
            raise LaunchRefused(409, f"GPU or port already taken: {exc}") from None
        self._launches[launch_id] = launch
        self.version += 1
        self._spawn(launch)
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
        return env

    def _spawn(self, launch: Launch) -> None:
        try:
            process = processes.spawn(launch.command, self._child_env(launch), launch.log_path)
        except OSError as exc:
            launch.move_to(LaunchState.FAILED, error=f"vLLM could not be started: {exc}")
            self.store.save(launch)
            raise LaunchRefused(503, launch.error or "vLLM could not be started") from None
        launch.pid = process.pid
        launch.process_start_ticks = processes.process_start_ticks(process.pid)
        self.store.save(launch)
        self._processes[launch.launch_id] = process
        watcher = asyncio.create_task(
            self._watch(launch, process), name=f"watch-{launch.launch_id}"
        )
        watcher.add_done_callback(_report_watcher_crash)
        self._watchers[launch.launch_id] = watcher
        logger.info(
            "launch %s: started %s on GPUs %s, port %d, pid %d",
            launch.launch_id,
            launch.model,
            launch.gpu_ids,
            launch.port,
            process.pid,
        )

    # ----------------------------------------------------------------- watching

    async def _watch(self, launch: Launch, process: subprocess.Popen[bytes]) -> None:
        base_url = launch.local_url
        exited = asyncio.create_task(processes.wait_for_exit(process))
        ready = asyncio.create_task(
            wait_until_ready(ReadinessProbe(self._session, base_url), launch.log_path)
        )
        done, _ = await asyncio.wait(
            {exited, ready},
            timeout=self.settings.startup_timeout_seconds,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if ready in done and launch.state is LaunchState.BOOTSTRAPPING:
            launch.served_models = ready.result()
            self._move(launch, LaunchState.READY)
        elif not done:
            self._failure_on_exit[launch.launch_id] = (
                f"vLLM did not become ready within VLLM_STARTUP_TIMEOUT_SECONDS "
                f"({self.settings.startup_timeout_seconds:g} s); it was stopped"
            )
            self.stop(launch.launch_id)
        ready.cancel()
        return_code = await exited
        await self._settle_exit(launch, return_code)

    async def _settle_exit(self, launch: Launch, return_code: int) -> None:
        """The leader exited: end what is left of its group, then record the outcome."""
        assert launch.pgid is not None
        terminator = self._terminators.get(launch.launch_id)
        if terminator is not None:
            await terminator  # a stop in progress escalates to SIGKILL on its own schedule
        else:
            # A crash: leftover EngineCore/workers have nothing to finish gracefully.
            processes.signal_group(launch.pgid, signal.SIGKILL)
            await processes.wait_for_group_exit(launch.pgid, REMNANT_KILL_WAIT_SECONDS)
        launch.return_code = return_code
        failure = self._failure_on_exit.pop(launch.launch_id, None)
        if launch.state is LaunchState.STOPPING and failure is None:
            self._move(launch, LaunchState.STOPPED)
        else:
            self._move(launch, LaunchState.FAILED, error=failure or _exit_error(launch))
        self._processes.pop(launch.launch_id, None)
        self._terminators.pop(launch.launch_id, None)
        self._watchers.pop(launch.launch_id, None)

    def _move(self, launch: Launch, state: LaunchState, error: str | None = None) -> None:
        launch.move_to(state, error=error)
        self.store.save(launch)
        self.version += 1
        log = logger.warning if state is LaunchState.FAILED else logger.info
        log("launch %s: %s%s", launch.launch_id, state, f" ({error})" if error else "")

    # ----------------------------------------------------------------- stopping

    def stop(self, launch_id: str) -> Launch:
        """Begin stopping a launch; harmless for one that is stopping or has ended."""
        launch = self.get(launch_id)
        if launch.state in (LaunchState.BOOTSTRAPPING, LaunchState.READY):
            self._move(launch, LaunchState.STOPPING)
            assert launch.pgid is not None
            self._terminators[launch_id] = asyncio.create_task(
                processes.end_group(launch.pgid, self.settings.stop_timeout_seconds),
                name=f"stop-{launch_id}",
            )
        return launch

    async def wait_until_terminal(self, launch_id: str, timeout: float) -> Launch:
        watcher = self._watchers.get(launch_id)
        if watcher is not None:
            await asyncio.wait({watcher}, timeout=timeout)
        return self.get(launch_id)

    async def shutdown(self) -> None:
        """Stop every live launch and wait until each has ended."""
        for launch in self.launches():
            self.stop(launch.launch_id)
        watchers = list(self._watchers.values())
        if watchers:
            logger.info("stopping %d launch(es) before exit", len(watchers))
            await asyncio.wait(watchers, timeout=self.settings.stop_timeout_seconds + 10)


def _report_watcher_crash(watcher: asyncio.Task[None]) -> None:
    if not watcher.cancelled() and watcher.exception() is not None:
        logger.error("%s crashed", watcher.get_name(), exc_info=watcher.exception())


def _is_flag(arg: str, flags: Iterable[str]) -> bool:
    return any(arg == flag or arg.startswith(f"{flag}=") for flag in flags)


def _exit_error(launch: Launch) -> str:
    code = launch.return_code
    if code is not None and code < 0:
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


def _visible_devices_note() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f" (the server's CUDA_VISIBLE_DEVICES={visible!r} limits them)" if visible else ""

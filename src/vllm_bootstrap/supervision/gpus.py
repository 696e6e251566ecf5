"""GPU discovery through `nvidia-smi`.

GPUs are named by their `nvidia-smi` index. Children get `CUDA_DEVICE_ORDER=PCI_BUS_ID` so
CUDA numbers devices the way `nvidia-smi` does (CUDA's default "fastest first" order can
differ on mixed boxes); indices rather than UUIDs go into `CUDA_VISIBLE_DEVICES` because
parts of vLLM parse that variable as integers.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

NVIDIA_SMI = "nvidia-smi"
QUERY_FIELDS = ("index", "uuid", "name", "memory.total", "memory.used")
APP_QUERY_FIELDS = ("pid", "gpu_uuid", "used_memory")
QUERY_TIMEOUT_SECONDS = 15.0


class GPUDiscoveryError(RuntimeError):
    """The GPUs could not be listed; the message says why."""


class NoNvidiaSmi(GPUDiscoveryError):
    """nvidia-smi is not installed and no NVIDIA driver is loaded: a box without NVIDIA GPUs,
    where launches run on the CPU."""


# Present when the NVIDIA driver is loaded, in a container too (it is the host's kernel).
NVIDIA_DRIVER_MARKERS = (Path("/proc/driver/nvidia"), Path("/dev/nvidiactl"))


@dataclass(frozen=True)
class GPU:
    index: int
    uuid: str
    name: str
    memory_total_mib: int | None
    memory_used_mib: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GPUProcess:
    """A process holding memory on a GPU, as `nvidia-smi --query-compute-apps` lists it."""

    pid: int
    gpu_uuid: str
    used_memory_mib: int | None


async def query_gpu_processes() -> list[GPUProcess]:
    """Every compute process on every GPU (pids as the driver sees them)."""
    output = await _run_nvidia_smi(
        f"--query-compute-apps={','.join(APP_QUERY_FIELDS)}", "--format=csv,noheader,nounits"
    )
    processes = []
    for line in output.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != len(APP_QUERY_FIELDS) or not fields[0].isdigit():
            continue  # "No running processes found" and the like
        processes.append(GPUProcess(int(fields[0]), fields[1], _mib(fields[2])))
    return processes


# What GET /stats shows of each GPU; "[N/A]" (some boards) becomes null.
STATS_FIELDS = (
    "index",
    "memory.used",
    "memory.total",
    "utilization.gpu",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "name",  # last: a board name may hold a comma
)


async def query_gpu_stats() -> list[dict[str, Any]]:
    """Each GPU's live figures, keyed as GET /stats shows them."""
    output = await _run_nvidia_smi(
        f"--query-gpu={','.join(STATS_FIELDS)}", "--format=csv,noheader,nounits"
    )
    stats = []
    for line in output.splitlines():
        fields = [field.strip() for field in line.split(",", len(STATS_FIELDS) - 1)]
        if len(fields) != len(STATS_FIELDS) or not fields[0].isdigit():
            continue
        index, used, total, utilization, temperature, power, power_limit, name = fields
        stats.append(
            {
                "index": int(index),
                "name": name,
                "memory_used_mib": _mib(used),
                "memory_total_mib": _mib(total),
                "utilization_percent": _number(utilization),
                "temperature_c": _number(temperature),
                "power_watts": _number(power),
                "power_limit_watts": _number(power_limit),
            }
        )
    return stats


async def query_gpus(visible_devices: str | None = None) -> list[GPU]:
    """List the GPUs this server may use.

    `visible_devices` is the server's own `CUDA_VISIBLE_DEVICES` (read from the environment
    when omitted): when set, it limits the result to the GPUs it names.
    """
    if visible_devices is None:
        visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    output = await _run_nvidia_smi(
        f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"
    )
    gpus = [parse_gpu_line(line) for line in output.splitlines() if line.strip()]
    return restrict_to_visible(gpus, visible_devices)


def parse_gpu_line(line: str) -> GPU:
    fields = [field.strip() for field in line.split(",")]
    if len(fields) != len(QUERY_FIELDS):
        raise GPUDiscoveryError(f"nvidia-smi printed an unexpected line: {line.strip()!r}")
    index, uuid, name, total, used = fields
    try:
        gpu_index = int(index)
    except ValueError:
        raise GPUDiscoveryError(f"nvidia-smi printed a non-numeric GPU index: {index!r}") from None
    return GPU(gpu_index, uuid, name, _mib(total), _mib(used))


def restrict_to_visible(gpus: list[GPU], visible_devices: str | None) -> list[GPU]:
    """Keep the GPUs named by a `CUDA_VISIBLE_DEVICES` value (indices or UUID prefixes).

    Like CUDA, an entry that names no GPU ends the list: everything after it is ignored.
    """
    if visible_devices is None:
        return gpus
    chosen: list[GPU] = []
    for entry in (part.strip() for part in visible_devices.split(",")):
        gpu = _find_gpu(gpus, entry)
        if gpu is None:
            break
        if gpu not in chosen:
            chosen.append(gpu)
    return sorted(chosen, key=lambda gpu: gpu.index)


def _find_gpu(gpus: list[GPU], entry: str) -> GPU | None:
    if entry.isdigit():
        return next((gpu for gpu in gpus if gpu.index == int(entry)), None)
    if entry.startswith("GPU-"):
        matches = [gpu for gpu in gpus if gpu.uuid.startswith(entry)]
        return matches[0] if len(matches) == 1 else None
    return None


def _mib(value: str) -> int | None:
    try:
        return int(float(value))
    except ValueError:
        return None  # "[N/A]" on some boards


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


async def _run_nvidia_smi(*args: str) -> str:
    try:
        process = await asyncio.create_subprocess_exec(
            NVIDIA_SMI,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        if any(marker.exists() for marker in NVIDIA_DRIVER_MARKERS):
            raise GPUDiscoveryError(
                "GPUs could not be detected: the NVIDIA driver is loaded but nvidia-smi is not "
                "on PATH (a container started without --gpus all?)"
            ) from None
        raise NoNvidiaSmi(
            "GPUs could not be detected: nvidia-smi is not installed or not on PATH "
            "(is this a GPU machine with the NVIDIA driver?)"
        ) from None
    except OSError as exc:
        raise GPUDiscoveryError(
            f"GPUs could not be detected: nvidia-smi failed to start: {exc}"
        ) from None
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), QUERY_TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise GPUDiscoveryError(
            f"GPUs could not be detected: nvidia-smi did not answer in {QUERY_TIMEOUT_SECONDS:g} s"
        ) from None
    if process.returncode != 0:
        reason = (stderr or stdout).decode(errors="replace").strip().splitlines()
        detail = reason[0] if reason else "no output"
        raise GPUDiscoveryError(
            f"GPUs could not be detected: nvidia-smi exited with code {process.returncode}: "
            f"{detail}"
        )
    return stdout.decode(errors="replace")

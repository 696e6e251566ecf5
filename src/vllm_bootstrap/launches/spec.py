"""What a caller asks for when launching, with the one set of launch defaults, and the rules
its arguments follow (shared by POST /launch and model profiles). Pure: the supervisor turns
an admitted spec into a launch record (supervision/child.py builds its command)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vllm_bootstrap.launches.record import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_RESTART_BACKOFF_SECONDS,
    DEFAULT_RESTART_POLICY,
    RestartPolicy,
)


@dataclass(frozen=True)
class LaunchSpec:
    model: str
    gpu_ids: list[int] | None = None
    port: int | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    force: bool = False
    restart_policy: RestartPolicy = DEFAULT_RESTART_POLICY
    max_restarts: int = DEFAULT_MAX_RESTARTS
    restart_backoff_seconds: float = DEFAULT_RESTART_BACKOFF_SECONDS
    # Set for launches of model profiles: which profile, and what asked for it.
    profile: str | None = None
    reason: str | None = None
    # On a cluster's head: the box to run on (its Ray node id or address); None: the head
    # itself, or (with place_anywhere, as POST /launch asks) any box with the GPUs free.
    node: str | None = None
    place_anywhere: bool = False
    # A launch across boxes (vLLM's Ray executor): how many, and the GPUs of each it uses.
    nodes: int = 1
    gpus_per_node: int | None = None


# Flags we set ourselves; passing them in extra_args would silently win over ours
# (argparse keeps the last) and leave the launch unreachable.
RESERVED_FLAGS = {
    "--model": "set `model` instead",
    "--host": "the bind address comes from VLLM_LAUNCH_HOST",
    "--port": "set `port` instead",
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_text(field_name: str, value: str) -> str:
    if not value.strip():
        raise ValueError(f"{field_name} must not be blank")
    _reject_nul(field_name, value)
    return value


def check_extra_args(extra_args: list[str], also_reserved: Iterable[str] = ()) -> list[str]:
    """Refuse arguments that would set what we set ourselves, in any spelling."""
    reserved_here = {**RESERVED_FLAGS, **{flag: "the profile sets it" for flag in also_reserved}}
    for arg in extra_args:
        _reject_nul("extra_args", arg)
        reserved = reserved_flag(arg, reserved_here)
        if reserved is not None:
            raise ValueError(
                f"extra_args must not contain {arg.split('=', 1)[0]} (it would set "
                f"{reserved}): {reserved_here[reserved]}"
            )
    return extra_args


def check_env(env: dict[str, str]) -> dict[str, str]:
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(
                f"env name {name!r} is not a valid variable name "
                "(letters, digits and underscores, not starting with a digit)"
            )
        if name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
            raise ValueError(f"env must not set {name}: choose GPUs with gpu_ids")
        if name.startswith("BOOTSTRAP_"):
            # The marks by which a launch's processes are found again (and ended) are ours.
            raise ValueError(f"env must not set {name}: BOOTSTRAP_* names are vllm-bootstrap's")
        _reject_nul(f"env[{name!r}]", value)
    return env


def reserved_flag(arg: str, reserved: Iterable[str] = RESERVED_FLAGS) -> str | None:
    """The reserved flag `arg` would set, in any spelling vLLM's parser resolves to it:
    exact, abbreviated (argparse takes any unambiguous prefix, "--ho" for "--host"), with
    underscores for dashes, dotted ("--host.x"), with or without "=value"."""
    if not arg.startswith("--"):
        return None
    # vLLM also reads "--host.key=value" as a JSON value for --host.
    name = arg.split("=", 1)[0].split(".", 1)[0].replace("_", "-")
    if len(name) <= 2:
        return None
    return next((flag for flag in reserved if flag.startswith(name)), None)


def flag_value(extra_args: Sequence[str], flag: str) -> str | None:
    """The value vLLM's parser gives `flag` from `extra_args` (in any spelling
    `reserved_flag` knows; the last one wins, as argparse has it); None when not given."""
    value = None
    for index, arg in enumerate(extra_args):
        if reserved_flag(arg, (flag,)) is None:
            continue
        if "=" in arg:
            value = arg.split("=", 1)[1]
        elif index + 1 < len(extra_args):
            value = extra_args[index + 1]
    return value


def with_priority_scheduling(extra_args: list[str], wanted: bool) -> list[str]:
    """`extra_args`, with vLLM's priority scheduling when `wanted` (the one field launches
    and profiles have for it); ValueError when they choose another policy themselves."""
    if not wanted:
        return extra_args
    policy = flag_value(extra_args, "--scheduling-policy")
    if policy == "priority":
        return extra_args
    if policy is None and any(reserved_flag(arg, ("--scheduling-policy",)) for arg in extra_args):
        raise ValueError("--scheduling-policy in extra_args needs a value")
    if policy is not None:
        raise ValueError(
            f"priority_scheduling contradicts --scheduling-policy {policy!r} in extra_args: "
            "give one of them"
        )
    return [*extra_args, "--scheduling-policy", "priority"]


def _reject_nul(field_name: str, value: str) -> None:
    if "\x00" in value:
        raise ValueError(f"{field_name} must not contain NUL characters")

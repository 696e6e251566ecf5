"""Request bodies, validated strictly: a wrong type is an error, never silently coerced."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vllm_bootstrap.launches import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_RESTART_BACKOFF_SECONDS,
    DEFAULT_RESTART_POLICY,
    LaunchSpec,
    RestartPolicy,
    check_env,
    check_extra_args,
    check_text,
    with_priority_scheduling,
)

GpuIndex = Annotated[int, Field(ge=0, le=1023, strict=True)]


class LaunchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(
        min_length=1, max_length=4096, description="Model name or path, passed as --model."
    )
    gpu_ids: list[GpuIndex] | None = Field(
        default=None,
        max_length=1024,
        description=(
            "nvidia-smi indices of the GPUs to use; all detected GPUs when left out. On a box "
            "without nvidia-smi, leave it out (or []) to launch on the CPU."
        ),
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="Port for vLLM.")
    extra_args: list[Annotated[str, Field(max_length=65536)]] = Field(
        default_factory=list, max_length=1024, description="More vLLM command-line arguments."
    )
    env: dict[str, Annotated[str, Field(max_length=65536)]] = Field(
        default_factory=dict, max_length=1024, description="More environment variables."
    )
    force: bool = Field(
        default=False,
        description="Launch even if processes that are not our launches use the GPUs.",
    )
    restart: Literal["never", "on-failure"] = Field(
        default=DEFAULT_RESTART_POLICY.value,
        description="'on-failure': start vLLM again (same id, same GPUs) when it crashes.",
    )
    max_restarts: int = Field(
        default=DEFAULT_MAX_RESTARTS, ge=0, le=1000, description="Restarts allowed."
    )
    restart_backoff_seconds: float = Field(
        default=DEFAULT_RESTART_BACKOFF_SECONDS,
        gt=0,
        le=3600,
        description="Delay before the first restart; each further one doubles it.",
    )
    priority_scheduling: bool = Field(
        default=False,
        description=(
            "Start vLLM with --scheduling-policy priority, so batch lines yield to live "
            "requests inside vLLM."
        ),
    )
    node: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description=(
            "On a cluster's head: the box to run on, by the node_id or address GET /nodes "
            "lists (gpu_ids are that box's). Left out, the head runs it itself if it can, "
            "else on the first other box with the GPUs free."
        ),
    )
    nodes: int | None = Field(
        default=None,
        ge=2,
        le=64,
        description=(
            "On a cluster's head: run one vLLM across this many boxes (its Ray executor: "
            "tensor parallel within a box, pipeline parallel across boxes). Each box is "
            "taken whole; give gpus_per_node, and leave gpu_ids and node out."
        ),
    )
    gpus_per_node: int | None = Field(
        default=None, ge=1, le=1024, description="With nodes: the GPUs vLLM uses on each box."
    )

    def to_spec(self) -> LaunchSpec:
        return LaunchSpec(
            model=self.model,
            gpu_ids=self.gpu_ids,
            port=self.port,
            extra_args=with_priority_scheduling(self.extra_args, self.priority_scheduling),
            env=self.env,
            force=self.force,
            restart_policy=RestartPolicy(self.restart),
            max_restarts=self.max_restarts,
            restart_backoff_seconds=self.restart_backoff_seconds,
            node=self.node,
            place_anywhere=True,
            nodes=self.nodes or 1,
            gpus_per_node=self.gpus_per_node,
        )

    @model_validator(mode="after")
    def _across_boxes_is_whole(self) -> LaunchRequest:
        if self.gpus_per_node is not None and self.nodes is None:
            raise ValueError("gpus_per_node goes with nodes (a launch across boxes)")
        if self.nodes is None:
            return self
        if self.gpus_per_node is None:
            raise ValueError("nodes needs gpus_per_node: the GPUs vLLM uses on each box")
        if self.gpu_ids is not None or self.node is not None:
            raise ValueError(
                "a launch across boxes takes each of its boxes whole: leave gpu_ids and node out"
            )
        if self.port is not None:
            raise ValueError("a launch across boxes gets its port from the range: leave port out")
        return self

    @field_validator("model")
    @classmethod
    def _model_is_text(cls, model: str) -> str:
        return check_text("model", model)

    @field_validator("gpu_ids")
    @classmethod
    def _gpus_are_distinct(cls, gpu_ids: list[int] | None) -> list[int] | None:
        if gpu_ids is not None and len(set(gpu_ids)) != len(gpu_ids):
            raise ValueError(f"gpu_ids must not repeat a GPU, got {gpu_ids}")
        return gpu_ids

    @field_validator("extra_args")
    @classmethod
    def _args_leave_our_flags_alone(cls, extra_args: list[str]) -> list[str]:
        return check_extra_args(extra_args)

    @field_validator("env")
    @classmethod
    def _env_names_are_valid(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env(env)

    @model_validator(mode="after")
    def _one_scheduling_policy(self) -> LaunchRequest:
        with_priority_scheduling(self.extra_args, self.priority_scheduling)
        return self

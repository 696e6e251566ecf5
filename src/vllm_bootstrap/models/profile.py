"""A model profile: what clients call a model, and how to launch it.

name              what clients put in "model" (also vLLM's --served-model-name)
model             the weights, passed as --model
gpu_count         how many free GPUs to take, or
gpu_ids           exactly which ones (neither: one GPU)
extra_args, env   as for POST /launch
idle_ttl_seconds  stop (or put to sleep) after this long without requests; none: never
sleep             swap out with vLLM's sleep mode instead of stopping
priority_scheduling  vLLM's priority scheduling, so batch lines yield to live requests
pinned            never evicted to make room for another profile
preload           launched when the server starts
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vllm_bootstrap.launches import (
    LaunchSpec,
    check_env,
    check_extra_args,
    check_text,
    with_priority_scheduling,
)

# vLLM's sleep mode needs both (models/sleep_mode.py says why).
SLEEP_ARGS = ("--enable-sleep-mode",)
SLEEP_ENV = {"VLLM_SERVER_DEV_MODE": "1"}
NAME_RULE = (
    "a profile name is one or more segments separated by '/', none of them empty, '.' or "
    "'..' (it is a path in /models/{name})"
)
GpuIndex = Annotated[int, Field(ge=0, le=1023, strict=True)]


class ModelProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(min_length=1, max_length=256)
    model: str = Field(min_length=1, max_length=4096)
    gpu_count: int | None = Field(default=None, ge=1, le=1024)
    gpu_ids: list[GpuIndex] | None = Field(default=None, min_length=1, max_length=1024)
    extra_args: list[Annotated[str, Field(max_length=65536)]] = Field(
        default_factory=list, max_length=1024
    )
    env: dict[str, Annotated[str, Field(max_length=65536)]] = Field(
        default_factory=dict, max_length=1024
    )
    idle_ttl_seconds: float | None = Field(default=None, gt=0, le=365 * 24 * 3600)
    sleep: bool = False
    priority_scheduling: bool = False
    pinned: bool = False
    preload: bool = False

    @field_validator("name", "model")
    @classmethod
    def _text(cls, value: str, info: Any) -> str:
        return check_text(info.field_name, value)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        # The name is a path in /models/{name} (and the dashboard builds URLs of it): a
        # segment that is empty, "." or ".." would move the URL somewhere else.
        if any(segment in ("", ".", "..") for segment in name.split("/")):
            raise ValueError(NAME_RULE)
        return name

    @field_validator("extra_args")
    @classmethod
    def _args(cls, extra_args: list[str]) -> list[str]:
        return check_extra_args(extra_args, also_reserved=("--served-model-name",))

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env(env)

    @model_validator(mode="after")
    def _one_way_to_choose_gpus(self) -> ModelProfile:
        if self.gpu_count is not None and self.gpu_ids is not None:
            raise ValueError("give gpu_count or gpu_ids, not both")
        if self.gpu_ids is not None and len(set(self.gpu_ids)) != len(self.gpu_ids):
            raise ValueError(f"gpu_ids must not repeat a GPU, got {self.gpu_ids}")
        with_priority_scheduling(self.extra_args, self.priority_scheduling)
        return self

    def to_document(self) -> dict[str, Any]:
        return self.model_dump()

    def launch_spec(self, gpu_ids: list[int], reason: str, node: str | None = None) -> LaunchSpec:
        """Its launch on `gpu_ids` (of the cluster's box `node`; None: the head): served
        under its name, with sleep mode when it sleeps and priority scheduling when asked."""
        extra_args = with_priority_scheduling(self.extra_args, self.priority_scheduling)
        extra_args = [*extra_args, "--served-model-name", self.name]
        env = dict(self.env)
        if self.sleep:
            extra_args += SLEEP_ARGS
            env.update(SLEEP_ENV)
        return LaunchSpec(
            model=self.model,
            gpu_ids=gpu_ids,
            extra_args=extra_args,
            env=env,
            profile=self.name,
            reason=reason,
            node=node,
        )

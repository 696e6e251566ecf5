"""What a caller asks for when launching, with the one set of launch defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from vllm_bootstrap.config import Settings
from vllm_bootstrap.launches.record import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_RESTART_BACKOFF_SECONDS,
    DEFAULT_RESTART_POLICY,
    Launch,
    RestartPolicy,
)
from vllm_bootstrap.supervision import child


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

    def to_launch(
        self, launch_id: str, gpu_ids: list[int], port: int, settings: Settings
    ) -> Launch:
        """The record of an admitted launch, on the GPUs and port admission chose."""
        return Launch(
            launch_id=launch_id,
            model=self.model,
            gpu_ids=gpu_ids,
            port=port,
            host=settings.launch_host,
            command=child.command(settings, self.model, port, gpu_ids, self.extra_args),
            log_path=settings.log_dir / f"{launch_id}.log",
            extra_args=list(self.extra_args),
            env=dict(self.env),
            restart_policy=self.restart_policy,
            max_restarts=self.max_restarts,
            restart_backoff_seconds=self.restart_backoff_seconds,
        )

"""What every profile's object works with, gathered once: the model wing's collaborators."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vllm_bootstrap.config import Settings
from vllm_bootstrap.models.changes import Changes
from vllm_bootstrap.models.claims import GpuClaims
from vllm_bootstrap.models.index import ProfileLaunches
from vllm_bootstrap.models.store import ProfileStore
from vllm_bootstrap.serving import ModelRouter
from vllm_bootstrap.supervision import Supervisor
from vllm_bootstrap.upstream import UpstreamPool
from vllm_bootstrap.usage import UsageLedger


@dataclass(frozen=True)
class Wing:
    supervisor: Supervisor
    profiles: ProfileStore
    router: ModelRouter
    ledger: UsageLedger
    pool: UpstreamPool
    settings: Settings
    index: ProfileLaunches
    changes: Changes
    claims: GpuClaims
    # Requests waiting for any profile to load: the queue limit counts them all.
    waiting_requests: Callable[[], int]
    # Told (key id, profile, GPU-seconds) of each load a scoped key's request started.
    paid_loads: list[Callable[[str, str, float], None]] = field(default_factory=list)

"""Which models of a batch may run at once: profiles that cannot all hold GPUs together run
one after another, loaded ones first, so a batch does not make the swapper thrash."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vllm_bootstrap.launches import Launch
from vllm_bootstrap.models.profile import ModelProfile
from vllm_bootstrap.models.wing import Wing
from vllm_bootstrap.supervision import GPUDiscoveryError, NoNvidiaSmi

if TYPE_CHECKING:
    from vllm_bootstrap.models.profile_run import ProfileRun

# What is loaded (or loading, or asleep) needs no cold start: it goes first.
_FIRST = {"loaded": 0, "loading": 1, "sleeping": 2}


async def batch_order(
    models: list[str], wing: Wing, run_of: Callable[[str], ProfileRun]
) -> tuple[list[str], list[str]]:
    """The models a batch may run at once, and the profiles to run one after another because
    together they need more GPUs than launches that cannot be evicted leave free."""
    launches = wing.supervisor.registry.launches()
    wanted = [
        profile
        for model in models
        if (profile := wing.profiles.get(model)) is not None
        and not _served_by_hand(model, launches)
    ]
    if len(wanted) < 2 or await _fit_together(wanted, wing, launches):
        return models, []
    in_turn = sorted((p.name for p in wanted), key=lambda name: _FIRST.get(run_of(name).state(), 3))
    return [model for model in models if model not in in_turn], in_turn


def _served_by_hand(model: str, launches: list[Launch]) -> bool:
    return any(launch.profile is None and model in launch.served_models for launch in launches)


async def _fit_together(wanted: list[ModelProfile], wing: Wing, launches: list[Launch]) -> bool:
    try:
        detected = len(await wing.supervisor.detect_gpus())
    except NoNvidiaSmi:
        return True  # CPU launches hold no GPUs
    except GPUDiscoveryError:
        return True  # the loads will say what is wrong
    names = {profile.name for profile in wanted}
    fixed = {
        gpu
        for launch in launches
        if launch.holds_gpus
        and launch.node_id is None  # profiles run on the head: only its GPUs count
        and launch.profile not in names
        and wing.claims.never_evicted(launch)
        for gpu in launch.gpu_ids
    }
    explicit = [gpu for profile in wanted for gpu in profile.gpu_ids or []]
    if len(set(explicit)) < len(explicit) or fixed & set(explicit):
        return False
    needed = sum(len(profile.gpu_ids or []) or profile.gpu_count or 1 for profile in wanted)
    return needed <= detected - len(fixed)

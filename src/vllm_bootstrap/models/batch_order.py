"""Which models of a batch may run at once: profiles that cannot all hold GPUs together run
one after another, loaded ones first, so a batch does not make the swapper thrash."""

from __future__ import annotations

from collections.abc import Callable

from vllm_bootstrap.launches.record import Launch
from vllm_bootstrap.models.profile import ModelProfile
from vllm_bootstrap.models.store import ProfileStore
from vllm_bootstrap.supervision.gpus import GPUDiscoveryError, NoNvidiaSmi
from vllm_bootstrap.supervision.supervisor import Supervisor

# What is loaded (or loading, or asleep) needs no cold start: it goes first.
_FIRST = {"loaded": 0, "loading": 1, "sleeping": 2}


async def batch_order(
    models: list[str],
    profiles: ProfileStore,
    supervisor: Supervisor,
    load_state: Callable[[str], str],
) -> tuple[list[str], list[str]]:
    """The models a batch may run at once, and the profiles to run one after another because
    together they need more GPUs than launches that cannot be evicted leave free."""
    launches = supervisor.registry.launches()
    wanted = [
        profile
        for model in models
        if (profile := profiles.get(model)) is not None and not _served_by_hand(model, launches)
    ]
    if len(wanted) < 2 or await _fit_together(wanted, profiles, supervisor, launches):
        return models, []
    in_turn = sorted((p.name for p in wanted), key=lambda name: _FIRST.get(load_state(name), 3))
    return [model for model in models if model not in in_turn], in_turn


def _served_by_hand(model: str, launches: list[Launch]) -> bool:
    return any(launch.profile is None and model in launch.served_models for launch in launches)


async def _fit_together(
    wanted: list[ModelProfile],
    profiles: ProfileStore,
    supervisor: Supervisor,
    launches: list[Launch],
) -> bool:
    try:
        detected = len(await supervisor.detect_gpus())
    except NoNvidiaSmi:
        return True  # CPU launches hold no GPUs
    except GPUDiscoveryError:
        return True  # the loads will say what is wrong
    names = {profile.name for profile in wanted}
    fixed = {
        gpu
        for launch in launches
        if launch.holds_gpus
        and launch.profile not in names
        and not _evictable_kind(launch, profiles)
        for gpu in launch.gpu_ids
    }
    explicit = [gpu for profile in wanted for gpu in profile.gpu_ids or []]
    if len(set(explicit)) < len(explicit) or fixed & set(explicit):
        return False
    needed = sum(len(profile.gpu_ids or []) or profile.gpu_count or 1 for profile in wanted)
    return needed <= detected - len(fixed)


def _evictable_kind(launch: Launch, profiles: ProfileStore) -> bool:
    """Evictable in principle, busy or not: a profile's launch, not pinned."""
    if launch.profile is None:
        return False
    profile = profiles.get(launch.profile)
    return not (profile is not None and profile.pinned)

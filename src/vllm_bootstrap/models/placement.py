"""Where a profile's launch goes, and which launches must make room: plain functions.

The swapper gathers who holds which GPUs (`Holder`); `place` decides from that alone. A
profile takes free GPUs when there are enough; otherwise it evicts the fewest evictable
launches that free enough, preferring those used least recently. A profile with explicit
`gpu_ids` needs exactly those, so whoever holds one of them must go. `None` means: not now
(what stands in the way cannot be evicted yet); `Impossible` means: never on this box.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

# Past this many evictable launches, try the least recently used first instead of every
# combination (a box has a handful of GPUs; this only bounds the work).
MAX_COMBINATION_CANDIDATES = 12


class Impossible(ValueError):
    """The box does not have the GPUs the profile asks for."""


@dataclass(frozen=True)
class Holder:
    """A live launch holding GPUs now, and whether it may be evicted at this moment."""

    launch_id: str
    gpu_ids: tuple[int, ...]
    evictable: bool
    last_used: float


@dataclass(frozen=True)
class Plan:
    gpu_ids: list[int]
    evict: list[str]  # launch ids, least recently used first
    node: str | None = None  # on a cluster's head: the other box it goes on; None: the head


def place(
    detected: list[int],
    holders: list[Holder],
    gpu_count: int = 1,
    gpu_ids: list[int] | None = None,
    asleep_on: frozenset[int] = frozenset(),
) -> Plan | None:
    """`asleep_on`: GPUs that sleeping launches will want back; free ones are taken last."""
    if gpu_ids is not None:
        return _place_exactly(detected, holders, gpu_ids)
    if gpu_count > len(detected):
        raise Impossible(f"it needs {gpu_count} GPUs and this box has {len(detected)}")
    held = {gpu for holder in holders for gpu in holder.gpu_ids}
    free = sorted(
        (gpu for gpu in detected if gpu not in held), key=lambda gpu: (gpu in asleep_on, gpu)
    )
    if len(free) >= gpu_count:
        return Plan(free[:gpu_count], [])
    victims = _fewest_victims(holders, gpu_count - len(free))
    if victims is None:
        return None
    freed = sorted(gpu for victim in victims for gpu in victim.gpu_ids)
    return Plan(sorted(free + freed)[:gpu_count], [victim.launch_id for victim in victims])


def _place_exactly(detected: list[int], holders: list[Holder], gpu_ids: list[int]) -> Plan | None:
    missing = sorted(set(gpu_ids) - set(detected))
    if missing:
        raise Impossible(f"its gpu_ids {missing} are not on this box (it has {detected})")
    wanted = set(gpu_ids)
    blockers = [holder for holder in holders if wanted & set(holder.gpu_ids)]
    if not all(holder.evictable for holder in blockers):
        return None
    blockers.sort(key=lambda holder: holder.last_used)
    return Plan(list(gpu_ids), [holder.launch_id for holder in blockers])


def _fewest_victims(holders: list[Holder], needed: int) -> list[Holder] | None:
    """The fewest evictable holders whose GPUs add up to `needed`; among sets of that size,
    the one whose most recent use is oldest."""
    candidates = sorted(
        (holder for holder in holders if holder.evictable), key=lambda holder: holder.last_used
    )
    if sum(len(holder.gpu_ids) for holder in candidates) < needed:
        return None
    if len(candidates) > MAX_COMBINATION_CANDIDATES:
        return _least_recently_used(candidates, needed)
    for size in range(1, len(candidates) + 1):
        fitting = [
            combination
            for combination in itertools.combinations(candidates, size)
            if sum(len(holder.gpu_ids) for holder in combination) >= needed
        ]
        if fitting:
            return list(min(fitting, key=_recency))
    return None  # unreachable: all candidates together were enough


def _least_recently_used(candidates: list[Holder], needed: int) -> list[Holder]:
    chosen, freed = [], 0
    for holder in candidates:
        chosen.append(holder)
        freed += len(holder.gpu_ids)
        if freed >= needed:
            break
    return chosen


def _recency(combination: tuple[Holder, ...]) -> tuple[float, float]:
    uses = [holder.last_used for holder in combination]
    return max(uses), sum(uses)

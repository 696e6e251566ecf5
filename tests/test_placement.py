"""Where a profile's launch goes and what must make room (models/placement.py): the fewest
evictions, least recently used first, explicit GPUs, and what cannot be evicted."""

from __future__ import annotations

import pytest

from vllm_bootstrap.models.placement import Holder, Impossible, Plan, place


def holder(launch_id: str, gpus: tuple[int, ...], last_used: float, evictable: bool = True):
    return Holder(launch_id, gpus, evictable, last_used)


def test_free_gpus_are_taken_first_and_nothing_is_evicted() -> None:
    holders = [holder("a", (0,), 1.0)]
    assert place([0, 1, 2], holders, gpu_count=2) == Plan([1, 2], [])


def test_the_least_recently_used_launch_is_evicted() -> None:
    holders = [holder("recent", (0,), 50.0), holder("old", (1,), 10.0)]
    assert place([0, 1], holders, gpu_count=1) == Plan([1], ["old"])


def test_one_large_launch_goes_rather_than_two_small_ones() -> None:
    # Two one-GPU launches used long ago, one two-GPU launch used more recently: evicting
    # the one frees enough, and fewer launches are disturbed.
    holders = [
        holder("small-a", (0,), 1.0),
        holder("small-b", (1,), 2.0),
        holder("large", (2, 3), 30.0),
    ]
    assert place([0, 1, 2, 3], holders, gpu_count=2) == Plan([2, 3], ["large"])


def test_launches_that_cannot_be_evicted_are_skipped() -> None:
    holders = [holder("pinned", (0,), 1.0, evictable=False), holder("other", (1,), 9.0)]
    assert place([0, 1], holders, gpu_count=1) == Plan([1], ["other"])


def test_nothing_evictable_means_wait() -> None:
    holders = [holder("busy", (0,), 1.0, evictable=False)]
    assert place([0], holders, gpu_count=1) is None


def test_explicit_gpus_evict_whoever_holds_them() -> None:
    holders = [holder("on-one", (1,), 99.0), holder("on-zero", (0,), 1.0)]
    assert place([0, 1], holders, gpu_ids=[1]) == Plan([1], ["on-one"])
    blocked = [holder("on-one", (1,), 99.0, evictable=False)]
    assert place([0, 1], blocked, gpu_ids=[1]) is None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"gpu_count": 3}, "needs 3 GPUs and this box has 2"), ({"gpu_ids": [5]}, "[5] are not")],
)
def test_what_the_box_does_not_have_is_impossible(kwargs: dict, fragment: str) -> None:
    with pytest.raises(Impossible, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        place([0, 1], [], **kwargs)


def test_many_candidates_fall_back_to_least_recently_used_first() -> None:
    holders = [holder(f"l{i}", (i,), float(100 - i)) for i in range(16)]
    plan = place(list(range(16)), holders, gpu_count=2)
    assert plan == Plan([14, 15], ["l15", "l14"])


def test_free_gpus_no_sleeping_launch_wants_back_are_taken_first() -> None:
    plan = place([0, 1, 2], [], gpu_count=1, asleep_on=frozenset({0, 1}))
    assert plan == Plan([2], [])

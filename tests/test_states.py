"""The launch state machine: one table, the same in the code, its docstring and the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vllm_bootstrap.launches import states
from vllm_bootstrap.launches.states import (
    TRANSITIONS,
    InvalidTransition,
    LaunchState,
    check_transition,
)

README = Path(__file__).parents[1] / "README.md"


def table_in(text: str) -> dict[LaunchState, frozenset[LaunchState]]:
    """The "from / to" table as written in prose: one line per state that has moves."""
    table = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\s*([a-z_]+)\s{2,}([a-z_, ]+)", line)
        if match and match.group(1) in LaunchState.__members__.values():
            targets = [LaunchState(name.strip()) for name in match.group(2).split(",")]
            table[LaunchState(match.group(1))] = frozenset(targets)
    return table


def moves_in_code() -> dict[LaunchState, frozenset[LaunchState]]:
    return {state: targets for state, targets in TRANSITIONS.items() if targets}


def test_the_docstring_draws_the_transition_table() -> None:
    assert table_in(states.__doc__ or "") == moves_in_code()


def test_the_readme_draws_the_transition_table() -> None:
    assert table_in(README.read_text()) == moves_in_code()


def test_the_table_is_the_specified_one() -> None:
    assert moves_in_code() == {
        "bootstrapping": {"ready", "stopping", "failing", "restarting", "failed"},
        "ready": {"stopping", "restarting", "failed", "falling_asleep"},
        "falling_asleep": {"sleeping", "stopping", "restarting", "failed"},
        "sleeping": {"waking", "stopping", "failed"},
        "waking": {"ready", "stopping", "restarting", "failed"},
        "stopping": {"stopped"},
        "failing": {"failed"},
        "restarting": {"bootstrapping", "stopped", "failed"},
    }
    assert {state for state in LaunchState if state.is_terminal} == {"stopped", "failed"}
    assert {state for state in LaunchState if not state.holds_gpus} == {
        "stopped",
        "failed",
        "sleeping",
    }


@pytest.mark.parametrize("current", list(LaunchState))
def test_moves_outside_the_table_are_refused(current: LaunchState) -> None:
    for wanted in LaunchState:
        if wanted in TRANSITIONS[current]:
            check_transition("x", current, wanted)
        else:
            with pytest.raises(InvalidTransition, match=f"{current} -> {wanted}"):
                check_transition("x", current, wanted)

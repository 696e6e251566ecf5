"""The launch registry pushes every change to its subscribers; the /v1 router follows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_bootstrap.launches.record import Launch
from vllm_bootstrap.launches.registry import LaunchNotFound, LaunchRegistry
from vllm_bootstrap.launches.states import LaunchState
from vllm_bootstrap.serving.errors import NoReadyReplica, UnknownModel
from vllm_bootstrap.serving.router import ModelRouter
from vllm_bootstrap.usage import UsageLedger


def a_launch(launch_id: str, model: str = "m") -> Launch:
    return Launch(
        launch_id=launch_id,
        model=model,
        gpu_ids=[0],
        port=8001,
        host="127.0.0.1",
        command=["vllm"],
        log_path=Path(f"/tmp/{launch_id}.log"),
    )


def test_subscribers_hear_every_change_and_one_failing_does_not_silence_others() -> None:
    registry = LaunchRegistry()
    heard: list[tuple[str, str]] = []

    def broken(_launch: Launch) -> None:
        raise RuntimeError("a broken listener")

    registry.subscribe(broken)
    registry.subscribe(lambda launch: heard.append((launch.launch_id, launch.state)))
    launch = a_launch("a")
    registry.add(launch)
    launch.move_to(LaunchState.READY)
    registry.changed(launch)
    assert heard == [("a", "bootstrapping"), ("a", "ready")]


def test_lookups() -> None:
    registry = LaunchRegistry()
    live, ended = a_launch("live"), a_launch("ended")
    ended.move_to(LaunchState.FAILED)
    registry.add(live)
    registry.add(ended)
    assert registry.find("nope") is None
    with pytest.raises(LaunchNotFound):
        registry.get("nope")
    assert registry.launches() == [live]
    assert registry.launches(include_terminal=True) == [live, ended]


def test_the_balancer_rebuilds_only_when_a_change_is_announced() -> None:
    registry = LaunchRegistry()
    router = ModelRouter(registry, UsageLedger())
    launch = a_launch("a", model="llama")
    launch.served_models = ["llama"]
    launch.move_to(LaunchState.READY)
    registry.add(launch)
    assert router.choose("llama") is launch
    launch.move_to(LaunchState.STOPPING)  # not announced: the router does not poll
    assert router.choose("llama") is launch
    registry.changed(launch)
    with pytest.raises(UnknownModel):
        router.choose("llama")


def test_a_launch_waiting_out_its_restart_backoff_is_loading() -> None:
    registry = LaunchRegistry()
    router = ModelRouter(registry, UsageLedger())
    launch = a_launch("a", model="llama")
    launch.move_to(LaunchState.RESTARTING)
    registry.add(launch)
    with pytest.raises(NoReadyReplica):
        router.choose("llama")


def test_the_balancer_follows_announced_changes() -> None:
    registry = LaunchRegistry()
    router = ModelRouter(registry, UsageLedger())
    launch = a_launch("a", model="llama")
    registry.add(launch)
    with pytest.raises(NoReadyReplica):
        router.choose("llama")
    launch.served_models = ["llama"]
    launch.move_to(LaunchState.READY)
    registry.changed(launch)
    assert router.choose("llama") is launch
    launch.move_to(LaunchState.STOPPING)
    registry.changed(launch)
    with pytest.raises(UnknownModel):
        router.choose("llama")

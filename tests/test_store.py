"""The SQLite state store: atomic claims, leases freed by terminal states, old schemas."""

from __future__ import annotations

import dataclasses
import sqlite3
import stat
from pathlib import Path

import pytest

from vllm_bootstrap.launches.record import Launch, RestartPolicy
from vllm_bootstrap.launches.states import LaunchState
from vllm_bootstrap.launches.store import SCHEMA_VERSION, ResourceTaken, StateStore


def a_launch(launch_id: str, gpus: list[int], port: int) -> Launch:
    return Launch(
        launch_id=launch_id,
        model="m",
        gpu_ids=gpus,
        port=port,
        host="127.0.0.1",
        command=["vllm"],
        log_path=Path(f"/tmp/{launch_id}.log"),
    )


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state.sqlite3")


def test_a_gpu_cannot_be_leased_twice(store: StateStore) -> None:
    store.insert(a_launch("a", [0, 1], 8001))
    with pytest.raises(ResourceTaken):
        store.insert(a_launch("b", [2, 1], 8002))
    # The refused insert left nothing behind, not even its free GPU's lease.
    assert store.leases() == {0: "a", 1: "a"}
    assert [launch.launch_id for launch in store.load_all()] == ["a"]


def test_gpus_are_leased_per_node_of_a_cluster(store: StateStore) -> None:
    store.insert(a_launch("here", [0], 8001))
    remote = a_launch("there", [0], 8002)
    remote.node_id = "node-b"
    store.insert(remote)  # GPU 0 of another box is another GPU
    with pytest.raises(ResourceTaken):
        store.insert(dataclasses.replace(remote, launch_id="again", port=8003))
    assert (store.leases(), store.leases("node-b")) == ({0: "here"}, {0: "there"})
    remote.move_to(LaunchState.FAILED, error="its box left the cluster")
    store.save(remote)
    assert (store.leases(), store.leases("node-b")) == ({0: "here"}, {})


def test_a_live_port_cannot_be_taken_twice(store: StateStore) -> None:
    store.insert(a_launch("a", [0], 8001))
    with pytest.raises(ResourceTaken):
        store.insert(a_launch("b", [1], 8001))


def test_terminal_launches_give_back_gpus_and_port(store: StateStore) -> None:
    launch = a_launch("a", [0], 8001)
    store.insert(launch)
    launch.move_to(LaunchState.FAILED, error="boom")
    store.save(launch)
    assert store.leases() == {}
    store.insert(a_launch("b", [0], 8001))
    assert store.leases() == {0: "b"}


def test_sleep_gives_gpu_leases_back_and_waking_takes_them_again(store: StateStore) -> None:
    sleeper = a_launch("s", [0], 8001)
    store.insert(sleeper)
    sleeper.move_to(LaunchState.READY)
    sleeper.move_to(LaunchState.FALLING_ASLEEP)
    store.save(sleeper)
    assert store.leases() == {0: "s"}  # its GPUs hold its weights until vLLM is asleep
    sleeper.move_to(LaunchState.SLEEPING)
    store.save(sleeper)
    assert store.leases() == {}
    store.insert(a_launch("other", [0], 8002))  # GPU 0 is free while "s" sleeps
    sleeper.move_to(LaunchState.WAKING)
    with pytest.raises(ResourceTaken):
        store.save(sleeper)  # the database refuses two holders of GPU 0
    assert store.leases() == {0: "other"}


def test_a_stopping_sleeper_claims_no_gpu(store: StateStore) -> None:
    sleeper = a_launch("s", [0], 8001)
    store.insert(sleeper)
    for state in (
        LaunchState.READY,
        LaunchState.FALLING_ASLEEP,
        LaunchState.SLEEPING,
        LaunchState.STOPPING,
    ):
        sleeper.move_to(state)
    assert not sleeper.holds_gpus
    store.save(sleeper)
    assert store.leases() == {}


def test_leases_are_reset_from_the_records(store: StateStore) -> None:
    """What a crash between two writes left behind is put right at start-up."""
    held, asleep = a_launch("held", [0], 8001), a_launch("asleep", [1], 8002)
    store.insert(held)
    store.insert(asleep)
    for state in (LaunchState.READY, LaunchState.FALLING_ASLEEP, LaunchState.SLEEPING):
        asleep.move_to(state)
    store.reset_leases([held, asleep])
    assert store.leases() == {0: "held"}


def test_everything_round_trips(store: StateStore, tmp_path: Path) -> None:
    launch = a_launch("a", [3], 8009)
    launch.env = {"HF_TOKEN": "x"}
    launch.restart_policy = RestartPolicy.ON_FAILURE
    launch.max_restarts = 5
    store.insert(launch)
    launch.pid, launch.process_start_ticks, launch.served_models = 123, 456, ["m"]
    launch.move_to(LaunchState.READY)
    store.save(launch)
    again = StateStore(tmp_path / "state.sqlite3").load_all()[0]
    assert again == launch


def test_database_is_private(store: StateStore, tmp_path: Path) -> None:
    mode = (tmp_path / "state.sqlite3").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE launches (
            launch_id TEXT PRIMARY KEY, model TEXT NOT NULL, gpu_ids TEXT NOT NULL,
            port INTEGER NOT NULL, host TEXT NOT NULL, command TEXT NOT NULL,
            log_path TEXT NOT NULL, extra_args TEXT NOT NULL, env TEXT NOT NULL,
            state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
            ready_at REAL, pid INTEGER, process_start_ticks INTEGER, return_code INTEGER,
            error TEXT, served_models TEXT NOT NULL
        );
        CREATE TABLE gpu_leases (gpu_index INTEGER PRIMARY KEY, launch_id TEXT NOT NULL);
        INSERT INTO launches VALUES ('old', 'm', '[0]', 8001, '127.0.0.1', '["vllm"]',
            '/tmp/old.log', '[]', '{}', 'stopped', 1.0, 2.0, NULL, 7, 8, 0, NULL, '[]');
        PRAGMA user_version = 1;
        """
    )
    db.close()
    store = StateStore(path)
    (old,) = store.load_all()
    assert (old.launch_id, old.state, old.restart_policy) == ("old", "stopped", "never")
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION


def test_a_version_3_database_keeps_its_leases_on_this_box(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite3"
    store = StateStore(path)
    store.insert(a_launch("held", [2], 8001))
    store.close()
    db = sqlite3.connect(path)
    db.executescript(
        """
        DROP TABLE gpu_leases;
        CREATE TABLE gpu_leases (gpu_index INTEGER PRIMARY KEY, launch_id TEXT NOT NULL);
        INSERT INTO gpu_leases VALUES (2, 'held');
        PRAGMA user_version = 3;
        """
    )
    db.close()
    store = StateStore(path)
    assert store.leases() == {2: "held"}
    with pytest.raises(ResourceTaken):
        store.insert(a_launch("late", [2], 8002))
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    sqlite3.connect(path).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer vllm-bootstrap"):
        StateStore(path)

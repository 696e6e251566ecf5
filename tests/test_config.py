"""Settings come from the environment; bad values stop the server with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_bootstrap.config import ConfigError, Settings, load_settings


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert settings.host == "127.0.0.1"  # loopback unless told: keys/admin_key.py
    assert settings.port == 8000
    assert settings.launch_host == "127.0.0.1"
    assert (settings.launch_port_start, settings.launch_port_end) == (8001, 8099)
    assert settings.stop_timeout_seconds == 30
    assert settings.startup_timeout_seconds == 1800
    assert settings.vllm_command is None  # found by asking vLLM (supervision/child.py)
    assert settings.vllm_python == sys.executable
    assert settings.access_key is None


def test_every_variable_is_read() -> None:
    settings = load_settings(
        {
            "VLLM_BOOTSTRAP_HOST": "127.0.0.2",
            "VLLM_BOOTSTRAP_PORT": "9000",
            "VLLM_LAUNCH_HOST": "0.0.0.0",
            "VLLM_LAUNCH_PORT_START": "9100",
            "VLLM_LAUNCH_PORT_END": "9110",
            "VLLM_BOOTSTRAP_LOG_DIR": "/tmp/x/logs",
            "VLLM_BOOTSTRAP_STATE_DIR": "/tmp/x/state",
            "VLLM_ACCESS_KEY": "sesame",
            "VLLM_STOP_TIMEOUT_SECONDS": "2.5",
            "VLLM_STARTUP_TIMEOUT_SECONDS": "60",
            "VLLM_BOOTSTRAP_VLLM_COMMAND": (
                "/opt/venv/bin/python -m 'vllm.entrypoints.openai.api_server'"
            ),
            "VLLM_BOOTSTRAP_VLLM_PYTHON": "/opt/vllm/bin/python",
        }
    )
    assert (settings.host, settings.port) == ("127.0.0.2", 9000)
    assert settings.launch_host == "0.0.0.0"
    assert (settings.launch_port_start, settings.launch_port_end) == (9100, 9110)
    assert settings.log_dir == Path("/tmp/x/logs")
    assert settings.state_db_path == Path("/tmp/x/state/state.sqlite3")
    assert settings.access_key == "sesame"
    assert settings.stop_timeout_seconds == 2.5
    assert settings.startup_timeout_seconds == 60
    assert settings.vllm_python == "/opt/vllm/bin/python"
    assert settings.vllm_command == (
        "/opt/venv/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
    )


def test_flags_override_the_environment() -> None:
    settings = load_settings({"VLLM_BOOTSTRAP_PORT": "9000"}, host="::1", port=9001)
    assert (settings.host, settings.port) == ("::1", 9001)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("VLLM_LAUNCH_PORT_START", "9000", "VLLM_LAUNCH_PORT_START (9000) is above"),
        ("VLLM_LAUNCH_PORT_END", "eighty", "VLLM_LAUNCH_PORT_END must be a port number"),
        ("VLLM_BOOTSTRAP_PORT", "70000", "VLLM_BOOTSTRAP_PORT must be between 1 and 65535"),
        ("VLLM_STOP_TIMEOUT_SECONDS", "-1", "VLLM_STOP_TIMEOUT_SECONDS must be a positive"),
        ("VLLM_STARTUP_TIMEOUT_SECONDS", "nan", "VLLM_STARTUP_TIMEOUT_SECONDS must be a positive"),
        ("VLLM_BOOTSTRAP_VLLM_COMMAND", "python -c 'oops", "VLLM_BOOTSTRAP_VLLM_COMMAND cannot"),
        (
            "VLLM_BOOTSTRAP_BATCH_OUTPUT_RETENTION_SECONDS",
            "0.5",
            "VLLM_BOOTSTRAP_BATCH_OUTPUT_RETENTION_SECONDS must be a whole number of seconds",
        ),
        (
            "VLLM_BOOTSTRAP_MAX_HELD_BODY_BYTES",
            "1048576",
            "VLLM_BOOTSTRAP_MAX_HELD_BODY_BYTES (1048576) is below",
        ),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    env = {"VLLM_LAUNCH_PORT_END": "8099", variable: value}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VLLM_BOOTSTRAP_RAY_HEAD": "1"}, "a cluster box needs VLLM_ACCESS_KEY"),
        ({"VLLM_BOOTSTRAP_JOIN": "10.0.0.1:6379"}, "a cluster box needs VLLM_ACCESS_KEY"),
        (
            {"VLLM_BOOTSTRAP_JOIN": "head", "VLLM_ACCESS_KEY": "k"},
            "VLLM_BOOTSTRAP_JOIN must be HOST:PORT",
        ),
        (
            {"VLLM_BOOTSTRAP_JOIN": "a;b:6379", "VLLM_ACCESS_KEY": "k"},
            "VLLM_BOOTSTRAP_JOIN must name a host",
        ),
        (
            {"VLLM_BOOTSTRAP_JOIN": "h:1", "VLLM_BOOTSTRAP_RAY_HEAD": "1", "VLLM_ACCESS_KEY": "k"},
            "a box is the head or joins one",
        ),
    ],
)
def test_a_cluster_role_needs_the_key_and_one_role(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_a_worker_names_the_heads_ray_port() -> None:
    settings = load_settings({"VLLM_BOOTSTRAP_JOIN": "10.0.0.1:6380", "VLLM_ACCESS_KEY": "k"})
    assert (settings.join, settings.ray_head) == ("10.0.0.1:6380", False)
    assert load_settings({}).join is None  # a box alone: no Ray


def test_repr_never_shows_the_access_key() -> None:
    assert "sesame" not in repr(Settings(access_key="sesame"))


def test_server_refuses_to_start_with_a_bad_value() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vllm_bootstrap"],
        env={"VLLM_LAUNCH_PORT_START": "9000", "VLLM_LAUNCH_PORT_END": "8000", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "VLLM_LAUNCH_PORT_START (9000) is above VLLM_LAUNCH_PORT_END (8000)" in lines[0]


@pytest.mark.parametrize(
    ("key", "message"), [("", "set but empty"), (" sesame\n", "spaces or newlines around it")]
)
def test_an_empty_or_padded_access_key_is_a_configuration_error(key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"VLLM_ACCESS_KEY": key})


def refused_start(**variables: str) -> list[str]:
    """Start the real server with these settings; it must exit 2. Its stderr lines."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VLLM_")}
    env.update(variables)
    result = subprocess.run(
        [sys.executable, "-m", "vllm_bootstrap", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    return result.stderr.strip().splitlines()


def test_the_server_refuses_to_start_with_an_empty_access_key() -> None:
    assert refused_start(VLLM_ACCESS_KEY="") == [
        "vllm-bootstrap: configuration error: VLLM_ACCESS_KEY is set but empty: give it a "
        "value, or unset it to run without a key"
    ]


def test_the_server_refuses_to_start_on_a_state_file_that_is_not_a_database(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.sqlite3").write_bytes(b"this is not a database, " * 100)
    assert refused_start(VLLM_BOOTSTRAP_STATE_DIR=str(state)) == [
        f"vllm-bootstrap: cannot use the state database {state / 'state.sqlite3'}: "
        "file is not a database"
    ]

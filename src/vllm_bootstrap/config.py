"""Settings, read once from the environment at start-up.

Every setting is validated here so that a bad value stops the server with one line that
names the variable, instead of surfacing later as a confusing launch failure.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# The control plane's own variables. They mean nothing to vLLM (which warns about every
# unknown VLLM_* variable it sees) and one of them is a secret: children never get them.
SETTING_VARIABLES = frozenset(
    {
        "VLLM_BOOTSTRAP_HOST",
        "VLLM_BOOTSTRAP_PORT",
        "VLLM_LAUNCH_HOST",
        "VLLM_LAUNCH_PORT_START",
        "VLLM_LAUNCH_PORT_END",
        "VLLM_BOOTSTRAP_LOG_DIR",
        "VLLM_BOOTSTRAP_STATE_DIR",
        "VLLM_ACCESS_KEY",
        "VLLM_STOP_TIMEOUT_SECONDS",
        "VLLM_STARTUP_TIMEOUT_SECONDS",
        "VLLM_BOOTSTRAP_VLLM_COMMAND",
        "VLLM_BOOTSTRAP_DETACH_ON_EXIT",
        "VLLM_BOOTSTRAP_MAX_HEAD_BYTES",
        "VLLM_BOOTSTRAP_HEAD_TIMEOUT_SECONDS",
        "VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES",
        "VLLM_BOOTSTRAP_MAX_PENDING_HEADS",
        "VLLM_BOOTSTRAP_BODY_IDLE_SECONDS",
        "VLLM_BOOTSTRAP_MAX_FILE_BYTES",
        "VLLM_BATCH_MODEL_WAIT_SECONDS",
        "VLLM_BATCH_IN_FLIGHT_PER_LAUNCH",
        "VLLM_BOOTSTRAP_MODELS_FILE",
        "VLLM_BOOTSTRAP_MODEL_QUEUE_LIMIT",
    }
)


# In-flight requests (long streams) get this long after SIGTERM before the launches stop.
GRACEFUL_SHUTDOWN_SECONDS = 5


class ConfigError(ValueError):
    """A setting has a value the server cannot run with."""


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8000
    launch_host: str = "127.0.0.1"
    launch_port_start: int = 8001
    launch_port_end: int = 8099
    log_dir: Path = Path(tempfile.gettempdir()) / "vllm-bootstrap" / "logs"
    state_dir: Path = Path(tempfile.gettempdir()) / "vllm-bootstrap" / "state"
    access_key: str | None = None
    stop_timeout_seconds: float = 30.0
    startup_timeout_seconds: float = 1800.0
    vllm_command: tuple[str, ...] = (sys.executable, "-m", "vllm.entrypoints.openai.api_server")
    detach_on_exit: bool = False
    # What a client may make the server read before any route runs (nginx allows about as
    # much): the request line and headers together, and the time to send them.
    max_head_bytes: int = 64 * 1024
    head_timeout_seconds: float = 30.0
    max_pending_heads: int = 512
    body_idle_seconds: float = 60.0
    # /v1 reads a body whole to find its model: generous for long prompts and images.
    max_routed_body_bytes: int = 64 * 1024 * 1024
    # Batch jobs: the largest upload, how long a batch waits for a model nobody serves, and
    # requests kept in flight per launch (twice vLLM's default max_num_seqs, as run-batch).
    max_file_bytes: int = 8 * 1024 * 1024 * 1024
    batch_model_wait_seconds: float = 600.0
    batch_in_flight_per_launch: int = 512
    # Model profiles declared in a file (YAML or JSON), read at start-up.
    models_file: Path | None = None
    # Requests that may wait at once for profiles to load (each holds its body); past it, 429.
    model_queue_limit: int = 512

    @property
    def uses_default_vllm_command(self) -> bool:
        return self.vllm_command == Settings.vllm_command

    @property
    def state_db_path(self) -> Path:
        return self.state_dir / "state.sqlite3"

    @property
    def batch_db_path(self) -> Path:
        return self.state_dir / "batches.sqlite3"

    def __repr__(self) -> str:
        # The access key must never reach a log line through a stray repr().
        key = "<set>" if self.access_key else None
        return (
            f"Settings(host={self.host!r}, port={self.port}, launch_host={self.launch_host!r}, "
            f"launch_ports={self.launch_port_start}-{self.launch_port_end}, "
            f"log_dir={str(self.log_dir)!r}, state_dir={str(self.state_dir)!r}, access_key={key}, "
            f"stop_timeout={self.stop_timeout_seconds}, "
            f"startup_timeout={self.startup_timeout_seconds}, vllm_command={self.vllm_command!r}, "
            f"detach_on_exit={self.detach_on_exit}, max_head_bytes={self.max_head_bytes}, "
            f"head_timeout={self.head_timeout_seconds}, "
            f"max_pending_heads={self.max_pending_heads}, "
            f"body_idle={self.body_idle_seconds}, "
            f"max_routed_body_bytes={self.max_routed_body_bytes}, "
            f"max_file_bytes={self.max_file_bytes}, "
            f"batch_model_wait={self.batch_model_wait_seconds}, "
            f"batch_in_flight_per_launch={self.batch_in_flight_per_launch}, "
            f"models_file={str(self.models_file) if self.models_file else None!r}, "
            f"model_queue_limit={self.model_queue_limit})"
        )


def load_settings(
    environ: Mapping[str, str] | None = None,
    host: str | None = None,
    port: int | None = None,
) -> Settings:
    """Build settings from the environment; explicit `host`/`port` (CLI flags) win."""
    env = os.environ if environ is None else environ
    defaults = Settings()

    settings = Settings(
        host=host or _text(env, "VLLM_BOOTSTRAP_HOST", defaults.host),
        port=port if port is not None else _port(env, "VLLM_BOOTSTRAP_PORT", defaults.port),
        launch_host=_text(env, "VLLM_LAUNCH_HOST", defaults.launch_host),
        launch_port_start=_port(env, "VLLM_LAUNCH_PORT_START", defaults.launch_port_start),
        launch_port_end=_port(env, "VLLM_LAUNCH_PORT_END", defaults.launch_port_end),
        log_dir=_path(env, "VLLM_BOOTSTRAP_LOG_DIR", defaults.log_dir),
        state_dir=_path(env, "VLLM_BOOTSTRAP_STATE_DIR", defaults.state_dir),
        access_key=_access_key(env),
        stop_timeout_seconds=_seconds(
            env, "VLLM_STOP_TIMEOUT_SECONDS", defaults.stop_timeout_seconds
        ),
        startup_timeout_seconds=_seconds(
            env, "VLLM_STARTUP_TIMEOUT_SECONDS", defaults.startup_timeout_seconds
        ),
        vllm_command=_command(env, "VLLM_BOOTSTRAP_VLLM_COMMAND", defaults.vllm_command),
        detach_on_exit=_flag(env, "VLLM_BOOTSTRAP_DETACH_ON_EXIT"),
        max_head_bytes=_byte_count(env, "VLLM_BOOTSTRAP_MAX_HEAD_BYTES", defaults.max_head_bytes),
        head_timeout_seconds=_seconds(
            env, "VLLM_BOOTSTRAP_HEAD_TIMEOUT_SECONDS", defaults.head_timeout_seconds
        ),
        body_idle_seconds=_seconds(
            env, "VLLM_BOOTSTRAP_BODY_IDLE_SECONDS", defaults.body_idle_seconds
        ),
        max_pending_heads=_count(
            env, "VLLM_BOOTSTRAP_MAX_PENDING_HEADS", defaults.max_pending_heads
        ),
        max_routed_body_bytes=_byte_count(
            env,
            "VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES",
            defaults.max_routed_body_bytes,
            most=4 * 1024 * 1024 * 1024,
        ),
        max_file_bytes=_byte_count(
            env, "VLLM_BOOTSTRAP_MAX_FILE_BYTES", defaults.max_file_bytes, most=1024**4
        ),
        batch_model_wait_seconds=_seconds(
            env, "VLLM_BATCH_MODEL_WAIT_SECONDS", defaults.batch_model_wait_seconds
        ),
        batch_in_flight_per_launch=_count(
            env, "VLLM_BATCH_IN_FLIGHT_PER_LAUNCH", defaults.batch_in_flight_per_launch
        ),
        models_file=_optional_path(env, "VLLM_BOOTSTRAP_MODELS_FILE"),
        model_queue_limit=_count(
            env, "VLLM_BOOTSTRAP_MODEL_QUEUE_LIMIT", defaults.model_queue_limit
        ),
    )
    if settings.launch_port_start > settings.launch_port_end:
        raise ConfigError(
            f"VLLM_LAUNCH_PORT_START ({settings.launch_port_start}) is above "
            f"VLLM_LAUNCH_PORT_END ({settings.launch_port_end}): the port range is empty"
        )
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    return settings


def _access_key(env: Mapping[str, str]) -> str | None:
    """The key, if set. Set but empty, or with spaces around it, is a mistake to report: an
    empty key would silently open every route, and a padded one could never be presented."""
    key = env.get("VLLM_ACCESS_KEY")
    if key is None:
        return None
    if not key:
        raise ConfigError(
            "VLLM_ACCESS_KEY is set but empty: give it a value, or unset it to run without a key"
        )
    if key != key.strip():
        raise ConfigError(
            "VLLM_ACCESS_KEY has spaces or newlines around it, which no client can send in a "
            "header: remove them"
        )
    return key


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a port number, got {raw!r}") from None
    if not 1 <= value <= 65535:
        raise ConfigError(f"{name} must be between 1 and 65535, got {value}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _byte_count(
    env: Mapping[str, str], name: str, default: int, most: int = 16 * 1024 * 1024
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1024 <= int(raw) <= most:
        raise ConfigError(f"{name} must be a number of bytes from 1024 to {most}, got {raw!r}")
    return int(raw)


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 1_000_000:
        raise ConfigError(f"{name} must be a whole number from 1 to 1000000, got {raw!r}")
    return int(raw)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1 or 0 (true/false), got {raw!r}")


def _path(env: Mapping[str, str], name: str, default: Path) -> Path:
    raw = env.get(name, "").strip()
    return Path(raw).expanduser() if raw else default


def _optional_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw).expanduser() if raw else None


def _command(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        argv = tuple(shlex.split(raw))
    except ValueError as exc:
        raise ConfigError(f"{name} cannot be split into arguments: {exc}") from None
    if not argv:
        raise ConfigError(f"{name} is empty")
    return argv

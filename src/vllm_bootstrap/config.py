"""Settings, read once from the environment at start-up.

Each setting is spelled once, as a field of `Settings`: its type, the variable it is read
from and the parser that checks it (`Env`, in the annotation), and its default. The list
of variables children must not inherit, `load_settings` and the secret-free repr are all
derived from those fields. A bad value stops the server with one line that names the
variable, instead of surfacing later as a confusing launch failure.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import tempfile
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

# In-flight requests (long streams) get this long after SIGTERM before the launches stop.
GRACEFUL_SHUTDOWN_SECONDS = 5
_TEMP = Path(tempfile.gettempdir()) / "vllm-bootstrap"


class ConfigError(ValueError):
    """A setting has a value the server cannot run with."""


Parser = Callable[[str, str], Any]  # (variable, raw text) -> value; raises ConfigError


@dataclass(frozen=True)
class Env:
    """Where a setting is read from, and how its text is checked and turned into a value."""

    variable: str
    parse: Parser


# --- parsers: (variable, raw) -> value -------------------------------------------------------


def _text(_name: str, raw: str) -> str:
    return raw


def _port(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a port number, got {raw!r}") from None
    if not 1 <= value <= 65535:
        raise ConfigError(f"{name} must be between 1 and 65535, got {value}")
    return value


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _bytes_up_to(most: int) -> Parser:
    def parse(name: str, raw: str) -> int:
        if not raw.isdigit() or not 1024 <= int(raw) <= most:
            raise ConfigError(f"{name} must be a number of bytes from 1024 to {most}, got {raw!r}")
        return int(raw)

    return parse


def _whole_seconds_up_to(most: int) -> Parser:
    def parse(name: str, raw: str) -> int:
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= most:
            raise ConfigError(
                f"{name} must be a whole number of seconds from 1 to {most}, got {raw!r}"
            )
        return int(raw)

    return parse


def _count(name: str, raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 1_000_000:
        raise ConfigError(f"{name} must be a whole number from 1 to 1000000, got {raw!r}")
    return int(raw)


def _byte_count(name: str, raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise ConfigError(f"{name} must be a whole number of bytes, got {raw!r}")
    return int(raw)


def _flag(name: str, raw: str) -> bool:
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1 or 0 (true/false), got {raw!r}")


def _path(_name: str, raw: str) -> Path:
    return Path(raw).expanduser()


def _command(name: str, raw: str) -> tuple[str, ...]:
    try:
        argv = tuple(shlex.split(raw))
    except ValueError as exc:
        raise ConfigError(f"{name} cannot be split into arguments: {exc}") from None
    if not argv:
        raise ConfigError(f"{name} is empty")
    return argv


def _host_and_port(name: str, raw: str) -> str:
    host, colon, port = raw.rpartition(":")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{name} must be HOST:PORT (the head's Ray port), got {raw!r}")
    if not all(char.isalnum() or char in "-._[]:" for char in host):
        raise ConfigError(f"{name} must name a host (a name or an address), got {host!r}")
    return raw


def _access_key(name: str, raw: str) -> str:
    """Set but empty, or with spaces around it, is a mistake to report: an empty key would
    silently open every route, and a padded one could never be presented."""
    if not raw:
        raise ConfigError(
            f"{name} is set but empty: give it a value, or unset it to run without a key"
        )
    if raw != raw.strip():
        raise ConfigError(
            f"{name} has spaces or newlines around it, which no client can send in a "
            "header: remove them"
        )
    return raw


def _host_names(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated host names: `name`, `.domain` (it and its subdomains) or `*`."""
    names = tuple(part.strip().lower().rstrip(".") for part in raw.split(",") if part.strip())
    for host in names:
        if host != "*" and not all(char.isalnum() or char in "-._:[]" for char in host):
            raise ConfigError(
                f"{name} must list host names separated by commas (a name, .domain for a "
                f"domain and its subdomains, or *), got {host!r}"
            )
    return names


_MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    # Loopback unless told otherwise: a server reachable from elsewhere gets a key (keys/).
    host: Annotated[str, Env("VLLM_BOOTSTRAP_HOST", _text)] = "127.0.0.1"
    port: Annotated[int, Env("VLLM_BOOTSTRAP_PORT", _port)] = 8000
    launch_host: Annotated[str, Env("VLLM_LAUNCH_HOST", _text)] = "127.0.0.1"
    launch_port_start: Annotated[int, Env("VLLM_LAUNCH_PORT_START", _port)] = 8001
    launch_port_end: Annotated[int, Env("VLLM_LAUNCH_PORT_END", _port)] = 8099
    log_dir: Annotated[Path, Env("VLLM_BOOTSTRAP_LOG_DIR", _path)] = _TEMP / "logs"
    state_dir: Annotated[Path, Env("VLLM_BOOTSTRAP_STATE_DIR", _path)] = _TEMP / "state"
    # Never in a repr: the key must not reach a log line through a stray repr().
    access_key: Annotated[str | None, Env("VLLM_ACCESS_KEY", _access_key)] = field(
        default=None, repr=False
    )
    # Listening beyond loopback without a key: only when this says so (else one is made).
    no_key: Annotated[bool, Env("VLLM_BOOTSTRAP_NO_KEY", _flag)] = False
    # GET /health answers a bare liveness reply without a key (load balancers, probes).
    public_health: Annotated[bool, Env("VLLM_BOOTSTRAP_PUBLIC_HEALTH", _flag)] = False
    # Scoped keys' usage is written to the state database this often (what a kill -9 loses).
    usage_flush_seconds: Annotated[float, Env("VLLM_BOOTSTRAP_USAGE_FLUSH_SECONDS", _seconds)] = 1.0
    # Without a key, the Host names answered besides this machine's own (host_check.py).
    allowed_hosts: Annotated[tuple[str, ...], Env("VLLM_BOOTSTRAP_ALLOWED_HOSTS", _host_names)] = ()
    # Set by Runpod in every pod: its proxy's name for our port is one of this machine's.
    runpod_pod_id: Annotated[str | None, Env("RUNPOD_POD_ID", _text)] = None
    stop_timeout_seconds: Annotated[float, Env("VLLM_STOP_TIMEOUT_SECONDS", _seconds)] = 30.0
    startup_timeout_seconds: Annotated[float, Env("VLLM_STARTUP_TIMEOUT_SECONDS", _seconds)] = (
        1800.0
    )
    # The Python whose vLLM runs launches: `vllm serve` where that vLLM has it, else its old
    # `vllm.entrypoints.openai.api_server` module (supervision/child.py asks it which).
    vllm_python: Annotated[str, Env("VLLM_BOOTSTRAP_VLLM_PYTHON", _text)] = sys.executable
    # A command of one's own instead (the model is passed positionally when it has a
    # "serve" word, else as --model).
    vllm_command: Annotated[
        tuple[str, ...] | None, Env("VLLM_BOOTSTRAP_VLLM_COMMAND", _command)
    ] = None
    detach_on_exit: Annotated[bool, Env("VLLM_BOOTSTRAP_DETACH_ON_EXIT", _flag)] = False
    # What a client may make the server read before any route runs (nginx allows about as
    # much): the request line and headers together, and the time to send them.
    max_head_bytes: Annotated[
        int, Env("VLLM_BOOTSTRAP_MAX_HEAD_BYTES", _bytes_up_to(16 * _MiB))
    ] = 64 * 1024
    head_timeout_seconds: Annotated[float, Env("VLLM_BOOTSTRAP_HEAD_TIMEOUT_SECONDS", _seconds)] = (
        30.0
    )
    max_pending_heads: Annotated[int, Env("VLLM_BOOTSTRAP_MAX_PENDING_HEADS", _count)] = 512
    body_idle_seconds: Annotated[float, Env("VLLM_BOOTSTRAP_BODY_IDLE_SECONDS", _seconds)] = 60.0
    # /v1 reads a body whole to find its model: generous for long prompts and images.
    max_routed_body_bytes: Annotated[
        int, Env("VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES", _bytes_up_to(4 * 1024**3))
    ] = 64 * _MiB
    # ... and all the /v1 bodies held at once, while they wait for a load or for vLLM.
    max_held_body_bytes: Annotated[
        int, Env("VLLM_BOOTSTRAP_MAX_HELD_BODY_BYTES", _bytes_up_to(1024**4))
    ] = 1024 * _MiB
    # Batch jobs: the largest upload, how long a batch waits for a model nobody serves, and
    # requests kept in flight per launch (twice vLLM's default max_num_seqs, as run-batch).
    max_file_bytes: Annotated[int, Env("VLLM_BOOTSTRAP_MAX_FILE_BYTES", _bytes_up_to(1024**4))] = (
        8 * 1024**3
    )
    batch_model_wait_seconds: Annotated[float, Env("VLLM_BATCH_MODEL_WAIT_SECONDS", _seconds)] = (
        600.0
    )
    # A batch line without an answer this long is sent once more, then failed with that
    # reason (a vLLM that is wedged but alive would otherwise hold it until the batch expires).
    batch_request_timeout_seconds: Annotated[
        float, Env("VLLM_BOOTSTRAP_BATCH_REQUEST_TIMEOUT_SECONDS", _seconds)
    ] = 600.0
    # Output and error files of batches that set no output_expires_after: kept this long
    # (unset: until deleted). Expired files' content is looked for this often.
    batch_output_retention_seconds: Annotated[
        int | None,
        Env("VLLM_BOOTSTRAP_BATCH_OUTPUT_RETENTION_SECONDS", _whole_seconds_up_to(2_592_000)),
    ] = None
    file_expiry_check_seconds: Annotated[
        float, Env("VLLM_BOOTSTRAP_FILE_EXPIRY_CHECK_SECONDS", _seconds)
    ] = 60.0
    batch_in_flight_per_launch: Annotated[int, Env("VLLM_BATCH_IN_FLIGHT_PER_LAUNCH", _count)] = 512
    # On launches without priority scheduling, batch lines make way for live requests: vLLM's
    # queue is read this often while they do, and they go back to full speed once no live
    # request came for the hold (batches/yielding.py).
    batch_yield_check_seconds: Annotated[
        float, Env("VLLM_BOOTSTRAP_BATCH_YIELD_CHECK_SECONDS", _seconds)
    ] = 0.5
    batch_yield_hold_seconds: Annotated[
        float, Env("VLLM_BOOTSTRAP_BATCH_YIELD_HOLD_SECONDS", _seconds)
    ] = 2.0
    # Model profiles declared in a file (YAML or JSON), read at start-up.
    models_file: Annotated[Path | None, Env("VLLM_BOOTSTRAP_MODELS_FILE", _path)] = None
    # ... and the same YAML or JSON inline, for a template configured by env vars alone.
    models_inline: Annotated[str | None, Env("VLLM_BOOTSTRAP_MODELS", _text)] = None
    # A /v1 request (not a stream) waits this long for a profile to load, then gets 503 with
    # Retry-After while the load goes on: under the 100 s after which front proxies (Runpod's)
    # cut a silent connection.
    load_hold_seconds: Annotated[float, Env("VLLM_BOOTSTRAP_LOAD_HOLD_SECONDS", _seconds)] = 90.0
    # A stream waiting for a load gets an SSE comment this often (the same proxies' reason).
    load_keepalive_seconds: Annotated[
        float, Env("VLLM_BOOTSTRAP_LOAD_KEEPALIVE_SECONDS", _seconds)
    ] = 10.0
    # Launches of Hub models not wholly in the cache download them first, with progress and
    # a disk check (downloads/); 0 leaves the download to vLLM, as before.
    download_models: Annotated[bool, Env("VLLM_BOOTSTRAP_DOWNLOAD_MODELS", _flag)] = True
    # Files of one download fetched at once.
    download_workers: Annotated[int, Env("VLLM_BOOTSTRAP_DOWNLOAD_WORKERS", _count)] = 8
    # A download must leave this much free where the cache lives, or it is refused (507).
    disk_margin_bytes: Annotated[int, Env("VLLM_BOOTSTRAP_DISK_MARGIN_BYTES", _byte_count)] = (
        1024**3
    )
    # Requests that may wait at once for profiles to load (each holds its body); past it, 429.
    model_queue_limit: Annotated[int, Env("VLLM_BOOTSTRAP_MODEL_QUEUE_LIMIT", _count)] = 512
    # A launch used this recently is not evicted: requests that waited for it to load may
    # not have reached it yet.
    eviction_grace_seconds: Annotated[
        float, Env("VLLM_BOOTSTRAP_EVICTION_GRACE_SECONDS", _seconds)
    ] = 1.0
    # How often idle launches are looked for (each profile's idle_ttl_seconds).
    idle_check_seconds: Annotated[float, Env("VLLM_BOOTSTRAP_IDLE_CHECK_SECONDS", _seconds)] = 1.0
    # Several boxes as one endpoint (cluster/). The head starts a Ray head node on this port
    # for the workers to join; a worker names the head's HOST:PORT in VLLM_BOOTSTRAP_JOIN.
    ray_head: Annotated[bool, Env("VLLM_BOOTSTRAP_RAY_HEAD", _flag)] = False
    ray_port: Annotated[int, Env("VLLM_BOOTSTRAP_RAY_PORT", _port)] = 6379
    join: Annotated[str | None, Env("VLLM_BOOTSTRAP_JOIN", _host_and_port)] = None
    # This box's address on the network the boxes share (Ray advertises it); else Ray's pick.
    node_address: Annotated[str | None, Env("VLLM_BOOTSTRAP_NODE_ADDRESS", _text)] = None
    # Where Ray keeps its sessions, logs and sockets on this box (else Ray's /tmp/ray; a
    # socket's path must stay under 108 bytes).
    ray_temp_dir: Annotated[Path | None, Env("VLLM_BOOTSTRAP_RAY_TEMP_DIR", _path)] = None
    # More arguments for `ray start` (--object-store-memory, --resources, ...).
    ray_start_args: Annotated[tuple[str, ...], Env("VLLM_BOOTSTRAP_RAY_START_ARGS", _command)] = ()

    @property
    def state_db_path(self) -> Path:
        return self.state_dir / "state.sqlite3"

    @property
    def admin_key_path(self) -> Path:
        """Where the admin key made for a server without VLLM_ACCESS_KEY is kept."""
        return self.state_dir / "admin-key"

    @property
    def batch_db_path(self) -> Path:
        return self.state_dir / "batches.sqlite3"

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{item.name}={getattr(self, item.name)!r}"
            for item in dataclasses.fields(self)
            if item.repr
        )
        return f"Settings({shown}, access_key={'<set>' if self.access_key else None})"


def _sources() -> dict[str, Env]:
    """Each field's Env, from the annotations (written once, above)."""
    hints = typing.get_type_hints(Settings, include_extras=True)
    return {
        name: hint.__metadata__[0] for name, hint in hints.items() if hasattr(hint, "__metadata__")
    }


# The control plane's own variables. They mean nothing to vLLM (which warns about every
# unknown VLLM_* variable it sees) and one of them is a secret: children never get them.
# The platform's own (RUNPOD_POD_ID) are read, not owned, and stay in children's view.
SETTING_VARIABLES = frozenset(
    source.variable for source in _sources().values() if source.variable.startswith("VLLM_")
)


def load_settings(
    environ: Mapping[str, str] | None = None,
    host: str | None = None,
    port: int | None = None,
) -> Settings:
    """Build settings from the environment; explicit `host`/`port` (CLI flags) win."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, source in _sources().items():
        raw = env.get(source.variable)
        if raw is None:
            continue
        if source.parse is not _access_key:  # a padded key is an error, not to be trimmed
            raw = raw.strip()
            if not raw:
                continue
        values[name] = source.parse(source.variable, raw)
    if host:
        values["host"] = host
    if port is not None:
        if not 1 <= port <= 65535:
            raise ConfigError(f"--port must be between 1 and 65535, got {port}")
        values["port"] = port
    settings = Settings(**values)
    if settings.launch_port_start > settings.launch_port_end:
        raise ConfigError(
            f"VLLM_LAUNCH_PORT_START ({settings.launch_port_start}) is above "
            f"VLLM_LAUNCH_PORT_END ({settings.launch_port_end}): the port range is empty"
        )
    if settings.max_held_body_bytes < settings.max_routed_body_bytes:
        raise ConfigError(
            f"VLLM_BOOTSTRAP_MAX_HELD_BODY_BYTES ({settings.max_held_body_bytes}) is below "
            f"VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES ({settings.max_routed_body_bytes}): a body "
            "the routed limit allows could never be held"
        )
    _check_cluster_role(settings)
    return settings


def _check_cluster_role(settings: Settings) -> None:
    if settings.ray_head and settings.join:
        raise ConfigError(
            "VLLM_BOOTSTRAP_RAY_HEAD and VLLM_BOOTSTRAP_JOIN are both set: a box is the head "
            "or joins one"
        )
    if (settings.ray_head or settings.join) and not settings.access_key:
        # Anyone who reaches a Ray port without a token can run code on every box.
        raise ConfigError(
            "a cluster box needs VLLM_ACCESS_KEY (the same on every box): Ray's token is "
            "made from it"
        )

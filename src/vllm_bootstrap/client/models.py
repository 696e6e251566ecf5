"""The server's answers as typed objects. Unknown fields are kept (`model_extra`), so a
newer server's additions never break an older client."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

# A batch in one of these has ended (OpenAI's terminal states).
BATCH_ENDED = ("completed", "failed", "cancelled", "expired")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")

    # `answer["field"]`, `"field" in answer`, `.get()` and `.keys()` read the answer's
    # fields (its own and any the server added): scripts written when some answers were
    # plain dicts (batches, /stats' host) keep working.

    def keys(self) -> list[str]:
        return [*type(self).model_fields, *(self.model_extra or {})]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.keys()

    def __getitem__(self, name: str) -> Any:
        if name not in self:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default


class Launch(_Answer):
    launch_id: str
    model: str
    state: str
    gpu_ids: list[int]
    port: int
    served_models: list[str] = []
    phase: str | None = None
    progress: float | None = None
    error: str | None = None
    return_code: int | None = None
    profile: str | None = None
    reason: str | None = None
    in_flight: int = 0
    created_at: str | None = None
    ready_at: str | None = None
    download_id: str | None = None  # the download it waits for (phase "downloading")
    node_id: str | None = None  # on a cluster's head: the other box running it
    other_node_gpus: dict[str, list[int]] = {}  # a launch across boxes: its other boxes
    host: str | None = None

    @property
    def is_ended(self) -> bool:
        return self.state in ("stopped", "failed")


class LogChunk(_Answer):
    launch_id: str
    offset: int
    next_offset: int
    size: int
    content: str


class Gpu(_Answer):
    """A GPU this server may use (GET /gpus), and the launch holding it."""

    index: int
    name: str
    uuid: str | None = None
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    launch_id: str | None = None
    node_id: str | None = None  # on a cluster's head: the box it is on


class GpuStats(_Answer):
    index: int
    name: str
    memory_used_mib: int | None = None
    memory_total_mib: int | None = None
    utilization_percent: float | None = None
    temperature_c: float | None = None
    power_watts: float | None = None
    launch_id: str | None = None


class Memory(_Answer):
    total_bytes: int | None = None
    available_bytes: int | None = None
    used_bytes: int | None = None


class Disk(_Answer):
    path: str
    total_bytes: int | None = None
    used_bytes: int | None = None
    free_bytes: int | None = None
    error: str | None = None  # the folder's file system could not be read


class Host(_Answer):
    load_average: list[float] = []
    cpu_count: int | None = None
    memory: Memory = Memory()
    disks: dict[str, Disk] = {}  # by what the folder holds: "state", "logs", ...


class Node(_Answer):
    """A box of the endpoint (GET /nodes): on a cluster's head, each Ray node."""

    node_id: str | None = None  # None: a box alone
    address: str | None = None
    alive: bool = True
    head: bool = True
    gpus: list[GpuStats] = []
    error: str | None = None


class Stats(_Answer):
    host: Host
    gpus: list[GpuStats]
    error: str | None = None
    nodes: list[Node] | None = None  # on a cluster's head


class FileObject(_Answer):
    """An uploaded or produced file (/v1/files), in OpenAI's shape."""

    id: str
    bytes: int = 0
    filename: str = ""
    purpose: str = ""
    created_at: int | None = None
    expires_at: int | None = None


class RequestCounts(_Answer):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(_Answer):
    """Why a batch failed validation: `line` is the input line (from 1)."""

    message: str
    code: str | None = None
    line: int | None = None
    param: str | None = None

    def as_line(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.code or 'error'}: {self.message}"


class BatchErrors(_Answer):
    data: list[BatchError] = []


class Batch(_Answer):
    """A batch job, in OpenAI's shape. `status`: validating, in_progress, finalizing, then
    completed, failed, cancelling, cancelled or expired."""

    id: str
    status: str
    endpoint: str = ""
    input_file_id: str = ""
    completion_window: str = "24h"
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: BatchErrors | None = None
    request_counts: RequestCounts = RequestCounts()
    metadata: dict[str, str] | None = None
    created_at: int | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    expires_at: int | None = None
    expired_at: int | None = None

    @property
    def is_ended(self) -> bool:
        return self.status in BATCH_ENDED

    @property
    def error_lines(self) -> list[str]:
        """Its validation errors as a person reads them: "line 2: invalid_method: ..."."""
        return [error.as_line() for error in (self.errors.data if self.errors else [])]


class ProfileStatus(_Answer):
    state: str
    launch_id: str | None = None
    launch_state: str | None = None
    last_request_at: str | None = None
    in_flight: int = 0
    waiting: int = 0
    last_error: str | None = None


class Profile(_Answer):
    name: str
    model: str
    gpu_count: int | None = None
    gpu_ids: list[int] | None = None
    extra_args: list[str] = []
    idle_ttl_seconds: float | None = None
    sleep: bool = False
    priority_scheduling: bool = False
    pinned: bool = False
    preload: bool = False
    status: ProfileStatus | None = None


class ApiKey(_Answer):
    """A scoped key as GET /keys shows it: never its secret, only the secret's `prefix`."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    models: list[str] | None = None  # None: every model
    max_concurrency: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    priority: int = 0
    expires_at: int | None = None  # Unix seconds; None: never
    created_at: int
    in_flight: int = 0


class NewApiKey(ApiKey):
    """The answer to POST /keys: the key with its secret, which no later answer shows."""

    key: str


class UsageRow(_Answer):
    """One row of GET /usage: figures summed over what was not grouped by. `key_id` and `key`
    (its name), `model` and `day` are set only when grouped by them."""

    key_id: str | None = None
    key: str | None = None
    model: str | None = None
    day: str | None = None
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    errors: int = 0
    batch_lines: int = 0
    load_gpu_seconds: float = 0.0


DOWNLOAD_ENDED = ("completed", "failed", "cancelled")


class Download(_Answer):
    """A model's files being fetched into the Hugging Face cache (POST /downloads).
    `state`: queued, downloading, then completed, failed or cancelled."""

    id: str
    model: str
    revision: str = "main"
    commit: str | None = None
    state: str
    weights: bool = True
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    progress: float | None = None  # of the bytes; None until their total is known
    bytes_per_second: float | None = None  # only while downloading
    eta_seconds: float | None = None
    error: str | None = None
    reason: str | None = None  # what asked for it first: "POST /downloads", "launch ..."
    cached: bool = False  # every file was in the cache already: nothing was fetched
    created_at: str | None = None
    finished_at: str | None = None

    @property
    def is_ended(self) -> bool:
        return self.state in DOWNLOAD_ENDED


class CachedRevision(_Answer):
    commit: str
    refs: list[str] = []
    size_on_disk: int = 0
    files: int = 0


class CachedModel(_Answer):
    """A model repository in the cache and who uses it: live launches, profiles, and
    whether a download is writing to it (any of them makes removing it a 409)."""

    model: str
    size_on_disk: int
    revisions: list[CachedRevision] = []
    last_used: str | None = None
    last_modified: str | None = None
    launches: list[str] = []
    profiles: list[str] = []
    downloading: bool = False


class Cache(_Answer):
    """GET /cache: where the cache is, the disk's free bytes there, and its models (`data`)."""

    path: str
    free_bytes: int | None = None
    data: list[CachedModel] = []


class CacheRemoval(_Answer):
    """DELETE /cache/{org}/{repo}: the repository's folder is gone, `freed_bytes` with it."""

    model: str
    deleted: bool
    freed_bytes: int

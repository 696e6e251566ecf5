"""Why a model profile could not be served, in the words a client reads. `api/errors.py`
gives each its status, code and Retry-After."""

from __future__ import annotations


class LoadFailed(RuntimeError):
    """The profile could not be brought up; the message says why."""


class ModelLoadFailed(RuntimeError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"The model `{name}` could not be loaded: {reason}")
        # For a scoped key: the reason may name other profiles and launches on the box.
        self.brief = f"The model `{name}` could not be loaded now; retry later"


class LoadTimedOut(RuntimeError):
    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(
            f"The model `{name}` did not load within {seconds:g} s "
            "(VLLM_BATCH_MODEL_WAIT_SECONDS); it may be waiting for GPUs: see GET /models"
        )


class QueueFull(RuntimeError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"{limit} requests are already waiting for models to load "
            "(VLLM_BOOTSTRAP_MODEL_QUEUE_LIMIT); retry later"
        )


class NoSuchProfile(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no model profile named {name!r}")
        self.message = str(self)


class ProfileBusy(RuntimeError):
    def __init__(self, launch_id: str) -> None:
        super().__init__(f"launch {launch_id} is being woken or unloaded already: retry shortly")


class Abandoned(Exception):
    """Nobody waits any more for a load that had not got its GPUs: it gives its place up."""

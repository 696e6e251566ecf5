"""ANY /proxy/{launch_id}/{path}: a transparent reverse proxy to one launch, by its id."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import Receive, Scope, Send

from vllm_bootstrap.keys import METER_IN_SCOPE, ApiKey, key_of
from vllm_bootstrap.launches import Launch, LaunchDirectory, LaunchState
from vllm_bootstrap.serving.errors import (
    LaunchAsleep,
    LaunchNotReady,
    NoSuchLaunch,
    SwapperOnlyRoute,
)
from vllm_bootstrap.serving.forward import Forwarder

PROXY_PREFIX = "/proxy/"
# vLLM's development routes (served with VLLM_SERVER_DEV_MODE=1, which sleep-mode profile
# launches need) that change the engine's state behind the model swapper's back: a /sleep
# sent past it would leave a "ready" launch asleep, a /wake_up one that shares its GPUs.
_SWAPPER_ONLY_PATHS = frozenset(
    {
        b"/sleep",
        b"/wake_up",
        b"/release_kv_cache_memory",
        b"/collective_rpc",
        b"/pause",
        b"/resume",
        b"/init_weight_transfer_engine",
        b"/shutdown_weight_transfer_engine",
        b"/start_weight_update",
        b"/start_draft_weight_update",
        b"/update_weights",
        b"/finish_weight_update",
        b"/update_weight_version",
    }
)


class LaunchProxy:
    def __init__(self, directory: LaunchDirectory, forwarder: Forwarder) -> None:
        self._directory = directory
        self._forwarder = forwarder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The id is read from the raw path, the same bytes the upstream path is cut from: an
        # id sent percent-encoded matches no launch instead of cutting the path wrong.
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        raw_id, _, _ = raw_path[len(PROXY_PREFIX) :].partition(b"/")
        launch_id = raw_id.decode("latin-1")
        launch = self._directory.find(launch_id)
        key = key_of(scope)
        if launch is None or (key is not None and not _serves_for(launch, key)):
            raise NoSuchLaunch(launch_id)  # another key's launch is as if it did not exist
        if launch.state in (LaunchState.SLEEPING, LaunchState.FALLING_ASLEEP):
            raise LaunchAsleep(launch_id, launch.profile, launch.state)
        if launch.state is not LaunchState.READY:
            raise LaunchNotReady(launch_id, launch.state)
        upstream_path = raw_path[len(PROXY_PREFIX) + len(raw_id) :] or b"/"
        if launch.profile is not None and _swapper_only(upstream_path):
            raise SwapperOnlyRoute(launch_id, launch.profile)
        if key is not None:
            scope[METER_IN_SCOPE].model = launch.profile or launch.model
        await self._forwarder.forward(scope, receive, send, launch, upstream_path, None)


def _serves_for(launch: Launch, key: ApiKey) -> bool:
    """It serves one of the key's models (by served name, model or profile name)."""
    names = (launch.model, launch.profile, *launch.served_models)
    return key.models is None or any(name in key.models for name in names if name)


def _swapper_only(path: bytes) -> bool:
    # vLLM's router matches the decoded path, with or without a trailing slash.
    decoded = unquote_to_bytes(path.split(b"?", 1)[0]).rstrip(b"/")
    return decoded in _SWAPPER_ONLY_PATHS

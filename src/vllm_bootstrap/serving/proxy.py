"""ANY /proxy/{launch_id}/{path}: a transparent reverse proxy to one launch, by its id."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import Receive, Scope, Send

from vllm_bootstrap.launches.registry import LaunchDirectory
from vllm_bootstrap.launches.states import LaunchState
from vllm_bootstrap.serving.errors import plain_error
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
        if launch is None:
            await self._refuse(send, 404, f"no launch with id {launch_id!r}", "launch_not_found")
            return
        if launch.state is LaunchState.SLEEPING:
            # Its GPUs may be another launch's now: a /wake_up sent past us would collide.
            message = (
                f"launch {launch_id} is asleep (vLLM's sleep mode): wake it with "
                f"POST /models/{launch.profile}/load, or send a /v1 request for it"
            )
            await self._refuse(send, 409, message, "launch_asleep")
            return
        if launch.state is not LaunchState.READY:
            message = f"launch {launch_id} is {launch.state}, not ready: retry later"
            await self._refuse(send, 409, message, "launch_not_ready")
            return
        upstream_path = raw_path[len(PROXY_PREFIX) + len(raw_id) :] or b"/"
        if launch.profile is not None and _swapper_only(upstream_path):
            message = (
                f"launch {launch_id} runs model profile {launch.profile!r}, whose sleep mode "
                "the server drives: use POST /models/{name}/load or /unload"
            )
            await self._refuse(send, 403, message, "swapper_only_route")
            return
        await self._forwarder.forward(
            scope, receive, send, launch, upstream_path, None, plain_error
        )

    async def _refuse(self, send: Send, status: int, message: str, code: str) -> None:
        if self._forwarder.observer is not None:
            self._forwarder.observer.refused("proxy", code)
        await plain_error(send, status, message)


def _swapper_only(path: bytes) -> bool:
    # vLLM's router matches the decoded path, with or without a trailing slash.
    decoded = unquote_to_bytes(path.split(b"?", 1)[0]).rstrip(b"/")
    return decoded in _SWAPPER_ONLY_PATHS

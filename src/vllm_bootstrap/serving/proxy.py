"""ANY /proxy/{launch_id}/{path}: a transparent reverse proxy to one launch, by its id."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import Receive, Scope, Send

from vllm_bootstrap.asgi import BodyTooLarge, ClientGone, read_body
from vllm_bootstrap.keys import METER_IN_SCOPE, ApiKey, key_of
from vllm_bootstrap.launches import Launch, LaunchDirectory, LaunchState
from vllm_bootstrap.serving.errors import (
    KeyedBodyUnreadable,
    LaunchAsleep,
    LaunchNotReady,
    NoSuchLaunch,
    RoutedBodyTooLarge,
    SwapperOnlyRoute,
)
from vllm_bootstrap.serving.forward import Forwarder
from vllm_bootstrap.serving.held_bodies import HeldBodies, Holding
from vllm_bootstrap.serving.keyed import as_the_keys, at_the_keys_priority
from vllm_bootstrap.serving.openai import json_object
from vllm_bootstrap.serving.priority import runs_priority_scheduling

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
    def __init__(
        self,
        directory: LaunchDirectory,
        forwarder: Forwarder,
        max_body_bytes: int,
        held_bodies: HeldBodies,
    ) -> None:
        self._directory = directory
        self._forwarder = forwarder
        # A scoped key's request bodies are read whole, as /v1 reads them, and bounded alike.
        self._max_body_bytes = max_body_bytes
        self._held_bodies = held_bodies

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
        if key is None:
            await self._forwarder.forward(scope, receive, send, launch, upstream_path, None)
            return
        scope[METER_IN_SCOPE].model = launch.profile or launch.model
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self._forwarder.forward(scope, receive, send, launch, upstream_path, None)
            return
        holding = Holding(self._held_bodies)
        try:
            body = await self._keyed_body(scope, receive, key, launch, upstream_path, holding)
            if body is not None:
                await self._forwarder.forward(scope, receive, send, launch, upstream_path, body)
        finally:
            holding.release()

    async def _keyed_body(
        self,
        scope: Scope,
        receive: Receive,
        key: ApiKey,
        launch: Launch,
        upstream_path: bytes,
        holding: Holding,
    ) -> bytes | None:
        """A scoped key's request body, read whole and made the key's (its model one of the
        key's, usage asked for, the key's priority); None when the client left."""
        try:
            body = await read_body(receive, self._max_body_bytes, holding.charge)
        except ClientGone:
            return None
        except BodyTooLarge:
            raise RoutedBodyTooLarge(self._max_body_bytes) from None
        payload = json_object(body)
        restricted = key.models is not None or runs_priority_scheduling(launch)
        if payload is None or (restricted and not isinstance(payload.get("model"), str)):
            if restricted:  # what it asks for, and at which priority, must be readable
                raise KeyedBodyUnreadable(launch.launch_id)
            return body
        path = unquote_to_bytes(upstream_path.split(b"?", 1)[0]).decode("latin-1")
        body = as_the_keys(key, scope, path, payload, body, lambda: launch.served_models)
        return at_the_keys_priority(key, launch, body)


def _serves_for(launch: Launch, key: ApiKey) -> bool:
    """It serves one of the key's models (by served name, model or profile name)."""
    names = (launch.model, launch.profile, *launch.served_models)
    return key.models is None or any(name in key.models for name in names if name)


def _swapper_only(path: bytes) -> bool:
    # vLLM's router matches the decoded path, with or without a trailing slash.
    decoded = unquote_to_bytes(path.split(b"?", 1)[0]).rstrip(b"/")
    return decoded in _SWAPPER_ONLY_PATHS

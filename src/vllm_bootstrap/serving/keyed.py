"""A scoped key's request body, made the key's before it is forwarded: on /v1 and on
/proxy/{id} alike, its model must be one of the key's, a stream asks vLLM for its usage (the
meter takes that chunk out again when the client had not asked), and on a launch running
vLLM's priority scheduling the key's priority replaces any the client wrote."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import Scope

from vllm_bootstrap.keys import METER_IN_SCOPE, ApiKey, with_usage_asked
from vllm_bootstrap.launches import Launch
from vllm_bootstrap.serving.errors import UnknownModel
from vllm_bootstrap.serving.priority import runs_priority_scheduling, with_priority

# Streams whose usage vLLM sends only when asked (stream_options.include_usage).
USAGE_STREAMS = frozenset({"/v1/chat/completions", "/v1/completions"})


def as_the_keys(
    key: ApiKey,
    scope: Scope,
    path: str,
    payload: dict[str, Any],
    body: bytes,
    served: Callable[[], list[str]],
) -> bytes:
    """The body to send for `key` to `path` (a route vLLM serves); UnknownModel, naming
    only the key's models, when it names another."""
    model = payload.get("model")
    if isinstance(model, str) and not key.allows_model(model):
        raise UnknownModel(model, served_to(key, served()))
    if path in USAGE_STREAMS:
        asked = with_usage_asked(payload)
        if asked is not None:
            scope[METER_IN_SCOPE].strip_usage = True
            return asked
    return body


def served_to(key: ApiKey, names: list[str]) -> list[str]:
    """The names a key may see of those served: what its errors may list."""
    return [name for name in names if key.allows_model(name)]


def at_the_keys_priority(key: ApiKey, launch: Launch, body: bytes) -> bytes:
    """On a priority-scheduling launch, the key's priority, whatever the client wrote."""
    if runs_priority_scheduling(launch):
        return with_priority(body, key.priority, forced=True)
    return body

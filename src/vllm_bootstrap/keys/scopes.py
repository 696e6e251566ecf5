"""Which scope each route needs: one rule, read by the access check for every request."""

from __future__ import annotations

from vllm_bootstrap.keys.record import ADMIN, BATCHES, INFERENCE

ANY_KEY = ""  # the key's own usage: every key may read it
_BATCH_PATHS = ("/v1/files", "/v1/batches")
_BATCH_PREFIXES = ("/v1/files/", "/v1/batches/")
# vLLM routes under /v1 that change the server itself, not inference: LoRA adapters are
# loaded from paths on the box.
_ADMIN_V1_PATHS = frozenset({"/v1/load_lora_adapter", "/v1/unload_lora_adapter"})


# Paths already judged: the same few come again and again. Cleared when full, so a client
# sending endless distinct paths costs a bounded amount of memory.
_JUDGED: dict[str, str] = {}
JUDGED_PATHS = 4096
JUDGED_PATH_CHARACTERS = 256


def required_scope(path: str) -> str:
    """The scope a request for `path` (decoded, as ASGI gives it) needs."""
    scope = _JUDGED.get(path)
    if scope is None:
        scope = _judge(path)
        if len(path) <= JUDGED_PATH_CHARACTERS:  # a long one is judged, not kept
            if len(_JUDGED) >= JUDGED_PATHS:
                _JUDGED.clear()
            _JUDGED[path] = scope
    return scope


def _judge(path: str) -> str:
    if path.startswith("/v1/"):
        if path in _BATCH_PATHS or path.startswith(_BATCH_PREFIXES):
            return BATCHES
        if path.rstrip("/") in _ADMIN_V1_PATHS or _has_dot_segment(path):
            return ADMIN
        return INFERENCE
    if path in _BATCH_PATHS:
        return BATCHES
    if path.startswith("/proxy/"):
        upstream = "/" + path[len("/proxy/") :].partition("/")[2]
        if upstream.startswith("/v1/") and _judge(upstream) == INFERENCE:
            return INFERENCE  # and the launch must serve one of the key's models (proxy.py)
        return ADMIN
    if path == "/usage/me":
        return ANY_KEY
    return ADMIN


def _has_dot_segment(path: str) -> bool:
    """A `.`, `..` or empty segment: a path that some server on the way might resolve to
    another route than the one judged here."""
    if "//" in path:
        return True
    return "/." in path and any(segment in (".", "..") for segment in path.split("/"))

"""One OpenAPI document for every route the server answers, not only the FastAPI ones.

The control plane's routes and the Files and Batches API are FastAPI apps and describe
themselves; the data plane (`/v1/...` routed by model, `/proxy/{launch_id}/...`) is plain
ASGI in front of them, so its routes are written here. Their bodies pass through to vLLM
untouched: they are described by reference to OpenAI's API (and vLLM's), with only what
this server reads of them (`model`) spelled out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

OPENAI_REFERENCE = "https://platform.openai.com/docs/api-reference"
VLLM_REFERENCE = "https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html"
# The inference routes /v1 routes by `model` (any other POST /v1/... with a "model" is
# routed the same way; these are the ones OpenAI's clients call).
ROUTED = {
    "/v1/chat/completions": ("Create a chat completion", "chat/create"),
    "/v1/completions": ("Create a completion", "completions/create"),
    "/v1/embeddings": ("Create embeddings", "embeddings/create"),
    "/v1/responses": ("Create a response", "responses/create"),
}
_ROUTED_BODY = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": {
            "type": "string",
            "description": "A served model or a model profile's name: the request goes to a "
            "ready launch serving it (a profile is loaded first, if it must be).",
        },
        "stream": {"type": "boolean", "description": "Server-sent events, as OpenAI's."},
    },
    "additionalProperties": True,
}
_ERRORS = {
    "400": {"description": "No `model` in the body, or a body that is not JSON"},
    "404": {"description": "No launch or profile serves that model (OpenAI's error shape)"},
    "413": {"description": "The body is over VLLM_BOOTSTRAP_MAX_ROUTED_BODY_BYTES"},
    "429": {"description": "Too many requests wait for models to load, or a key's limit"},
    "503": {"description": "The model is loading (Retry-After) or could not be loaded"},
}

_SECURITY_SCHEMES = {
    "accessKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "VLLM_ACCESS_KEY, or a scoped key (POST /keys), as a bearer token.",
    },
    "accessKeyAsPassword": {
        "type": "http",
        "scheme": "basic",
        "description": "The same key as the password, with any user name.",
    },
}


def whole_schema(api: FastAPI, batch_api: FastAPI) -> Callable[[], dict[str, Any]]:
    """`api.openapi`: the control plane's routes, the batch API's, and the data plane's."""

    def build() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(
                title=api.title,
                version=api.version,
                summary=api.summary,
                routes=[*api.routes, *batch_api.routes],
            )
            schema["paths"].update(_data_plane_paths())
            schema.setdefault("components", {})["securitySchemes"] = _SECURITY_SCHEMES
            # Either scheme, where the server has a key (with none set, no scheme is asked).
            schema["security"] = [{name: []} for name in _SECURITY_SCHEMES]
            api.openapi_schema = schema
        return api.openapi_schema

    return build


def _data_plane_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {"/v1/models": {"get": _models_listing()}}
    for path, (summary, reference) in ROUTED.items():
        paths[path] = {"post": _routed(summary, reference)}
    paths["/proxy/{launch_id}/{path}"] = {
        method: _proxied(method) for method in ("get", "post", "put", "patch", "delete")
    }
    return paths


def _models_listing() -> dict[str, Any]:
    return {
        "tags": ["inference"],
        "summary": "List models",
        "description": "The models of every ready launch (`loaded: true`) and every model "
        "profile that loads on demand (`loaded: false`, with its `state`), in OpenAI's shape.",
        "externalDocs": {"url": f"{OPENAI_REFERENCE}/models/list"},
        "responses": {"200": {"description": "OpenAI's model list"}},
    }


def _routed(summary: str, reference: str) -> dict[str, Any]:
    return {
        "tags": ["inference"],
        "summary": summary,
        "description": "Routed by `model` to a ready launch (the least busy replica) and "
        "forwarded as it came: the body and the answer are OpenAI's (and vLLM's extra "
        "fields), streamed when `stream` is true. A profile no launch serves is loaded "
        "first; a stream waiting for it gets SSE comment lines meanwhile.",
        "externalDocs": {"url": f"{OPENAI_REFERENCE}/{reference}"},
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ROUTED_BODY}},
        },
        "responses": {"200": {"description": "vLLM's answer, as it sent it"}, **_ERRORS},
    }


def _proxied(method: str) -> dict[str, Any]:
    return {
        "tags": ["proxy"],
        "summary": f"{method.upper()} to one launch's vLLM",
        "operationId": f"proxy_{method}",
        "description": "Forwarded to the vLLM server of the launch, path and query as they "
        "came (`/proxy/{id}/v1/chat/completions` is that server's "
        "`/v1/chat/completions`), streamed both ways; its routes are vLLM's.",
        "externalDocs": {"url": VLLM_REFERENCE},
        "parameters": [
            {"name": "launch_id", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {"description": "vLLM's answer, as it sent it"},
            "404": {"description": "No such launch"},
            "409": {"description": "The launch is not ready (or asleep)"},
            "502": {"description": "vLLM did not answer"},
        },
    }

"""Profiles declared in a file (VLLM_BOOTSTRAP_MODELS_FILE) or inline in an environment
variable (VLLM_BOOTSTRAP_MODELS, for a template configured by env vars alone), YAML or
JSON, read at start-up:

    models:
      - name: qwen3-8b
        model: Qwen/Qwen3-8B
        gpu_count: 1
        idle_ttl_seconds: 600

A top-level list of profiles works too. Both may be set; a name defined in both is an error.
Any error stops start-up with one line that names the file (or the variable), the profile
and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vllm_bootstrap.models.profile import ModelProfile


class ProfileFileError(ValueError):
    """The models file cannot be used; the message says where and why."""


INLINE_VARIABLE = "VLLM_BOOTSTRAP_MODELS"


def declared_profiles(path: Path | None, inline: str | None) -> list[ModelProfile]:
    """The profiles of the models file and of VLLM_BOOTSTRAP_MODELS, together."""
    from_file = load_profiles(path) if path is not None else []
    from_env = parse_profiles(inline, INLINE_VARIABLE) if inline is not None else []
    in_file = {profile.name for profile in from_file}
    for profile in from_env:
        if profile.name in in_file:
            raise ProfileFileError(
                f"{INLINE_VARIABLE} and {path} both define the profile {profile.name!r}: "
                "keep it in one of them"
            )
    return from_file + from_env


def parse_profiles(text: str, source: str) -> list[ModelProfile]:
    """Profiles from YAML or JSON `text`, errors naming `source`."""
    try:
        data = json.loads(text) if text.lstrip()[:1] in ("[", "{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0]
        raise ProfileFileError(f"{source}: not valid YAML or JSON: {reason}") from None
    return _validated(_listed(data, source), source)


def load_profiles(path: Path) -> list[ModelProfile]:
    return _validated(_entries(path), str(path))


def _validated(entries: list[Any], source: str) -> list[ModelProfile]:
    profiles, names = [], set()
    for position, entry in enumerate(entries, start=1):
        try:
            profile = ModelProfile.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "profile"
            label = entry.get("name") if isinstance(entry, dict) else None
            raise ProfileFileError(
                f"{source}: profile {position} ({label!r}): {where}: {first['msg']}"
            ) from None
        if profile.name in names:
            raise ProfileFileError(
                f"{source}: profile {position}: the name {profile.name!r} repeats"
            )
        names.add(profile.name)
        profiles.append(profile)
    return profiles


def _entries(path: Path) -> list[Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProfileFileError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0]
        raise ProfileFileError(f"{path}: not valid {_kind(path)}: {reason}") from None
    return _listed(data, str(path))


def _listed(data: Any, source: str) -> list[Any]:
    if isinstance(data, dict) and set(data) == {"models"}:
        data = data["models"]
    if not isinstance(data, list):
        raise ProfileFileError(f"{source}: expected a list of profiles, or `models:` holding one")
    return data


def _kind(path: Path) -> str:
    return "JSON" if path.suffix == ".json" else "YAML"

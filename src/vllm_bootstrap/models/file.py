"""Profiles declared in a file (VLLM_BOOTSTRAP_MODELS_FILE), YAML or JSON, read at start-up:

    models:
      - name: qwen3-8b
        model: Qwen/Qwen3-8B
        gpu_count: 1
        idle_ttl_seconds: 600

A top-level list of profiles works too. Any error stops start-up with one line that names
the file, the profile and the field.
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


def load_profiles(path: Path) -> list[ModelProfile]:
    entries = _entries(path)
    profiles, names = [], set()
    for position, entry in enumerate(entries, start=1):
        try:
            profile = ModelProfile.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "profile"
            label = entry.get("name") if isinstance(entry, dict) else None
            raise ProfileFileError(
                f"{path}: profile {position} ({label!r}): {where}: {first['msg']}"
            ) from None
        if profile.name in names:
            raise ProfileFileError(f"{path}: profile {position}: the name {profile.name!r} repeats")
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
    if isinstance(data, dict) and set(data) == {"models"}:
        data = data["models"]
    if not isinstance(data, list):
        raise ProfileFileError(f"{path}: expected a list of profiles, or `models:` holding one")
    return data


def _kind(path: Path) -> str:
    return "JSON" if path.suffix == ".json" else "YAML"

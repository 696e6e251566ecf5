"""Which of a repository's files vLLM loads, so a download fetches those and no more.

vLLM reads a Hub model from the repository's top folder: its weights in one format
(safetensors when there are any, else PyTorch's .bin, else .pt), and the small files that
describe the model and its tokenizer. It never reads `original/` (Meta's own checkpoint),
the consolidated single-file copies of sharded weights, or other frameworks' weights, which
together can double a download.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, TypeVar

# Small files vLLM and transformers read: config, generation config, tokenizers (json,
# sentencepiece, tiktoken, vocab and merges), chat templates, and remote code.
DESCRIBING = (".json", ".txt", ".model", ".jinja", ".tiktoken", ".py")
# Weight formats in the order vLLM prefers them (its "auto" load format).
WEIGHTS = (".safetensors", ".bin", ".pt")
# Sentence-transformers keep an embedding model's pooling and dense layers in numbered
# module folders ("1_Pooling/config.json", "2_Dense/model.safetensors"); vLLM reads them.
_SENTENCE_MODULE = re.compile(r"\d+_[A-Za-z]+/[^/]+$")


class Named(Protocol):
    @property
    def path(self) -> str: ...


F = TypeVar("F", bound=Named)


def files_to_fetch(files: Sequence[F], weights: bool = True) -> list[F]:
    """The files of `files` that vLLM loads (only the describing ones without `weights`)."""
    top = [item for item in files if "/" not in item.path]
    modules = [item for item in files if _SENTENCE_MODULE.match(item.path)]
    suffix, chosen = _weights_of(top) if weights else ("", [])
    described = [
        item
        for item in top
        if item.path.endswith(DESCRIBING)
        and (
            not _is_weight_index(item.path)
            or (suffix and item.path.endswith(f"{suffix}.index.json"))
        )
    ]
    return sorted([*chosen, *described, *modules], key=lambda item: item.path)


def _weights_of(top: Sequence[F]) -> tuple[str, list[F]]:
    for suffix in WEIGHTS:
        found = [item for item in top if item.path.endswith(suffix)]
        if found:
            sharded = [item for item in found if not item.path.startswith("consolidated")]
            return suffix, sharded or found  # a repo with only a consolidated file loads it
    return "", []


def _is_weight_index(path: str) -> bool:
    return any(path.endswith(f"{suffix}.index.json") for suffix in WEIGHTS)

"""Which files of a repository a download fetches: those vLLM loads, and no more."""

from __future__ import annotations

from dataclasses import dataclass

from vllm_bootstrap.downloads.selection import files_to_fetch


@dataclass(frozen=True)
class File:
    path: str


def chosen(*paths: str, weights: bool = True) -> list[str]:
    return [item.path for item in files_to_fetch([File(path) for path in paths], weights)]


DESCRIBING = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer.model"]


def test_safetensors_win_over_bin_and_the_others_indexes_are_left() -> None:
    files = chosen(
        *DESCRIBING,
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "README.md",
        ".gitattributes",
        "flax_model.msgpack",
        "model.onnx",
    )
    assert files == sorted(
        [
            *DESCRIBING,
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
        ]
    )


def test_original_and_consolidated_copies_are_not_fetched() -> None:
    files = chosen(
        "config.json",
        "model.safetensors",
        "consolidated.safetensors",
        "original/consolidated.00.pth",
        "original/params.json",
        "original/tokenizer.model",
    )
    assert files == ["config.json", "model.safetensors"]


def test_a_repo_with_only_a_consolidated_file_still_gets_it() -> None:
    files = chosen("params.json", "tekken.json", "consolidated.safetensors")
    assert files == ["consolidated.safetensors", "params.json", "tekken.json"]


def test_without_safetensors_the_bin_weights_and_their_index_are_fetched() -> None:
    files = chosen(
        "config.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
        "training_args.pt",
        "vocab.txt",
        "merges.txt",
        "chat_template.jinja",
        "modeling_custom.py",
    )
    assert files == [
        "chat_template.jinja",
        "config.json",
        "merges.txt",
        "modeling_custom.py",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
        "vocab.txt",
    ]


def test_pt_weights_are_the_last_resort() -> None:
    assert chosen("config.json", "model.pt") == ["config.json", "model.pt"]


def test_without_weights_only_the_describing_files_are_fetched() -> None:
    files = chosen(*DESCRIBING, "model.safetensors", "model.safetensors.index.json", weights=False)
    assert files == sorted(DESCRIBING)


def test_sentence_transformers_module_folders_come_along() -> None:
    files = chosen(
        "config.json",
        "modules.json",
        "model.safetensors",
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
        "onnx/model.onnx",
    )
    assert files == [
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
        "config.json",
        "model.safetensors",
        "modules.json",
    ]

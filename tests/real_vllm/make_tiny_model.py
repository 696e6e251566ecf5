"""Write a tiny random-weight Llama and its tokenizer to a folder (run in the vLLM venv).

The tokenizer is a byte-level BPE trained on a few sentences (vocabulary about 400) with a
minimal chat template. head_dim is 32: vLLM's CPU attention supports 32, 64, 80, ... and
serves garbage-free 500s with smaller ones.

    python make_tiny_model.py <folder>
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "vLLM serves large language models quickly and efficiently.",
    "A control plane launches, supervises and stops model servers.",
    "Hello! How are you today? I am fine, thank you.",
    "Numbers like 0 1 2 3 4 5 6 7 8 9 appear in text too.",
    "GPUs are rented by the hour, so nothing should be wasted.",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]


def make_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(SENTENCES * 20, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def main(folder: Path) -> None:
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    print(f"tiny model written to {folder} (vocabulary {len(tokenizer)})")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""Tiny models built from a config, for tests, benchmarks and the demo: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from langplay.tinyworld.tokenizer import build_tokenizer


def tiny_llama_config(vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, **kw) -> LlamaConfig:
    tokenizer = build_tokenizer()
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=kw.pop("tie_word_embeddings", False), **kw,
    )


def save_tiny_model(path: str | Path, seed: int = 0, **kw) -> Path:
    """A randomly initialised character-level Llama and its tokenizer, saved as an HF folder."""
    path = Path(path)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), **kw))
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path

"""Tiny sharded Llama directories for the streaming tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


def write_llama(path: Path, *, hidden: int = 64, inter: int = 128, layers: int = 3, vocab: int = 128,
                tied: bool = True, shard: str = "40KB", seed: int = 0) -> Path:
    """A random Llama saved as a sharded Hugging Face directory (index + several shards)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=vocab, tie_word_embeddings=tied)
    LlamaForCausalLM(cfg).eval().save_pretrained(path, max_shard_size=shard)
    return path


def calib_batches(n: int = 3, seq: int = 16, vocab: int = 128, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, vocab, (1, seq), generator=g)} for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama(tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture(scope="session")
def untied_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama(tmp_path_factory.mktemp("hf") / "untied-llama", tied=False, layers=2, seed=1)

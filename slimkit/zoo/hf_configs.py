"""Architecture configs of the Hugging Face zoo models, embedded so ``build_model`` is offline.

``build_model`` must rebuild an architecture without touching weight packages or the cache (it
is what checkpoint loading uses), so the ``config.json`` of each Hugging Face zoo model is copied
here verbatim minus bookkeeping keys (``_name_or_path``, ``transformers_version``, ...). The
SmolLM2 entry is the config transformers derives from the GGUF file (the same one
``load_model`` saves into the cache), so a built model's state-dict keys and shapes equal a
loaded one's.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HF_CONFIGS", "HF_AUTO_CLASS"]

HF_CONFIGS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "unk_token_id": 0,
        "head_dim": 64,
        "hidden_act": "silu",
        "hidden_size": 576,
        "initializer_range": 0.02,
        "intermediate_size": 1536,
        "max_position_embeddings": 8192,
        "mlp_bias": False,
        "num_attention_heads": 9,
        "num_hidden_layers": 30,
        "num_key_value_heads": 3,
        "pretraining_tp": 1,
        "rms_norm_eps": 9.999999747378752e-06,
        "rope_theta": 100000.0,  # legacy key: transformers 5 turns it into rope_parameters
        "tie_word_embeddings": True,
        "use_cache": True,
        "vocab_size": 49152,
    },
    "minilm-l6": {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 384,
        "initializer_range": 0.02,
        "intermediate_size": 1536,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "num_attention_heads": 12,
        "num_hidden_layers": 6,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": 30522,
    },
    "mpnet-base": {
        "model_type": "mpnet",
        "architectures": ["MPNetForMaskedLM"],
        "attention_probs_dropout_prob": 0.1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 768,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 514,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "pad_token_id": 1,
        "relative_attention_num_buckets": 32,
        "vocab_size": 30527,
    },
}

# Which transformers auto class loads / builds each entry ("causal-lm" or "base").
HF_AUTO_CLASS: dict[str, str] = {"smollm2-135m": "causal-lm", "minilm-l6": "base", "mpnet-base": "base"}

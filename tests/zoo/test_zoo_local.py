"""sk.zoo.load_model on a user's own Hugging Face directory (config.json + safetensors)."""
from __future__ import annotations

import pytest
import torch

import slimkit as sk


def test_local_llama_dir_loads_as_causal_lm_and_round_trips(make_llama, token_batch, tmp_path) -> None:
    model = make_llama()
    model.save_pretrained(tmp_path / "my-llama", safe_serialization=True)
    loaded, tok = sk.zoo.load_model(str(tmp_path / "my-llama"))
    assert type(loaded).__name__ == "LlamaForCausalLM" and tok is None and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(**token_batch).logits, model(**token_batch).logits)
    res = sk.compress(loaded, {"steps": [{"quantize": {"method": "dynamic_int8"}}]}, progress=False, measure=False)
    sk.save(res.model, tmp_path / "slim")
    again = sk.load(tmp_path / "slim")
    with torch.no_grad():
        torch.testing.assert_close(again(**token_batch).logits, res.model(**token_batch).logits)


def test_sharded_safetensors_and_classifier_task(tmp_path) -> None:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=64, num_labels=3)
    model = transformers.BertForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path / "clf", safe_serialization=True, max_shard_size="50KB")
    assert len(list((tmp_path / "clf").glob("*.safetensors"))) > 1  # really sharded
    loaded, _ = sk.zoo.load_model(tmp_path / "clf")
    assert type(loaded).__name__ == "BertForSequenceClassification"
    ids = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_pickle_only_dir_is_refused_with_a_conversion_hint(make_llama, tmp_path) -> None:
    model = make_llama()
    (tmp_path / "pickled").mkdir()
    model.config.save_pretrained(tmp_path / "pickled")
    torch.save(model.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")  # the old pickle format
    with pytest.raises(sk.ConfigError, match="only pickled weights.*safe_serialization=True"):
        sk.zoo.load_model(str(tmp_path / "pickled"))

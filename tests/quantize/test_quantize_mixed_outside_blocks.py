"""``mixed`` on a BERT: the pooler Linear lies outside the repeated blocks (regression: KeyError)."""
from __future__ import annotations

import torch
import transformers

import slimkit as sk
from slimkit.quantize.weight_only.layer import WeightOnlyLinear


def test_mixed_handles_linears_outside_the_blocks() -> None:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=100)
    model = transformers.BertModel(cfg).eval()
    calib = [{"input_ids": torch.randint(0, 100, (2, 16))} for _ in range(2)]
    res = sk.compress(model, {"steps": [{"quantize": {"method": "mixed", "bits_choices": [4, 8],
                                                       "group_size": 16, "target_ratio": 0.9}}]},
                      calib=calib, measure=False, progress=False)
    assert isinstance(res.model.pooler.dense, WeightOnlyLinear)
    notes = res.report.steps[0]["notes"]
    assert notes["scored_without_calibration"] == ["pooler.dense"]

"""The folded per-layer summary that steps put in their notes."""
from __future__ import annotations

from slimkit.core.layer_notes import layer_summary


def test_equal_values_fold_over_block_indices() -> None:
    values = {f"model.layers.{i}.mlp.up_proj": "int4 g64" for i in range(30)} | {"lm_head": "int8 g64"}
    assert layer_summary(values) == {"model.layers.*.mlp.up_proj": "int4 g64 ×30", "lm_head": "int8 g64"}


def test_different_values_name_their_blocks() -> None:
    values = {f"model.layers.{i}.mlp.down_proj": "int8" if i in (5, 9, 10, 11) else "int4" for i in range(30)}
    assert layer_summary(values) == {"model.layers.*.mlp.down_proj": "int4: 0-4,6-8,12-29; int8: 5,9-11"}


def test_numbers_give_a_range() -> None:
    values = {"blocks.0.fc": 0.5, "blocks.1.fc": 0.5, "enc.0.q": 0.25, "enc.1.q": 0.75, "enc.2.q": 0.5, "head": 0.5}
    assert layer_summary(values) == {"blocks.*.fc": "0.5 ×2", "enc.*.q": "0.25–0.75 ×3", "head": "0.5"}


def test_top_level_sequential_indices_are_kept() -> None:
    assert layer_summary({"0": "int4", "2": "int4", "4.1": "int8"}) == {"0": "int4", "2": "int4", "4.*": "int8"}

"""core.swap: the one select → skip tied → replace → record-edit sequence of the swapping steps."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.provenance import get_edits
from slimkit.core.swap import swap_layers, swappable_layers
from slimkit.io.edits import replay_edits
from slimkit.quantize.dynamic_int8 import Int8DynamicLinear


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.fc, self.conv, self.head = nn.Embedding(10, 4), nn.Linear(4, 4), nn.Conv1d(4, 4, 1), nn.Linear(4, 10)
        self.head.weight = self.emb.weight


def test_tied_and_rejected_layers_are_reported_not_swapped() -> None:
    ctx = RunContext(show_progress=False)
    chosen = swappable_layers(_Tied(), (nn.Linear, nn.Conv1d), ctx, targets=None, ignore=(), field="quantize",
                              tied_reason="tied to emb",
                              reject=lambda n, m: "no kernel" if isinstance(m, nn.Conv1d) else None)
    assert list(chosen) == ["fc"]
    assert ctx.skipped == [{"layer": "conv", "reason": "no kernel"}, {"layer": "head", "reason": "tied to emb"}]


def test_tied_allowed_when_no_reason_given() -> None:
    ctx = RunContext(show_progress=False)
    chosen = swappable_layers(_Tied(), (nn.Linear,), ctx, targets=None, ignore=["fc"], field="quantize", tied_reason=None)
    assert list(chosen) == ["head"] and ctx.skipped == []


def test_swap_records_replayable_edits_with_the_layer_kind() -> None:
    torch.manual_seed(0)
    model = _Tied()
    layers = {"fc": model.fc}
    done = swap_layers(model, layers, lambda _, lin: Int8DynamicLinear.from_linear(lin))
    assert model.fc is done["fc"] and isinstance(model.fc, Int8DynamicLinear)
    edits = get_edits(model)
    assert edits == [{"op": "replace_module", "path": "fc", "kind": "int8_dynamic_linear", "spec": model.fc.spec()}]
    fresh = _Tied()
    replay_edits(fresh, edits)
    assert isinstance(fresh.fc, Int8DynamicLinear) and fresh.fc.out_features == 4


def test_swap_without_record_leaves_no_edit() -> None:
    model = _Tied()
    swap_layers(model, [("fc", model.fc)], lambda _, lin: nn.Identity(), record=False)
    assert isinstance(model.fc, nn.Identity) and get_edits(model) == []


class PaddedConv(nn.Conv2d):
    """A conv that pads its input itself (like EfficientNet's Conv2dStaticSamePadding)."""

    def forward(self, x):  # noqa: ANN001, ANN201
        return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))


def test_a_subclass_with_its_own_forward_is_named_not_swapped() -> None:
    import slimkit as sk

    torch.manual_seed(0)
    model = nn.Sequential(PaddedConv(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)).eval()
    x = torch.randn(2, 3, 8, 8)
    res = sk.compress(model, {"steps": [{"quantize": {"method": "static_int8", "graph": "off"}}]}, calib=[x],
                      progress=False, measure=False)
    assert type(res.model[0]) is PaddedConv and type(res.model[2]) is not nn.Conv2d
    skipped = {s["layer"]: s["reason"] for s in res.report.steps[0]["skipped"]}
    assert "overrides Conv2d.forward" in skipped["0"]
    assert res.model(x).shape == model(x).shape

"""Module selection grammar: names (with descendants), ``re:`` regexes, class names, ignore."""
from __future__ import annotations

import pytest
from torch import nn

import slimkit as sk
from slimkit.core.select import matching_names, select_modules


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(4, 4)
        self.mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.layers = nn.ModuleList([Block() for _ in range(12)])
        self.lm_head = nn.Linear(4, 10)


def names(model: nn.Module, types=(nn.Linear,), **kw) -> list[str]:
    return [n for n, _ in select_modules(model, types, **kw)]


def test_no_targets_selects_every_module_of_the_types_in_order() -> None:
    net = Net()
    got = names(net)
    assert len(got) == 12 * 3 + 1
    assert got[:3] == ["layers.0.attn", "layers.0.mlp.0", "layers.0.mlp.2"]
    assert got[-1] == "lm_head"
    assert names(net, (nn.Conv2d,)) == ["stem"]


def test_exact_name_selects_module_and_descendants_only() -> None:
    net = Net()
    assert names(net, targets=["layers.1"]) == ["layers.1.attn", "layers.1.mlp.0", "layers.1.mlp.2"]
    # "layers.1" must not capture "layers.10" / "layers.11"
    assert names(net, targets=["layers.1.mlp"]) == ["layers.1.mlp.0", "layers.1.mlp.2"]
    assert names(net, targets=["lm_head"]) == ["lm_head"]


def test_regex_is_a_full_match_and_extends_to_descendants() -> None:
    net = Net()
    assert names(net, targets=[r"re:layers\.1\d\.attn"]) == ["layers.10.attn", "layers.11.attn"]
    # matches the mlp containers; their Linear children are selected as descendants
    got = names(net, targets=[r"re:layers\.[0-2]\.mlp"])
    assert got == [f"layers.{i}.mlp.{j}" for i in range(3) for j in (0, 2)]
    with pytest.raises(sk.ConfigError):  # fullmatch: a bare prefix matches nothing
        names(net, targets=["re:layer"])  # "layers" exists, "layer" does not


def test_class_name_rule() -> None:
    net = Net()
    assert names(net, (nn.Linear, nn.Conv2d), targets=["Conv2d"]) == ["stem"]
    got = names(net, targets=["Block"])
    assert len(got) == 36 and "lm_head" not in got


def test_ignore_removes_named_module_and_its_descendants() -> None:
    net = Net()
    got = names(net, ignore=["lm_head", "layers.0", r"re:.*\.attn"])
    assert "lm_head" not in got
    assert not any(n.startswith("layers.0.") for n in got)
    assert not any(n.endswith(".attn") for n in got)
    assert len(got) == 11 * 2


def test_targets_and_ignore_combine() -> None:
    net = Net()
    assert names(net, targets=["layers.3"], ignore=["layers.3.mlp.2"]) == ["layers.3.attn", "layers.3.mlp.0"]


@pytest.mark.parametrize("field", ["targets", "ignore"])
@pytest.mark.parametrize("rule", ["lm_haed", "re:nothing.*here", "Conv3d", "layers.12"])
def test_rule_matching_nothing_raises_naming_the_rule(field, rule) -> None:
    with pytest.raises(sk.ConfigError) as info:
        select_modules(Net(), (nn.Linear,), **{field: [rule]}, field="prune")
    assert repr(rule) in str(info.value)
    assert f"prune.{field}" in str(info.value)


def test_invalid_regex_raises_config_error() -> None:
    with pytest.raises(sk.ConfigError, match="regular expression"):
        select_modules(Net(), (nn.Linear,), targets=["re:("])


def test_matching_names_covers_descendants() -> None:
    covered = matching_names(Net(), ["layers.2"], "x")
    assert covered == {"layers.2", "layers.2.attn", "layers.2.mlp", "layers.2.mlp.0", "layers.2.mlp.1", "layers.2.mlp.2"}


def test_dead_ignore_rule_in_a_recipe_fails_before_pruning(make_mlp) -> None:
    model = make_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(sk.ConfigError, match="lm_head"):
        sk.compress(model, {"steps": [{"prune": {"sparsity": 0.5, "ignore": ["lm_head"]}}]},
                    progress=False, measure=False)
    assert all((before[k] == v).all() for k, v in model.state_dict().items())

"""Recipe parsing: round trips through dicts and YAML, and strict validation with helpful errors."""
from __future__ import annotations

import pytest
import yaml

import slimkit as sk
from slimkit.core import registry
from slimkit.core.registry import STEP_NAMES

RECIPE = {
    "name": "prune-then-int8",
    "description": "half the weights, then int8",
    "steps": [
        {"prune": {"method": "magnitude", "sparsity": 0.5, "scope": "global", "ignore": ["lm_head"]}},
        {"quantize": {"method": "dynamic_int8", "per_channel": False}},
    ],
}


# ----------------------------------------------------------------------------- errors
def test_config_error_is_value_error_and_slimkit_error() -> None:
    assert issubclass(sk.ConfigError, ValueError)
    assert issubclass(sk.ConfigError, sk.SlimkitError)
    for cls in (sk.DataError, sk.UnsupportedModelError, sk.CheckpointError):
        assert issubclass(cls, sk.SlimkitError)
    assert not issubclass(sk.DataError, ValueError)


# ----------------------------------------------------------------------------- round trips
def test_from_dict_parses_steps_in_order_with_defaults_filled() -> None:
    recipe = sk.Recipe.from_dict(RECIPE)
    assert [(s.name, s.method) for s in recipe.steps] == [("prune", "magnitude"), ("quantize", "dynamic_int8")]
    prune = recipe.steps[0].config
    assert prune.sparsity == 0.5 and prune.scope == "global" and prune.ignore == ["lm_head"]
    assert prune.layer_types == ["Linear", "Conv2d"]  # default filled in
    assert recipe.steps[1].config.per_channel is False
    assert recipe.name == "prune-then-int8"


def test_to_dict_round_trip_is_stable() -> None:
    first = sk.Recipe.from_dict(RECIPE).to_dict()
    second = sk.Recipe.from_dict(first).to_dict()
    assert first == second
    assert first["name"] == RECIPE["name"] and first["description"] == RECIPE["description"]
    assert first["steps"][0]["prune"]["sparsity"] == 0.5
    assert first["steps"][0]["prune"]["method"] == "magnitude"
    assert list(first["steps"][1]) == ["quantize"]


def test_list_form_equals_mapping_form() -> None:
    assert sk.Recipe.from_dict(RECIPE["steps"]).to_dict()["steps"] == sk.Recipe.from_dict(RECIPE).to_dict()["steps"]


def test_default_method_is_used_when_omitted() -> None:
    recipe = sk.Recipe.from_dict({"steps": [{"prune": {"sparsity": 0.25}}]})
    assert recipe.steps[0].method == "magnitude"
    assert recipe.steps[0].config.sparsity == 0.25


def test_yaml_file_round_trip(tmp_path) -> None:
    recipe = sk.Recipe.from_dict(RECIPE)
    path = tmp_path / "recipe.yaml"
    text = recipe.to_yaml(path)
    assert path.read_text(encoding="utf-8") == text
    assert yaml.safe_load(text) == recipe.to_dict()
    again = sk.Recipe.from_yaml(path)
    assert again.to_dict() == recipe.to_dict()
    assert sk.Recipe.coerce(str(path)).to_dict() == recipe.to_dict()


def test_handwritten_yaml_file(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("steps:\n  - prune: {method: magnitude, sparsity: 0.3, scope: layer}\n"
                    "  - quantize: {method: dynamic_int8}\n", encoding="utf-8")
    recipe = sk.Recipe.from_yaml(path)
    assert [s.name for s in recipe.steps] == ["prune", "quantize"]
    assert recipe.steps[0].config.sparsity == 0.3
    assert recipe.steps[1].config.per_channel is True


# ----------------------------------------------------------------------------- strictness
def test_unknown_step_lists_valid_steps() -> None:
    with pytest.raises(sk.ConfigError) as info:
        sk.Recipe.from_dict({"steps": [{"prunee": {"sparsity": 0.5}}]})
    msg = str(info.value)
    assert "prunee" in msg
    for name in STEP_NAMES:
        assert name in msg


def test_unknown_method_lists_valid_methods() -> None:
    with pytest.raises(sk.ConfigError) as info:
        sk.Recipe.from_dict({"steps": [{"prune": {"method": "magnitud", "sparsity": 0.5}}]})
    msg = str(info.value)
    assert "magnitud" in msg
    for method in sk.methods_of("prune"):
        assert method in msg


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(sk.ConfigError) as info:
        sk.Recipe.from_dict({"steps": [{"prune": {"method": "magnitude", "sparsty": 0.5}}]})
    msg = str(info.value)
    assert "sparsty" in msg
    for key in ("sparsity", "scope", "targets", "ignore", "layer_types"):
        assert key in msg
    assert "steps[0]" in msg


def test_unknown_top_level_key_lists_valid_keys() -> None:
    with pytest.raises(sk.ConfigError) as info:
        sk.Recipe.from_dict({"stepz": [], "steps": [{"prune": {}}]})
    assert "stepz" in str(info.value) and "steps" in str(info.value)


@pytest.mark.parametrize("bad", [1.0, -0.1, "a", 1.5, True, None])
def test_sparsity_outside_unit_interval_names_the_field(bad) -> None:
    with pytest.raises(sk.ConfigError) as info:
        sk.Recipe.from_dict({"steps": [{"prune": {"method": "magnitude", "sparsity": bad}}]})
    assert "sparsity" in str(info.value)


@pytest.mark.parametrize("good", [0, 0.0, 0.5, 0.999])
def test_sparsity_inside_unit_interval_is_accepted(good) -> None:
    assert sk.Recipe.from_dict({"steps": [{"prune": {"sparsity": good}}]}).steps[0].config.sparsity == good


def test_bad_scope_lists_choices() -> None:
    with pytest.raises(sk.ConfigError) as info:
        sk.Recipe.from_dict({"steps": [{"prune": {"scope": "everywhere"}}]})
    assert "scope" in str(info.value) and "layer" in str(info.value) and "global" in str(info.value)


def test_ignore_must_be_a_list_of_strings() -> None:
    with pytest.raises(sk.ConfigError, match="ignore"):
        sk.Recipe.from_dict({"steps": [{"prune": {"ignore": "lm_head"}}]})


def test_missing_recipe_file(tmp_path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(sk.ConfigError, match="nope.yaml"):
        sk.Recipe.from_yaml(missing)


def test_invalid_yaml_file(tmp_path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("steps: [prune: {sparsity: 0.5\n", encoding="utf-8")
    with pytest.raises(sk.ConfigError, match="YAML"):
        sk.Recipe.from_yaml(path)


@pytest.mark.parametrize("data", [{}, {"steps": []}, {"steps": "prune"}, "prune", {"steps": [{"prune": {}, "quantize": {}}]}])
def test_malformed_recipes(data) -> None:
    with pytest.raises(sk.ConfigError):
        sk.Recipe.from_dict(data)


def test_step_without_registered_method(monkeypatch) -> None:
    registry.load_builtin_steps()
    step = "distill"
    assert step in STEP_NAMES
    monkeypatch.delitem(registry._REGISTRY, step, raising=False)
    with pytest.raises(sk.ConfigError) as info:
        sk.Recipe.from_dict({"steps": [{step: {"method": "logit"}}]})
    assert step in str(info.value)
    assert "no method" in str(info.value)

"""``sk.compress``: the input is never touched, needs are checked first, the speed guard flags."""
from __future__ import annotations

import torch
import pytest
from torch import nn

import slimkit as sk

MAGNITUDE = {"steps": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in after.items():
        assert torch.equal(v, before[k]), f"{k} changed"


def test_compress_never_modifies_the_input(make_mlp) -> None:
    model = make_mlp()
    before = snapshot(model)
    ids = {n: id(p) for n, p in model.named_parameters()}
    modules = {n: id(m) for n, m in model.named_modules()}
    x = torch.randn(4, 32)
    res = sk.compress(model, {"steps": [{"prune": {"sparsity": 0.5}}, {"quantize": {"method": "dynamic_int8"}}]},
                      example_inputs=x, progress=False, latency_runs=2)
    assert res.model is not model
    assert_same_state(model, before)
    assert {n: id(p) for n, p in model.named_parameters()} == ids
    assert {n: id(m) for n, m in model.named_modules()} == modules
    assert isinstance(model.fc1, nn.Linear)  # the input's layers were not swapped
    assert not any(p is q for p in model.parameters() for q in res.model.parameters())
    # and the result really changed
    assert type(res.model.fc1).__name__ == "Int8DynamicLinear"


def test_compress_keeps_input_training_flag(make_mlp) -> None:
    model = make_mlp().train()
    sk.compress(model, MAGNITUDE, example_inputs=torch.randn(2, 32), progress=False, latency_runs=2)
    assert model.training and all(m.training for m in model.modules())


def test_compress_does_not_update_batchnorm_stats_of_the_input(make_cnn) -> None:
    """A model handed over in train mode (the default after construction) must come back untouched:
    checking example inputs must not run it in train mode, which updates BatchNorm running stats."""
    model = make_cnn()
    assert model.training
    before = snapshot(model)
    sk.compress(model, MAGNITUDE, example_inputs=torch.randn(2, 3, 8, 8), progress=False, latency_runs=2)
    assert_same_state(model, before)


def test_result_model_is_in_eval_mode_and_recipe_recorded(make_mlp) -> None:
    res = sk.compress(make_mlp(), MAGNITUDE, progress=False, measure=False)
    assert not res.model.training
    assert isinstance(res.recipe, sk.Recipe)
    from slimkit.core.provenance import get_recipe

    assert get_recipe(res.model) == sk.Recipe.from_dict(MAGNITUDE).to_dict()


def test_report_structure(make_mlp) -> None:
    res = sk.compress(make_mlp(), {"steps": [{"prune": {"sparsity": 0.5}}, {"quantize": {"method": "dynamic_int8"}}]},
                      example_inputs=torch.randn(4, 32), progress=False, latency_runs=2)
    d = res.report.to_dict()
    assert {"before", "after", "steps"} <= set(d)
    assert [s["name"] for s in d["steps"]] == ["prune", "quantize"]
    for s in d["steps"]:
        assert {"name", "seconds", "method", "config", "metrics", "slower", "skipped"} <= set(s)
        assert isinstance(s["seconds"], float) and s["seconds"] >= 0
    for key in ("params", "nonzero_params", "bytes", "macs", "latency_ms"):
        assert key in d["before"] and key in d["after"]
    assert d["after"] == d["steps"][-1]["metrics"]
    assert d["steps"][0]["config"]["sparsity"] == 0.5


def test_recipe_accepts_path_and_recipe_object(make_mlp, tmp_path) -> None:
    path = tmp_path / "r.yaml"
    sk.Recipe.from_dict(MAGNITUDE).to_yaml(path)
    a = sk.compress(make_mlp(), path, progress=False, measure=False).model
    b = sk.compress(make_mlp(), sk.Recipe.from_dict(MAGNITUDE), progress=False, measure=False).model
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_not_a_module_raises_config_error() -> None:
    with pytest.raises(sk.ConfigError, match="nn.Module"):
        sk.compress(object(), MAGNITUDE, progress=False)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- needs & data
def test_missing_calibration_data_raises_before_any_step_runs(make_mlp, test_steps) -> None:
    model = make_mlp()
    recipe = {"steps": [{"prune": {"method": "test_noop"}}, {"prune": {"method": "test_needs_calib"}}]}
    with pytest.raises(sk.DataError) as info:
        sk.compress(model, recipe, progress=False, measure=False)
    assert "calib" in str(info.value)
    assert "steps[1]" in str(info.value)
    assert test_steps["noop"] == [] and test_steps["needs_calib"] == []  # nothing ran


def test_empty_calibration_data_raises(make_mlp, test_steps) -> None:
    with pytest.raises(sk.DataError):
        sk.compress(make_mlp(), {"steps": [{"prune": {"method": "test_needs_calib"}}]}, calib=[],
                    progress=False, measure=False)
    assert test_steps["needs_calib"] == []


def test_calibration_data_reaches_the_step(make_mlp, test_steps) -> None:
    calib = (torch.randn(2, 32) for _ in range(3))  # any iterable, even a generator
    sk.compress(make_mlp(), {"steps": [{"prune": {"method": "test_needs_calib"}}]}, calib=calib,
                progress=False, measure=False)
    assert test_steps["needs_calib"] == [3]


def test_recipe_needs_are_declared(test_steps) -> None:
    recipe = sk.Recipe.from_dict({"steps": [{"prune": {"method": "test_needs_calib"}}, {"prune": {"sparsity": 0.1}}]})
    assert recipe.needs() == {"calib"}


@pytest.mark.parametrize("bad", [torch.randn(4, 31), torch.randint(0, 5, (4, 32)), (torch.randn(2, 32), torch.randn(2, 32))],
                         ids=["wrong-width", "wrong-dtype", "too-many-args"])
def test_wrong_example_inputs_raise_data_error_before_any_step(make_mlp, test_steps, bad) -> None:
    with pytest.raises(sk.DataError, match="example_inputs"):
        sk.compress(make_mlp(), {"steps": [{"prune": {"method": "test_noop"}}]}, example_inputs=bad, progress=False)
    assert test_steps["noop"] == []


def test_example_inputs_without_tensor_raise_data_error(make_mlp) -> None:
    with pytest.raises(sk.DataError):
        sk.compress(make_mlp(), MAGNITUDE, example_inputs={"x": 3}, progress=False)


# ----------------------------------------------------------------------------- speed guard
def test_speed_guard_flags_a_step_that_makes_the_model_slower(make_mlp, test_steps) -> None:
    res = sk.compress(make_mlp(), {"steps": [{"prune": {"method": "test_slow"}}]},
                      example_inputs=torch.randn(2, 32), progress=False, latency_runs=5)
    step = res.report.to_dict()["steps"][0]
    context = (res.report.before.get("latency_ms"), step["metrics"].get("latency_ms"), res.report.warnings)
    assert test_steps["slow"] == [True]
    assert step["slower"] is True, context
    assert step["metrics"]["latency_ms"] >= 50.0, context  # it really sleeps 50 ms per forward
    assert len(res.report.warnings) == 1, context
    assert "speed guard" in res.report.warnings[0] and "prune:test_slow" in res.report.warnings[0]
    assert "slower" in res.report.to_markdown()


def test_speed_guard_needs_latency_to_judge(make_mlp, test_steps) -> None:
    # without example inputs nothing is timed: the step cannot be flagged (and is not, silently or not)
    res = sk.compress(make_mlp(), {"steps": [{"prune": {"method": "test_slow"}}]}, progress=False)
    assert res.report.steps[0]["slower"] is False
    assert "latency_ms" not in res.report.steps[0]["metrics"]
    assert res.report.warnings == []


# ----------------------------------------------------------------------------- eval
def test_callable_eval_is_recorded_before_and_after(make_mlp) -> None:
    x = torch.randn(8, 32)
    model = make_mlp()
    ref = model(x).detach()

    def fidelity(m: nn.Module) -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cosine_similarity(m(x), ref, dim=1).mean())

    res = sk.compress(model, MAGNITUDE, eval=fidelity, progress=False, measure=False)
    d = res.report.to_dict()
    assert d["before"]["quality"] == pytest.approx(1.0, abs=1e-6)
    assert d["after"]["quality"] == pytest.approx(fidelity(res.model), abs=1e-9)
    assert d["after"]["quality"] < 1.0
    assert d["ratios"]["quality"] == pytest.approx(d["after"]["quality"] / d["before"]["quality"])


# ----------------------------------------------------------------------------- a single batch is not calib
@pytest.mark.parametrize("single", [
    torch.randn(4, 32),
    {"input_ids": torch.zeros(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 5, dtype=torch.long)},
], ids=["tensor", "dict"])
def test_a_single_batch_as_calib_is_a_data_error(make_mlp, test_steps, single) -> None:
    """``list()`` of a tensor yields its rows and of a dict its keys: neither is what was meant."""
    with pytest.raises(sk.DataError, match=r"calib must be an iterable of model inputs .*calib=\[batch\]") as info:
        sk.compress(make_mlp(), {"steps": [{"prune": {"method": "test_needs_calib"}}]}, calib=single,
                    progress=False, measure=False)
    assert ("tensor of shape (4, 32)" if isinstance(single, torch.Tensor) else "'input_ids'") in str(info.value)
    assert test_steps["needs_calib"] == []


def test_a_non_iterable_calib_is_a_data_error(make_mlp, test_steps) -> None:
    with pytest.raises(sk.DataError, match="calib must be an iterable of model inputs .*got int"):
        sk.compress(make_mlp(), {"steps": [{"prune": {"method": "test_needs_calib"}}]}, calib=3,
                    progress=False, measure=False)


def test_a_single_batch_as_train_is_a_data_error(make_mlp) -> None:
    with pytest.raises(sk.DataError, match=r"train must be an iterable .*train=\[batch\]"):
        sk.compress(make_mlp(), MAGNITUDE, train={"inputs": torch.randn(2, 32), "labels": torch.zeros(2)},
                    progress=False, measure=False)


# ----------------------------------------------------------------------------- Result.save
@pytest.mark.parametrize("overwrite", [False, True])
def test_result_save_never_replaces_a_users_directory(make_mlp, tmp_path, overwrite) -> None:
    res = sk.compress(make_mlp(), MAGNITUDE, progress=False, measure=False)
    target = tmp_path / "project"
    target.mkdir()
    (target / "train.py").write_text("print('mine')")
    with pytest.raises(sk.CheckpointError, match=str(target)):
        res.save(target, overwrite=overwrite)
    assert [p.name for p in target.iterdir()] == ["train.py"]
    assert (target / "train.py").read_text() == "print('mine')"


def test_result_save_replaces_its_own_output_only_with_overwrite(make_mlp, tmp_path) -> None:
    first = sk.compress(make_mlp(seed=1), MAGNITUDE, progress=False, measure=False)
    second = sk.compress(make_mlp(seed=2), MAGNITUDE, progress=False, measure=False)
    target = first.save(tmp_path / "out")
    with pytest.raises(sk.CheckpointError, match="already exists"):
        second.save(target)
    second.save(target, overwrite=True)
    loaded = sk.load(target, model=make_mlp())
    assert torch.equal(loaded.fc1.weight, second.model.fc1.weight)
    assert not torch.equal(loaded.fc1.weight, first.model.fc1.weight)
    assert (target / "report.json").is_file() and (target / ".slimkit-output").is_file()


def test_topk_agreement_is_recorded_beside_top1(make_cnn) -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, 16, 16, generator=gen) for _ in range(2)]
    res = sk.compress(make_cnn(), {"steps": [{"quantize": {"method": "binary"}}]}, eval=sk.TopKAgreement(batches),
                      progress=False, measure=False)
    before, after = res.report.before, res.report.after
    assert before["quality"] == 1.0 and before["quality_topk"] == 1.0
    assert 0.0 <= after["quality"] <= after["quality_topk"] <= 1.0

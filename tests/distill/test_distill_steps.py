"""``distill`` methods through sk.compress: logit / feature / attention KD, students by construction,
healing after drop_layers, save/load, bad input."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.errors import ConfigError, DataError
from slimkit.distill.losses import attention_kl, logit_kd


QUIET = dict(measure=False, progress=False)


class Net(nn.Module):
    def __init__(self, hidden: int, seed: int, d_out: int = 4) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1, self.fc2, self.head = nn.Linear(16, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _xy(seed: int, n: int = 256, bs: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=gen)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] * x[:, 2] > 0).long()
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, n, bs)]


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    net = Net(64, seed=0)
    res = sk.compress(net, {"steps": [{"finetune": {"epochs": 20, "lr": 1e-2}}]}, train=_xy(0), **QUIET)
    return res.model


def _kd_gap(student: nn.Module, teacher: nn.Module, data: list) -> float:
    with torch.no_grad():
        return sum(float(logit_kd(student(x), teacher(x), 1.0)) for x, _ in data) / len(data)


def test_logit_kd_moves_student_to_teacher(teacher: nn.Module, tmp_path: Path) -> None:
    student, held = Net(16, seed=1), _xy(1)
    recipe = {"steps": [{"distill": {"method": "logit", "temperature": 2.0, "alpha": 0.8, "epochs": 10, "lr": 1e-2}}]}
    res = sk.compress(student, recipe, train=_xy(0), teacher=teacher, **QUIET)
    train = _xy(0)  # KD needs no labels: the gap on the transfer set itself is what it minimises
    before, after = _kd_gap(student, teacher, train), _kd_gap(res.model, teacher, train)
    assert after < 0.5 * before, (before, after)
    assert _kd_gap(res.model, teacher, held) < 0.8 * _kd_gap(student, teacher, held)
    notes = res.report.to_dict()["steps"][0]["notes"]
    assert notes["teacher"] == "teacher=" and notes["steps"] == 80
    sk.save(res.model, tmp_path / "s")
    x = held[0][0]
    assert torch.equal(sk.load(tmp_path / "s", model=Net(16, seed=9))(x), res.model(x))


def test_alpha_zero_is_plain_finetuning(teacher: nn.Module) -> None:
    """alpha = 0 leaves only the hard-label loss: the same result as ``finetune`` with the same options."""
    opts = {"steps": 12, "lr": 1e-2, "optimizer": "sgd", "seed": 4}
    kd = sk.compress(Net(16, seed=1), {"steps": [{"distill": {"alpha": 0.0, **opts}}]}, train=_xy(0),
                     teacher=teacher, **QUIET).model
    ft = sk.compress(Net(16, seed=1), {"steps": [{"finetune": opts}]}, train=_xy(0), **QUIET).model
    for a, b in zip(kd.parameters(), ft.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_feature_kd_learns_a_projection(teacher: nn.Module) -> None:
    student = Net(16, seed=1)
    recipe = {"steps": [{"distill": {"method": "feature", "layer_map": {"fc2": "fc2"}, "logit_weight": 0.0,
                                     "epochs": 10, "lr": 1e-2}}]}
    res = sk.compress(student, recipe, train=_xy(0), teacher=teacher, **QUIET)
    notes = res.report.to_dict()["steps"][0]["notes"]
    assert notes["projections"] == 1  # 16 -> 64
    assert notes["final_loss"] < 0.3 * notes["first_loss"]
    assert [n for n, _ in res.model.named_modules()] == [n for n, _ in student.named_modules()]  # no projection left


def test_default_teacher_is_the_input_model_and_heals_drop_layers(make_llama_peaky) -> None:
    """drop_layers then distill (teacher = the untouched input): the KL to the original falls."""
    model = make_llama_peaky(layers=4)
    text = _tokens(12)
    drop = {"drop_layers": {"method": "last", "n": 2}}
    dropped = sk.compress(model, {"steps": [drop]}, **QUIET).model
    healed = sk.compress(model, {"steps": [drop, {"distill": {"steps": 40, "lr": 3e-3}}]}, train=text, **QUIET)
    gap_dropped, gap_healed = _lm_gap(dropped, model, text), _lm_gap(healed.model, model, text)
    assert healed.model.config.num_hidden_layers == 2
    assert gap_healed < 0.5 * gap_dropped, (gap_dropped, gap_healed)
    assert healed.report.to_dict()["steps"][1]["notes"]["teacher"] == "input model"


def test_every_kth_student_token_kd_round_trips(make_llama_peaky, tmp_path: Path) -> None:
    model = make_llama_peaky(layers=4)
    text = _tokens(12)
    res = sk.compress(model, {"steps": [{"distill": {"keep_every": 2, "steps": 30, "lr": 3e-3}}]}, train=text,
                      **QUIET)
    student = res.model
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    notes = res.report.to_dict()["steps"][0]["notes"]
    assert notes["student_param_ratio"] < 0.75 and notes["final_loss"] < notes["first_loss"]
    sk.save(student, tmp_path / "student")
    loaded = sk.load(tmp_path / "student")
    ids = text[0]["input_ids"]
    assert torch.equal(loaded(input_ids=ids).logits, student(input_ids=ids).logits)


def test_width_shrunk_student(make_llama_peaky, tmp_path: Path) -> None:
    model = make_llama_peaky(layers=2)
    text = _tokens(8)
    res = sk.compress(model, {"steps": [{"distill": {"shrink_width": 0.5, "steps": 10, "lr": 3e-3}}]}, train=text,
                      **QUIET)
    assert res.model.model.layers[0].mlp.up_proj.out_features == 32  # 64 -> 32 neurons
    sk.save(res.model, tmp_path / "narrow")
    ids = text[0]["input_ids"]
    assert torch.equal(sk.load(tmp_path / "narrow")(input_ids=ids).logits, res.model(input_ids=ids).logits)


def test_attention_kd_brings_maps_closer(make_llama_peaky) -> None:
    teacher = make_llama_peaky(layers=2, seed=0)
    student = make_llama_peaky(layers=2, seed=1)
    text = _tokens(8)
    recipe = {"steps": [{"distill": {"method": "attention", "logit_weight": 0.0, "steps": 40, "lr": 1e-2}}]}
    res = sk.compress(student, recipe, train=text, teacher=teacher, **QUIET)
    assert _attn_gap(res.model, teacher, text) < 0.5 * _attn_gap(student, teacher, text)


# ----------------------------------------------------------------------------- bad input
def test_bad_distill_configs_name_the_field() -> None:
    for opts, field in [({"temperature": 0.0}, "temperature"), ({"alpha": 1.5}, "alpha"),
                        ({"keep_every": 1}, "keep_every"), ({"shrink_width": 1.0}, "shrink_width"),
                        ({"method": "feature", "projection": "maybe"}, "projection"),
                        ({"method": "attention", "layer_map": {"a": 1}}, "layer_map")]:
        with pytest.raises(ConfigError, match=field):
            sk.Recipe.from_dict({"steps": [{"distill": opts}]})


def test_bad_distill_inputs(teacher: nn.Module, make_llama_peaky) -> None:
    data = _xy(0)
    with pytest.raises(ConfigError, match="output sizes differ"):
        sk.compress(Net(16, 1, d_out=3), {"steps": [{"distill": {"steps": 1}}]}, train=data, teacher=teacher, **QUIET)
    with pytest.raises(ConfigError, match="layer_map: student module 'fc9'"):
        sk.compress(Net(16, 1), {"steps": [{"distill": {"method": "feature", "layer_map": {"fc9": "fc2"}, "steps": 1}}]},
                    train=data, teacher=teacher, **QUIET)
    with pytest.raises(ConfigError, match="layer_map: teacher module 'fc7'"):
        sk.compress(Net(16, 1), {"steps": [{"distill": {"method": "feature", "layer_map": {"fc2": "fc7"}, "steps": 1}}]},
                    train=data, teacher=teacher, **QUIET)
    with pytest.raises(ConfigError, match="projection: auto"):
        sk.compress(Net(16, 1), {"steps": [{"distill": {"method": "feature", "layer_map": {"fc2": "fc2"},
                                                        "projection": "none", "steps": 1}}]},
                    train=data, teacher=teacher, **QUIET)
    with pytest.raises(DataError, match="train"):
        sk.compress(Net(16, 1), {"steps": [{"distill": {"steps": 1}}]}, train=[], teacher=teacher, **QUIET)
    with pytest.raises(ConfigError, match="keep_layers"):
        sk.compress(make_llama_peaky(layers=2), {"steps": [{"distill": {"keep_layers": [0, 5], "steps": 1}}]},
                    train=_tokens(2), **QUIET)
    llama = make_llama_peaky(layers=2)
    with pytest.raises(ConfigError, match="layer_map: 0 -> 7"):
        sk.compress(llama, {"steps": [{"distill": {"method": "attention", "layer_map": {0: 7}, "steps": 1}}]},
                    train=_tokens(2), **QUIET)


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def make_llama_peaky():
    """Tiny Llama with large init so its next-token distributions are far from uniform."""
    import transformers

    def build(layers: int = 4, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                       num_attention_heads=2, num_key_value_heads=1, vocab_size=64,
                                       max_position_embeddings=64, tie_word_embeddings=True, initializer_range=0.2)
        return transformers.LlamaForCausalLM(cfg).eval()

    return build


def _tokens(n: int, bs: int = 4, seq: int = 16) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 64, (n, seq), generator=gen)
    return [{"input_ids": ids[i:i + bs], "attention_mask": torch.ones(len(ids[i:i + bs]), seq, dtype=torch.long)}
            for i in range(0, n, bs)]


def _lm_gap(student: nn.Module, teacher: nn.Module, data: list) -> float:
    with torch.no_grad():
        return sum(float(logit_kd(student(**b).logits, teacher(**b).logits, 1.0)) for b in data) / len(data)


def _attn_gap(student: nn.Module, teacher: nn.Module, data: list) -> float:
    student.set_attn_implementation("eager")
    teacher.set_attn_implementation("eager")
    with torch.no_grad():
        total = 0.0
        for b in data:
            s, t = student(**b, output_attentions=True).attentions, teacher(**b, output_attentions=True).attentions
            total += sum(float(attention_kl(a, c)) for a, c in zip(s, t))
    return total

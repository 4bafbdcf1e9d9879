"""``sk.export(..., format="onnx")`` for non-decoder models, and ``OrtModel``.

Every test exports with slimkit, runs the file in ONNX Runtime and compares with slimkit's own
(torch) model on inputs the export never saw.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.errors import CheckpointError, ConfigError, UnsupportedModelError
from slimkit.export.api import ExportOptions
from slimkit.export.onnx import export_onnx
from slimkit.export.onnx_lower import NBitsLinear, block_size_for
from slimkit.quantize.weight_only.layer import WeightOnlyLinear

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from slimkit.export.ort_model import OrtModel, onnx_size_bytes  # noqa: E402
from slimkit.export.ort_int8 import ort_u8s8_exact  # noqa: E402

SATURATING_ORT = pytest.mark.skipif(
    not ort_u8s8_exact(), reason="ONNX Runtime's uint8 x int8 GEMM saturates int16 pairs on this CPU (x86 without "
    "VNNI), so its int8 outputs cannot match slimkit's exact integer math")


def compress(model: nn.Module, step: dict, **kw) -> nn.Module:  # noqa: ANN003
    return sk.compress(model, {"steps": [step]}, progress=False, measure=False, **kw).model


def node_types(path) -> list[str]:  # noqa: ANN001
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def padded_tokens(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (3, 11), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


# ----------------------------------------------------------------------------- BERT
def test_bert_fp32_respects_padding_and_dynamic_int8_matches(make_bert, tmp_path) -> None:
    model = make_bert()
    batch = padded_tokens()
    path = sk.export(model, tmp_path / "fp32", format="onnx")
    assert path == tmp_path / "fp32" / "model.onnx"
    ort = OrtModel(path)
    assert list(ort.inputs) == ["input_ids", "attention_mask", "token_type_ids"] and ort.output_names == ["last_hidden_state"]
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
        got = ort(**batch).last_hidden_state  # another batch size and length than the export's example
    assert got.shape == ref.shape == (3, 11, 32)
    assert float((got - ref).abs().max()) < 1e-4  # the mask is an input, not baked (tracing export: cosine 0.90)
    info = json.loads((tmp_path / "fp32" / "slimkit-export.json").read_text())
    assert info["kind"] == "text" and info["inputs"]["input_ids"]["dynamic_axes"] == {"0": "batch", "1": "sequence"}
    assert (tmp_path / "fp32" / "config.json").is_file()

    q = compress(make_bert(), {"quantize": {"method": "dynamic_int8"}})
    qpath = sk.export(q, tmp_path / "int8", format="onnx")
    types = node_types(qpath)
    assert types.count("MatMulIntegerToFloat") == 12 and "MatMul" in types  # 12 encoder Linears (the unused pooler is dropped); attention stays float
    with torch.no_grad():
        qref = q(**batch).last_hidden_state
        qgot = OrtModel(qpath)(batch).last_hidden_state  # a dict positional, as evaluators call it
    # same per-token int8 codes as slimkit's layer: ORT sits far closer to slimkit's int8 model than fp32 does
    # (where ORT's uint8 x int8 GEMM saturates, x86 without VNNI, its outputs are not comparable)
    assert not ort_u8s8_exact() or float((qgot - qref).abs().max()) < 0.05 * float((qref - ref).abs().max())
    inits = {i.name: i for i in onnx.load(str(qpath)).graph.initializer}
    int8 = [n for n, i in inits.items() if i.data_type == onnx.TensorProto.INT8]
    assert len(int8) == 12 and all(n.endswith("weight_t") for n in int8)  # slimkit's int8 codes, no float copies
    weight_bytes = [sum(len(i.raw_data) for i in onnx.load(str(p)).graph.initializer) for p in (path, qpath)]
    assert weight_bytes[1] < 0.5 * weight_bytes[0]  # float embeddings are most of what is left in this tiny model
    assert onnx_size_bytes(qpath) < onnx_size_bytes(path)


# ----------------------------------------------------------------------------- GPT-2 weight-only int4
class LogitsOnly(nn.Module):
    """A user's wrapper: ``input_ids`` -> logits (a plain module with dict example inputs)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, use_cache=False).logits


def test_gpt2_rtn_int4_g32_runs_as_matmulnbits_from_slimkit_codes(make_gpt2, tmp_path) -> None:
    q = compress(make_gpt2(), {"quantize": {"method": "rtn", "bits": 4, "group_size": 32}})
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(3))
    options = ExportOptions(example_inputs={"input_ids": ids[:, :6]}, accuracy_level=0)  # float activations: exact
    (tmp_path / "exact").mkdir()
    assert export_onnx(LogitsOnly(q).eval(), tmp_path / "exact", options) == "model.onnx"
    graph = onnx.load(str(tmp_path / "exact" / "model.onnx")).graph
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 9 and all(n.domain == "com.microsoft" for n in nbits)  # 8 Conv1D->Linear + int8 head
    attrs = {a.name: a.i for a in nbits[0].attribute}
    assert attrs["bits"] == 4 and attrs["block_size"] == 32 and attrs["accuracy_level"] == 0
    ort = OrtModel(tmp_path / "exact" / "model.onnx")
    assert list(ort.inputs) == ["input_ids"] and ort.output_names == ["output"]  # a plain module returns a tensor
    with torch.no_grad():
        ref = q(input_ids=ids, use_cache=False).logits
        got = ort(input_ids=ids)
    assert float((got - ref).abs().max()) < 1e-4 * max(1.0, float(ref.abs().max()))

    # through sk.export on the model itself: default accuracy_level 4 (int8 activations inside ORT's kernel)
    path = sk.export(q, tmp_path / "lm", format="onnx")
    info = json.loads((tmp_path / "lm" / "slimkit-export.json").read_text())
    assert info["quantized_layers"]["transformer.h.0.mlp.c_fc"] == "MatMulNBits int4 group 32 asymmetric"
    assert any("without KV cache" in n for n in info["notes"])
    with torch.no_grad():
        fast = OrtModel(path)(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    cos = nn.functional.cosine_similarity(fast.flatten(), ref.flatten(), dim=0)
    assert float(cos) > 0.999 and float((fast - ref).abs().max()) < 0.05 * float(ref.abs().max())


@pytest.mark.parametrize("bits,group,symmetric,k", [(4, 32, True, 80), (8, None, False, 48), (4, 96, False, 192)])
def test_matmulnbits_packing_reproduces_slimkit_layer(bits, group, symmetric, k) -> None:
    """The ORT layout (blocks, short last block for K % g, repeated group params) dequantizes to slimkit's weights."""
    torch.manual_seed(0)
    layer = WeightOnlyLinear.from_weight(torch.randn(24, k), torch.randn(24), bits, group, symmetric,
                                         input_scale=torch.rand(k) + 0.5)
    stand_in = NBitsLinear(layer, "fc")
    x = torch.randn(5, k)
    with torch.no_grad():
        assert float((stand_in(x) - layer(x)).abs().max()) < 1e-4
    assert stand_in.block == {32: 32, None: 64, 96: 32}[group]
    assert stand_in.b.shape == (24, -(-k // stand_in.block), stand_in.block * bits // 8)
    assert (stand_in.zero_points is None) == symmetric


def test_group_size_that_cannot_map_is_refused_naming_layer() -> None:
    with pytest.raises(UnsupportedModelError, match=r"'blocks.0.fc'.*group size 24.*16, 32, 64"):
        block_size_for(24, 96, "blocks.0.fc")


# ----------------------------------------------------------------------------- CNN
def test_cnn_fp32_and_static_int8_qdq(make_cnn, tmp_path) -> None:
    model = make_cnn().eval()
    x = torch.randn(3, 3, 20, 20, generator=torch.Generator().manual_seed(4))
    path = sk.export(model, tmp_path / "fp32", format="onnx", example_inputs=torch.randn(2, 3, 20, 20))
    ort = OrtModel(path)
    assert list(ort.inputs) == ["input"] and ort.output_names == ["output"]
    with torch.no_grad():
        assert float((ort(x) - model(x)).abs().max()) < 1e-4  # a tensor in, a tensor out, another batch size
    # slimkit's evaluators and latency measurement take the ORT model unchanged
    agree = sk.TopKAgreement([x, x[:1]], k=3)
    agree.prepare(model)
    assert agree.scores(ort)["top1"] == 1.0
    from slimkit.measure.latency import measure_latency

    timing = measure_latency(ort, x, warmup=1, runs=3)
    assert timing["runtime"].startswith("onnxruntime") and timing["latency_ms"] > 0

    calib = [torch.randn(4, 3, 20, 20, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    q = compress(make_cnn().eval(), {"quantize": {"method": "static_int8", "graph": "off"}}, calib=calib)
    qpath = sk.export(q, tmp_path / "int8", format="onnx", example_inputs=calib[0])
    types = node_types(qpath)
    assert types.count("QuantizeLinear") >= 4 and "DequantizeLinear" in types
    with torch.no_grad():
        ref, got = q(x), OrtModel(qpath)(x)
    # same int8 codes and activation ranges; ORT's fused int8 kernels round the requantized conv
    # outputs independently of fbgemm, so allow a few output quantization steps
    assert float((got - ref).abs().max()) < 0.05 * float(ref.abs().max())


class FeaturesNet(nn.Module):
    """A CNN with a traceable ``features`` region (what static_int8's graph mode quantizes)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_graph_mode_static_int8_is_refused_naming_the_layer(tmp_path) -> None:
    calib = [torch.randn(4, 3, 20, 20, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    torch.manual_seed(0)
    q = compress(FeaturesNet().eval(), {"quantize": {"method": "static_int8", "graph": "on"}}, calib=calib)
    with pytest.raises(UnsupportedModelError, match="no ONNX lowering; re-run static_int8 with graph: off"):
        sk.export(q, tmp_path / "g", format="onnx", example_inputs=calib[0])
    assert not (tmp_path / "g").exists()  # nothing half-written


# ----------------------------------------------------------------------------- pruned, unsupported, inputs
def test_structurally_pruned_model_exports_smaller(make_mlp, tmp_path) -> None:
    x = torch.randn(4, 32)
    dense = make_mlp(hidden=128)
    pruned = sk.compress(make_mlp(hidden=128), {"steps": [{"prune": {"method": "structured", "granularity": "neuron",
                                                                       "sparsity": 0.5}}]},
                         example_inputs=x, calib=[x], progress=False, measure=False).model
    a = sk.export(dense, tmp_path / "dense", format="onnx", example_inputs=x)
    b = sk.export(pruned, tmp_path / "pruned", format="onnx", example_inputs={"x": x})
    assert list(OrtModel(b).inputs) == ["x"]  # dict keys become input names
    assert onnx_size_bytes(b) < 0.75 * onnx_size_bytes(a)
    with torch.no_grad():
        assert float((OrtModel(b)(x) - pruned(x)).abs().max()) < 1e-5


def test_layers_without_lowering_raise_unless_dequantize(make_mlp, tmp_path) -> None:
    x = torch.randn(4, 32)
    q = compress(make_mlp(), {"quantize": {"method": "rtn", "bits": 3, "group_size": 16}})
    with pytest.raises(UnsupportedModelError, match=r"'fc1'.*3-bit"):
        sk.export(q, tmp_path / "a", format="onnx", example_inputs=x)
    path = sk.export(q, tmp_path / "b", format="onnx", example_inputs=x, dequantize=True)
    assert "MatMulNBits" not in node_types(path)
    with torch.no_grad():
        assert float((OrtModel(path)(x) - q(x)).abs().max()) < 1e-4
    info = json.loads((tmp_path / "b" / "slimkit-export.json").read_text())
    assert set(info["quantized_layers"].values()) == {"dequantized to fp32 (dequantize=True)"}
    assert isinstance(q.fc1, WeightOnlyLinear)  # the export's stand-ins were swapped back out


def test_plain_module_without_example_inputs_is_a_config_error(make_mlp, tmp_path) -> None:
    with pytest.raises(ConfigError, match="pass example_inputs"):
        sk.export(make_mlp(), tmp_path / "m", format="onnx")


def test_overwrite_rules(make_mlp, tmp_path) -> None:
    x = torch.randn(2, 32)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    with pytest.raises(CheckpointError):
        sk.export(make_mlp(), user, format="onnx", example_inputs=x, overwrite=True)
    assert (user / "notes.txt").read_text() == "keep" and not (user / "model.onnx").exists()
    out = sk.export(make_mlp(), tmp_path / "o", format="onnx", example_inputs=x)
    with pytest.raises(CheckpointError, match="already exists"):
        sk.export(make_mlp(), tmp_path / "o", format="onnx", example_inputs=x)
    again = sk.export(make_mlp(seed=1), tmp_path / "o", format="onnx", example_inputs=x, overwrite=True)
    with torch.no_grad():
        assert float((OrtModel(again)(x) - make_mlp(seed=1)(x)).abs().max()) < 1e-5 and again == out


# ----------------------------------------------------------------------------- dynamic int8 lowering
@SATURATING_ORT
@pytest.mark.parametrize("activations", ["per_token", "per_tensor"])
def test_dynamic_int8_runs_uint8_integer_gemm_equal_to_slimkit(make_mlp, tmp_path, activations) -> None:
    """Per-token int8 codes go to ORT as uint8 ``q + 128`` (zero point 128) through one per-row
    QuantizeLinear and MatMulIntegerToFloat: ORT's int8 x int8 GEMM is ~20x slower than uint8 x int8."""
    dense = make_mlp()
    q = compress(make_mlp(), {"quantize": {"method": "dynamic_int8", "activations": activations}})
    path = sk.export(q, tmp_path / activations, format="onnx", example_inputs=torch.randn(4, 32))
    graph = onnx.load(str(path)).graph
    types = [n.op_type for n in graph.node]
    n_int8 = sum(getattr(m, "slimkit_kind", "") == "int8_dynamic_linear" for m in q.modules())
    assert n_int8 == 3 and types.count("MatMulIntegerToFloat") == n_int8 and "MatMulInteger" not in types
    producers = {o: n for n in graph.node for o in n.output}
    quantizer = "QuantizeLinear" if activations == "per_token" else "DynamicQuantizeLinear"
    for node in (n for n in graph.node if n.op_type == "MatMulIntegerToFloat"):
        assert producers[node.input[0]].op_type == quantizer  # uint8 activations from one quantize op
    if activations == "per_token":
        zero_points = [i for i in graph.initializer if i.data_type == onnx.TensorProto.UINT8]
        assert zero_points and all(onnx.numpy_helper.to_array(z).tolist() == 128 for z in zero_points)
    x = torch.randn(37, 32, generator=torch.Generator().manual_seed(3)) * 3  # another batch size than the export's
    with torch.no_grad():
        ref, fp32, got = q(x), dense(x), OrtModel(path)(x)
    err, quant_err = float((got - ref).abs().max()), float((fp32 - ref).abs().max())
    if activations == "per_token":  # slimkit's own codes: only float rounding of the rescale differs
        assert err < 1e-4 * float(ref.abs().max()), (err, quant_err)
    else:  # ORT's DynamicQuantizeLinear rounds its scale and zero point like fbgemm, not bit-identically
        assert err < 0.1 * quant_err, (err, quant_err)

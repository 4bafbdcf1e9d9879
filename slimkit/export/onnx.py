"""``sk.export(..., format="onnx")``: a model ONNX Runtime (CPU EP) runs, with slimkit's quantized layers as integer ops.

Non-decoder models (encoders, classifiers, CNNs, plain modules) go through
``torch.onnx.export(dynamo=True)`` with dynamic batch (and, for token inputs, sequence) axes: the
legacy tracing exporter bakes a BERT attention mask into the graph (cosine 0.90 on padded
batches), the dynamo exporter keeps it an input. Llama-family causal LMs are handed to
:func:`slimkit.export.onnx_decoder.export_decoder` (KV-cache inputs and outputs); other causal LMs
(GPT-2) are exported here as a full-sequence graph without KV cache, and ``slimkit-export.json``
says so.

Names follow the ecosystem (DESIGN.md): Hugging Face text models take the tokenizer's tensors
(``input_ids``, ``attention_mask``, ``token_type_ids`` where used) and return ``last_hidden_state``
(encoders) or ``logits`` (classifiers); image models take ``pixel_values`` and return ``logits``; a
plain module takes ``input`` (``input_0``, ``input_1``... for several) and returns ``output``,
unless ``example_inputs`` is a dict, whose keys become the input names.

Quantized layers are lowered from slimkit's own codes (:mod:`slimkit.export.onnx_lower`). The
directory also holds the tokenizer and HF config when there are any, and ``slimkit-export.json``:
what was exported, how each quantized layer was lowered, the check of ORT's outputs against the
torch model on the example inputs, and runtime notes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.export.api import ExportOptions, register_exporter
from slimkit.export.onnx_lower import lowered, translation_table

__all__ = ["export_onnx", "is_causal_lm", "io_spec", "IOSpec", "MODEL_FILE", "INFO_FILE", "EXTERNAL_DATA_LIMIT"]

MODEL_FILE = "model.onnx"
INFO_FILE = "slimkit-export.json"
#: protobuf's 2 GB limit: larger models keep their weights in an external data file
EXTERNAL_DATA_LIMIT = 2 * 1024 ** 3
_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def is_causal_lm(model: nn.Module) -> bool:
    """A Hugging Face causal LM (``*ForCausalLM`` / ``*LMHeadModel``, or a generating decoder-only model)."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    names = [type(model).__name__, *(getattr(config, "architectures", None) or [])]
    if any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return True
    can_generate = getattr(model, "can_generate", None)
    return (callable(can_generate) and bool(can_generate()) and callable(getattr(model, "get_output_embeddings", None))
            and not getattr(config, "is_encoder_decoder", False))


@dataclasses.dataclass
class IOSpec:
    """How the model is called for export: input names and example tensors, dynamic axes, output names."""

    names: list[str]
    args: tuple[torch.Tensor, ...]
    dynamic: tuple[dict[int, str], ...]
    keyword: bool  # call the model with names as keyword arguments (HF models, dict example inputs)
    kind: str      # "text" | "image" | "module"
    notes: list[str] = dataclasses.field(default_factory=list)


def _forward_params(model: nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _hf_text_inputs(model: nn.Module, tokenizer: Any) -> list[str]:
    """The tokenizer's tensors the model's forward takes (token_type_ids only where the model uses them)."""
    params = _forward_params(model)
    names = list(getattr(tokenizer, "model_input_names", None) or [])
    if not names:
        names = ["input_ids", "attention_mask"]
        if int(getattr(model.config, "type_vocab_size", 0) or 0) > 1:
            names.append("token_type_ids")
    return [n for n in names if n in params or not params]


def _example_text(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 2:
        raise ConfigError("export: cannot synthesize token ids (the model config has no vocab_size); "
                          "pass example_inputs={'input_ids': ..., 'attention_mask': ...}")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, min(vocab, 1000), (2, 8), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # one padded row: the mask must stay an input
    pool = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {n: pool[n] for n in names if n in pool}


def _first_conv(model: nn.Module) -> nn.Conv2d | None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
        if isinstance(module, (nn.Linear, nn.Embedding)):
            return None
    return None


def _is_image_model(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    if config is not None:
        return getattr(model, "main_input_name", "") == "pixel_values"
    return _first_conv(model) is not None


def _example_image(model: nn.Module) -> torch.Tensor:
    config = getattr(model, "config", None)
    conv = _first_conv(model)
    channels = int(getattr(config, "num_channels", 0) or (conv.in_channels if conv is not None else 3))
    size = getattr(config, "image_size", 224) if config is not None else 224
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return torch.randn(2, channels, h, w, generator=torch.Generator().manual_seed(0))


def _dynamic_axes(name: str, tensor: torch.Tensor, kind: str) -> dict[int, str]:
    """Batch is dynamic everywhere; token inputs ([B, L] integers) also have a dynamic sequence axis."""
    if tensor.dim() == 0:
        return {}
    axes = {0: "batch"}
    if tensor.dim() == 2 and not tensor.is_floating_point() and (kind == "text" or name in _TEXT_INPUTS):
        axes[1] = "sequence"
    return axes


def _widen_batch(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A batch of 1 would be specialized away by torch.export: repeat it to 2 for tracing."""
    if t.dim() >= 1 and t.shape[0] == 1:
        return t.repeat(2, *([1] * (t.dim() - 1))), True
    return t, False


def io_spec(model: nn.Module, options: ExportOptions) -> IOSpec:
    """Input names, example tensors and dynamic axes for ``model`` (from options.example_inputs or synthesized)."""
    ex = options.example_inputs
    is_hf = getattr(model, "config", None) is not None
    kind = "image" if _is_image_model(model) else ("text" if is_hf else "module")
    if ex is None:
        if kind == "text":
            ex = _example_text(model, _hf_text_inputs(model, options.tokenizer))
        elif kind == "image":
            ex = {"pixel_values": _example_image(model)} if is_hf else _example_image(model)
        else:
            raise ConfigError(f"export: cannot tell what {type(model).__name__} takes; pass example_inputs "
                              "(a tensor, a tuple of tensors, or a dict of named tensors)")
    if isinstance(ex, Mapping):
        names, tensors, keyword = list(ex), list(ex.values()), True
    else:
        tensors = list(ex) if isinstance(ex, (tuple, list)) else [ex]
        names = ["input"] if len(tensors) == 1 else [f"input_{i}" for i in range(len(tensors))]
        keyword = False
        if kind == "image" and is_hf:
            names, keyword = ["pixel_values"], True
    for n, t in zip(names, tensors):
        if not isinstance(t, torch.Tensor):
            raise ConfigError(f"export: example input {n!r} is a {type(t).__name__}, not a tensor")
    widened = [_widen_batch(t) for t in tensors]
    spec = IOSpec(names, tuple(t for t, _ in widened), tuple(_dynamic_axes(n, t, kind) for n, t in zip(names, tensors)),
                  keyword, kind)
    if any(w for _, w in widened):
        spec.notes.append("example batch of 1 repeated to 2 for tracing, so the batch axis stays dynamic")
    return spec


class _Exported(nn.Module):
    """Calls the model with positional tensors (mapped to names) and returns the named output tensors."""

    def __init__(self, model: nn.Module, spec: IOSpec) -> None:
        super().__init__()
        self.model, self.spec = model, spec
        self.output_names: list[str] = []

    def forward(self, *args: torch.Tensor) -> Any:
        if self.spec.keyword:
            kwargs = dict(zip(self.spec.names, args))
            params = _forward_params(self.model) if getattr(self.model, "config", None) is not None else set()
            if "return_dict" in params:
                kwargs["return_dict"] = True
            if "use_cache" in params:  # full-sequence graph (KV-cache decoders: onnx_decoder)
                kwargs["use_cache"] = False
            out = self.model(**kwargs)
        else:
            out = self.model(*args)
        names, tensors = _select_outputs(out)
        self.output_names = names
        return tensors[0] if len(tensors) == 1 else tuple(tensors)


def _select_outputs(out: Any) -> tuple[list[str], list[torch.Tensor]]:
    """(names, tensors) of the outputs to export: logits / last_hidden_state of HF outputs, else all."""
    if isinstance(out, torch.Tensor):
        return ["output"], [out]
    for key in ("logits", "last_hidden_state"):
        value = out.get(key) if isinstance(out, Mapping) else getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return [key], [value]
    if isinstance(out, Mapping):
        items = [(k, v) for k, v in out.items() if isinstance(v, torch.Tensor)]
        return [k for k, _ in items], [v for _, v in items]
    if isinstance(out, (tuple, list)) and out and all(isinstance(v, torch.Tensor) for v in out):
        return [f"output_{i}" for i in range(len(out))], list(out)
    raise UnsupportedModelError(f"export: the model returns {type(out).__name__}; need a tensor, a tuple of tensors, "
                                "or an output with logits / last_hidden_state")


@contextlib.contextmanager
def _quiet_exporter() -> Any:
    """torch.onnx's dynamo exporter prints progress and warns about optional packages: keep that off the user's console."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _onnx_program(wrapper: _Exported, spec: IOSpec, opset: int) -> Any:
    with torch.no_grad():
        wrapper(*spec.args)  # sets output names; also catches input mistakes with a plain torch error
    try:
        with _quiet_exporter():
            return torch.onnx.export(
                wrapper, spec.args, dynamo=True, input_names=spec.names, output_names=wrapper.output_names,
                dynamic_shapes=(spec.dynamic,), custom_translation_table=translation_table(), opset_version=opset,
                verbose=False)
    except Exception as exc:  # torch.export's own error types vary between releases
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(f"export: torch.onnx.export(dynamo=True) could not export "
                                    f"{type(wrapper.model).__name__}: {first}") from exc


def _model_bytes(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _strip_node_metadata(path: Path) -> None:
    """Drop the exporter's per-node debug metadata (source stack, FX names): for a small model it
    outweighs the weights; external data, if any, is left where it is."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(proto, str(path))


def _write_side_files(model: nn.Module, tmp_dir: Path, options: ExportOptions) -> list[str]:
    written = []
    config = getattr(model, "config", None)
    if config is not None and callable(getattr(config, "save_pretrained", None)):
        config.save_pretrained(tmp_dir)
        written.append("config.json")
    tok = options.tokenizer
    if tok is not None and callable(getattr(tok, "save_pretrained", None)):
        tok.save_pretrained(tmp_dir)
        written.append("tokenizer")
    return written


def _verify(path: Path, spec: IOSpec, reference: list[torch.Tensor], names: list[str]) -> dict[str, Any]:
    """Run the file in ONNX Runtime on the example inputs; max |ORT - torch| per output."""
    from slimkit.export.ort_model import OrtModel

    ort = OrtModel(path, threads=1)
    outs = ort.run_named(dict(zip(spec.names, spec.args)))
    return {n: {"max_abs_diff": float((outs[n] - r).abs().max()), "max_abs_ref": float(r.abs().max())}
            for n, r in zip(names, reference)}


@register_exporter("onnx")
def export_onnx(model: nn.Module, tmp_dir: Path, options: ExportOptions) -> str:
    """Write ``model.onnx`` (+ tokenizer, config, ``slimkit-export.json``) into ``tmp_dir``; returns ``"model.onnx"``."""
    if is_causal_lm(model):
        from slimkit.export.onnx_decoder import export_decoder, is_llama_family

        if is_llama_family(model):
            main = export_decoder(model, tmp_dir, options)
            if not (tmp_dir / "config.json").exists():  # the config and tokenizer tell runtimes (and slimkit eval) the task
                _write_side_files(model, tmp_dir, options)
            return main
    accuracy_level = options.accuracy_level
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise ConfigError(f"accuracy_level {accuracy_level!r} is not a MatMulNBits accuracy level; valid: 0-4")
    spec = io_spec(model, options)
    with lowered(model, dequantize=options.dequantize, accuracy_level=accuracy_level) as plan:
        wrapper = _Exported(model, spec).eval()
        program = _onnx_program(wrapper, spec, options.opset)
        with torch.no_grad():
            ref = wrapper(*spec.args)
    reference = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    external = _model_bytes(model) > EXTERNAL_DATA_LIMIT
    with _quiet_exporter():
        program.save(str(tmp_dir / MODEL_FILE), external_data=external)
    _strip_node_metadata(tmp_dir / MODEL_FILE)
    check = _verify(tmp_dir / MODEL_FILE, spec, reference, wrapper.output_names)
    side = _write_side_files(model, tmp_dir, options)
    info = _info(model, spec, wrapper.output_names, plan, options, accuracy_level, external, check, side)
    (tmp_dir / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return MODEL_FILE


def _info(model: nn.Module, spec: IOSpec, outputs: list[str], plan: dict[str, str], options: ExportOptions,
          accuracy_level: int, external: bool, check: dict[str, Any], side: list[str]) -> dict[str, Any]:
    import onnxruntime

    notes = list(spec.notes)
    hows = set(plan.values())
    if any(h.startswith("MatMulNBits") for h in hows):
        notes.append(f"MatMulNBits accuracy_level={accuracy_level}: "
                     + ("ORT quantizes activations to int8 per block inside the kernel (fast path); outputs differ "
                        "from slimkit's float-activation torch layer by that rounding" if accuracy_level == 4 else
                        "activations stay float, outputs match slimkit's layer to float tolerance"))
    if any("per_token" in h for h in hows):
        notes.append("dynamic int8: per-token (per-row) symmetric int8 activations, as slimkit's layer "
                     "(ORT's quantize_dynamic uses one uint8 range per tensor)")
    if any("per_tensor" in h for h in hows):
        notes.append("dynamic int8 per_tensor: DynamicQuantizeLinear (uint8, one range per call including 0), "
                     "as fbgemm's quantized::linear_dynamic")
    if any(h.startswith("QDQ int8 Conv") for h in hows):
        notes.append("static int8 conv: bias stored as int32 in units of input_scale*weight_scale for ORT's "
                     "QLinearConv fusion (within half a unit of slimkit's float bias)")
    if is_causal_lm(model):
        notes.append("causal LM without KV cache (only Llama-family decoders get the KV-cache graph): a full-sequence "
                     "forward; generating re-runs the whole prefix for every token")
    if options.dequantize:
        notes.append("dequantize=True: quantized layers exported as fp32 with their dequantized weights")
    return {"format": "onnx", "model_file": MODEL_FILE, "model_class": type(model).__name__, "kind": spec.kind,
            "inputs": {n: {"example_shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                           "dynamic_axes": {str(k): v for k, v in d.items()}}
                       for n, t, d in zip(spec.names, spec.args, spec.dynamic)},
            "outputs": outputs, "opset": options.opset, "exporter": "torch.onnx.export(dynamo=True)",
            "torch": torch.__version__, "onnxruntime_checked": onnxruntime.__version__,
            "external_data": external, "quantized_layers": plan, "side_files": side,
            "kv_cache": False,
            "check_on_example_inputs": check,
            "runtime": "onnxruntime CPUExecutionProvider" + (" (com.microsoft contrib ops)" if any(
                h.startswith("MatMulNBits") for h in hows) else ""),
            "notes": notes}

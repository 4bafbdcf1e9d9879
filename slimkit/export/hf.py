"""``sk.export(..., format="hf")``: a directory plain ``transformers`` loads, without slimkit installed.

The directory holds ``config.json`` (a *stock* config of the model's own transformers class),
``model.safetensors``, ``generation_config.json`` when the model has one and the tokenizer's files
when one is known. What slimkit changed must fit that stock config:

* **Structural edits**: dropped, merged or inserted blocks (the stack is numbered 0..n-1 and
  ``num_hidden_layers`` / ``n_layer`` follows), uniformly pruned heads / neurons / hidden width and
  Net2Net-grown widths. The config's sizes (``hidden_size``, ``intermediate_size``,
  ``num_attention_heads``, ``num_key_value_heads``; ``head_dim`` written explicitly where the config
  has it) are read from the modules themselves, and every layer must agree: a stock config holds
  one number for all layers. Every tensor is then checked against the stock model built from that
  config (on the meta device): a missing, extra or mis-shaped tensor is refused with its name.
* **GPT-2's Conv1D**: slimkit runs GPT-2's projections as ``nn.Linear``; where the stock class has a
  ``Conv1D`` the weight is written back transposed (``[in, out]``).
* **Quantized layers**: slimkit's weight-only Linear layers (RTN / GPTQ / AWQ without input scale,
  int2/4/8) are written as compressed-tensors ``pack-quantized`` from slimkit's own codes,
  which transformers loads when the ``compressed-tensors`` package is installed (extra ``onnx``);
  it rebuilds exactly slimkit's dequantized weights. A quantized embedding has no compressed-tensors
  form and is written as its dequantized float table (the same values slimkit computes with).
  Every other slimkit layer (int8 dynamic / static, binary, clustered, low-rank) is refused by name
  unless ``dequantize=True``, which writes every layer's effective float weight into a plain checkpoint.
* **Tied weights**: a head that still shares the embedding's tensor is written once with
  ``tie_word_embeddings: true``; a head slimkit untied (a quantized copy) sets it false.

Anything else (a model that is not a transformers class, a layer folded into an Identity) is an
:class:`UnsupportedModelError` naming the layer and the limit.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import UnsupportedModelError
from slimkit.export.api import ExportOptions, register_exporter
from slimkit.export.hf_tensors import ct_scheme_key, ct_tensors, float_tensors, is_slimkit_layer

__all__ = ["export_hf", "stock_config"]

#: per-block sizes a stock config holds once: (config field, module path inside a block, how to read it)
_BLOCK_SIZES: tuple[tuple[str, str, str], ...] = (
    ("intermediate_size", "mlp.up_proj", "out"),          # Llama / Mistral / Qwen2
    ("intermediate_size", "mlp.gate_proj", "out"),
    ("intermediate_size", "mlp.down_proj", "in"),
    ("intermediate_size", "intermediate.dense", "out"),   # BERT / RoBERTa
    ("intermediate_size", "output.dense", "in"),
    ("n_inner", "mlp.c_fc", "out"),                       # GPT-2
    ("n_inner", "mlp.c_proj", "in"),
    ("num_attention_heads", "self_attn.q_proj", "heads"),
    ("num_key_value_heads", "self_attn.k_proj", "heads"),
    ("num_attention_heads", "attention.self.query", "bert_heads"),
)


# --------------------------------------------------------------------------- reading sizes
def _in_out(module: nn.Module) -> tuple[int, int]:
    """``(in, out)`` of a Linear-like module (nn.Linear, slimkit layers, HF Conv1D)."""
    if type(module).__name__ == "Conv1D":
        nx, nf = module.weight.shape
        return int(nx), int(nf)
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    raise UnsupportedModelError(f"{type(module).__name__} is not a Linear-like layer")


def _get(block: nn.Module, path: str) -> nn.Module | None:
    try:
        return block.get_submodule(path)
    except AttributeError:
        return None


def _block_value(block: nn.Module, path: str, how: str) -> int | None:
    """One size of one block, or None when the block has no module at ``path``."""
    module = _get(block, path)
    if module is None or isinstance(module, nn.Identity):
        return None
    n_in, n_out = _in_out(module)
    if how == "in":
        return n_in
    if how == "out":
        return n_out
    if how == "heads":
        hd = getattr(_get(block, path.rpartition(".")[0]), "head_dim", None)
        return None if not isinstance(hd, int) else n_out // hd
    hd = getattr(_get(block, "attention.self"), "attention_head_size", None)  # bert_heads
    return None if not isinstance(hd, int) else n_out // hd


def _uniform_sizes(blocks_path: str, blocks: nn.Module, config: Any) -> dict[str, int]:
    """Every per-block size the stock config holds once; raises where two blocks differ."""
    sizes: dict[str, tuple[int, int]] = {}  # field -> (value, block index it was first read from)
    for i, block in enumerate(blocks):
        for field, path, how in _BLOCK_SIZES:
            value = _block_value(block, path, how)
            if value is None:
                continue
            if field not in sizes:
                sizes[field] = (value, i)
                continue
            first, j = sizes[field]
            if value != first:
                parent = path.rpartition(".")[0] or path
                raise UnsupportedModelError(
                    f"{blocks_path}.{i}.{parent} has {field} {value} while layer {j} has {first}: the stock "
                    f"{type(config).__name__} holds one {field} for every layer (non-uniform pruning or growth "
                    "cannot be exported to format hf; prune with allocation: uniform, or export to onnx)")
    return {field: v for field, (v, _) in sizes.items()}


def _head_dim(blocks: nn.Module) -> int | None:
    hd = getattr(_get(blocks[0], "self_attn"), "head_dim", None) if len(blocks) else None
    return hd if isinstance(hd, int) else None


def stock_config(model: nn.Module, tied: bool | None) -> Any:
    """A copy of ``model.config`` whose sizes, block count and tying describe ``model`` as it is now.

    Raises :class:`UnsupportedModelError` when the model's layers do not share one shape.
    """
    from slimkit.surgery.blocks import find_blocks

    config = copy.deepcopy(model.config)
    blocks = find_blocks(model)
    n = len(blocks.container)
    for field in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(getattr(config, field, None), int) and field in config.to_dict():
            setattr(config, field, n)
    _layer_types(config, n)
    sizes = _uniform_sizes(blocks.path, blocks.container, config)
    for field, value in sizes.items():
        setattr(config, field, value)
    _check_head_dim(config, blocks, sizes)
    if tied is not None and hasattr(config, "tie_word_embeddings"):
        config.tie_word_embeddings = tied
    config.architectures = [type(model).__name__]
    config.__dict__.pop("quantization_config", None)
    return config


def _layer_types(config: Any, n: int) -> None:
    types = getattr(config, "layer_types", None)
    if not isinstance(types, list) or len(types) == n:
        return
    if len(set(types)) > 1:
        raise UnsupportedModelError(
            f"config.layer_types has {len(types)} entries of several kinds for {n} blocks: which block kept which "
            "kind is not recorded; the stock config cannot describe the edited stack")
    config.layer_types = types[:1] * n


def _check_head_dim(config: Any, blocks: Any, sizes: dict[str, int]) -> None:
    """Keep the attention head size: explicit ``head_dim`` where the config has one, else hidden/heads must equal it."""
    heads = sizes.get("num_attention_heads")
    hd = _head_dim(blocks.container)
    if heads is None:
        return
    if hd is None:  # BERT: head size is always hidden_size / num_attention_heads
        hd = getattr(_get(blocks.container[0], "attention.self"), "attention_head_size", None)
        if isinstance(hd, int) and heads * hd != config.hidden_size:
            raise UnsupportedModelError(
                f"{blocks.path}.0.attention has {heads} heads of size {hd} in a hidden size {config.hidden_size}: "
                f"the stock {type(config).__name__} derives the head size as hidden_size / num_attention_heads "
                "(head pruning of this model cannot be exported to format hf; export it to onnx)")
        return
    if "head_dim" in config.to_dict() or hasattr(type(config), "head_dim"):
        config.head_dim = hd
    elif config.hidden_size // heads != hd:
        raise UnsupportedModelError(
            f"{blocks.path}.0.self_attn has head_dim {hd} but {type(config).__name__} derives "
            f"{config.hidden_size} / {heads} = {config.hidden_size // heads} and has no head_dim field")


# --------------------------------------------------------------------------- tensors
def _tied(model: nn.Module) -> bool | None:
    """Whether the output head still shares the input embedding's tensor (None: no head)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return None
    emb = model.get_input_embeddings()
    w, e = getattr(head, "weight", None), getattr(emb, "weight", None)
    return isinstance(w, torch.Tensor) and w is e


def _stock_model(model: nn.Module, config: Any) -> nn.Module:
    """The stock class built from ``config`` on the meta device (shapes only, no memory)."""
    with torch.device("meta"):
        return type(model)(config)


def _tensors(model: nn.Module, stock: nn.Module, dequantize: bool) -> tuple[dict[str, torch.Tensor], dict[tuple, list[str]]]:
    """The checkpoint tensors by name and the compressed-tensors groups ((bits, group, sym) -> layer names)."""
    out: dict[str, torch.Tensor] = {}
    groups: dict[tuple, list[str]] = {}
    done: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(p + ".") for p in done) or not is_slimkit_layer(module):
            continue
        done.append(name)
        stock_mod = _get(stock, name)
        if stock_mod is None:
            raise UnsupportedModelError(
                f"{name}: {type(module).__name__} sits where the stock {type(stock).__name__} has no module "
                "(a renamed or added layer)")
        if not dequantize and type(module).__name__ != "WeightOnlyEmbedding":
            key = ct_scheme_key(name, module, stock_mod)
            groups.setdefault(key, []).append(name)
            out.update({f"{name}.{k}": v for k, v in ct_tensors(module).items()})
            continue
        layer = float_tensors(name, module)
        out[f"{name}.weight"] = layer.weight
        if layer.bias is not None:
            out[f"{name}.bias"] = layer.bias
    for key, value in model.state_dict().items():
        if not any(key.startswith(p + ".") for p in done):
            out[key] = value
    return out, groups


def _dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's stock layers (float32 when it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _conform(tensors: dict[str, torch.Tensor], stock: nn.Module, quantized: set[str], dtype: torch.dtype,
             aliases: set[str]) -> dict[str, torch.Tensor]:
    """Tensors in the stock layout: Conv1D weights transposed back, float dtypes unified; refuse any
    missing, extra or mis-shaped tensor by name."""
    expected = stock.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        module_name, _, leaf = key.rpartition(".")
        if module_name in quantized:
            out[key] = value
            continue
        if key in aliases:
            continue
        if key not in expected:
            raise UnsupportedModelError(
                f"{key}: slimkit's model has this tensor but the stock {type(stock).__name__} has none (a renamed, "
                "added or restructured layer that the stock config cannot describe)")
        module = _get(stock, module_name)
        if type(module).__name__ == "Conv1D" and leaf == "weight":
            value = value.t()
        if tuple(value.shape) != tuple(expected[key].shape):
            raise UnsupportedModelError(
                f"{key}: slimkit's tensor has shape {list(value.shape)} where the stock {type(stock).__name__} built "
                f"from the exported config has {list(expected[key].shape)} (a layer whose shape the stock config "
                "cannot describe)")
        out[key] = value.to(dtype) if value.is_floating_point() and expected[key].is_floating_point() else value
    missing = [k for k in expected if k not in out and k not in aliases
               and k.rpartition(".")[0] not in quantized]
    if missing:
        raise UnsupportedModelError(
            f"{missing[0]}: the stock {type(stock).__name__} needs this tensor but slimkit's model has none there "
            f"({len(missing)} missing; a layer removed or folded away, e.g. by merge_layers)")
    return out


def _tied_keys(model: nn.Module, tied: bool | None) -> set[str]:
    """The output head's weight key when it shares the embedding's tensor (written once, as the embedding)."""
    if not tied:
        return set()
    head = model.get_output_embeddings()
    return {f"{n}.weight" for n, m in model.named_modules() if m is head}


# --------------------------------------------------------------------------- writing
def _ct_config(groups: dict[tuple, list[str]]) -> dict[str, Any]:
    """compressed-tensors' ``quantization_config`` for slimkit's weight-only groups."""
    config_groups = {}
    for i, ((bits, group_size, symmetric), names) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        config_groups[f"group_{i}"] = {
            "targets": sorted(names),
            "weights": {"num_bits": bits, "type": "int", "symmetric": symmetric,
                        "strategy": "channel" if group_size is None else "group", "group_size": group_size,
                        "dynamic": False, "actorder": None, "observer": None},
            "input_activations": None, "output_activations": None,
        }
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": config_groups, "ignore": [], "kv_cache_scheme": None}


def _write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """One safetensors file; tensors that share storage (cross-layer sharing) are written as copies."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    clean = {}
    for key, value in tensors.items():
        t = value.detach().contiguous()
        ptr = t.untyped_storage().data_ptr()
        clean[key] = t.clone() if ptr in seen else t
        seen.add(ptr)
    save_file(clean, str(path), metadata={"format": "pt"})


def _write_config(config: Any, groups: dict[tuple, list[str]], dtype: torch.dtype, path: Path) -> None:
    data = config.to_dict()
    name = str(dtype).removeprefix("torch.")
    for key in ("dtype", "torch_dtype"):
        if key in data:
            data[key] = name
    if groups:
        data["quantization_config"] = _ct_config(groups)
    data.pop("_slimkit_base", None)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _check_model(model: nn.Module) -> None:
    cls = type(model)
    if getattr(model, "config", None) is None or not cls.__module__.startswith("transformers."):
        raise UnsupportedModelError(
            f"format hf needs a model of a stock transformers class with a config; got {cls.__name__} "
            f"(module {cls.__module__}): export it with format='onnx'")


@register_exporter("hf")
def export_hf(model: nn.Module, tmp_dir: Path, options: ExportOptions) -> str:
    """Write ``config.json`` + ``model.safetensors`` (+ generation config, tokenizer) into ``tmp_dir``;
    returns ``""`` (the directory is what ``from_pretrained`` opens).

    Raises :class:`UnsupportedModelError` naming the layer and the limit for an edit the stock
    config cannot describe, or a quantized layer with no transformers form (``dequantize=True``
    writes float weights instead).
    """
    _check_model(model)
    tied = _tied(model)
    config = stock_config(model, tied)
    stock = _stock_model(model, config)
    with torch.no_grad():
        tensors, groups = _tensors(model, stock, options.dequantize)
        quantized = {n for names in groups.values() for n in names}
        dtype = _dtype(model)
        tensors = _conform(tensors, stock, quantized, dtype, _tied_keys(model, tied))
    tmp = Path(tmp_dir)
    _write_tensors(tensors, tmp / "model.safetensors")
    _write_config(config, groups, dtype, tmp / "config.json")
    gen = getattr(model, "generation_config", None)
    if gen is not None and callable(getattr(model, "can_generate", None)) and model.can_generate():
        gen.save_pretrained(str(tmp))
    tok = options.tokenizer
    if tok is not None and hasattr(tok, "save_pretrained"):
        tok.save_pretrained(str(tmp))
    return ""


"""``OrtModel``: an exported ``.onnx`` file run by ONNX Runtime behind the torch model's interface.

slimkit's evaluators (``sk.Perplexity``, ``sk.CosineFidelity``, ``sk.TopKAgreement``...) and latency
measurement call a model with a tensor, a tuple of tensors or a dict of named tensors and read
``.logits`` / ``.last_hidden_state`` (or the tensor itself). ``OrtModel`` takes the same inputs,
runs the file on the CPU execution provider with ``torch.get_num_threads()`` intra-op threads, and
returns torch tensors in the same shapes, so the same evaluators measure the exported model.

``allow_spinning`` (default off) sets ``session.intra_op.allow_spinning``: with it on (ORT's own
default) the worker threads busy-wait between operators, which saves a wake-up per operator on idle
cores but collapses throughput when the CPU is oversubscribed (measured on a shared 2-core machine
at load ~5: SmolLM2 int4 decode 18 tok/s spinning vs 35 not spinning; ORT fp32 ran 3x slower than
torch with spinning). Pass ``allow_spinning=True`` on dedicated cores.

Inputs the graph declares but the caller did not pass get the neutral value a full forward uses:
``attention_mask`` all ones, ``token_type_ids`` / ``position_ids`` from 0, and KV-cache inputs
(``past_key_values.*``) empty (past length 0).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.core.errors import CheckpointError, DataError

__all__ = ["OrtModel", "OrtOutput", "onnx_files", "onnx_size_bytes"]

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
             "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def onnx_files(path: str | Path) -> list[Path]:
    """The ``.onnx`` file and the external data files it references (what a deployment ships)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    p = Path(path)
    proto = onnx.load(str(p), load_external_data=False)
    files = {p}
    for tensor in proto.graph.initializer:
        if uses_external_data(tensor):
            loc = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if loc:
                files.add(p.parent / loc)
    return sorted(files)


def onnx_size_bytes(path: str | Path) -> int:
    """Bytes of the ``.onnx`` file plus its external data files."""
    return sum(f.stat().st_size for f in onnx_files(path))


class OrtOutput(OrderedDict):
    """Named outputs as torch tensors; ``out.logits``, ``out["logits"]`` and ``out[0]`` all work."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self.values())


class OrtModel(nn.Module):
    """Run ``path`` (an exported ``.onnx``) with ONNX Runtime; forward takes the torch model's inputs.

    A model exported from a plain module with a single ``output`` returns that tensor directly (as
    the module did); otherwise an :class:`OrtOutput`. ``slimkit_runtime`` names the runtime for
    latency reports; :meth:`size_bytes` is the shipped size (``.onnx`` + external data).
    """

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 allow_spinning: bool = False) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX model {self.path} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads if threads is not None else torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        self.allow_spinning = allow_spinning
        self.threads = opts.intra_op_num_threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise CheckpointError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.slimkit_runtime = f"onnxruntime {ort.__version__} CPUExecutionProvider"

    def size_bytes(self) -> int:
        """Bytes of the ``.onnx`` file plus its external data."""
        return onnx_size_bytes(self.path)

    # -- feeding
    def _named(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            kwargs, args = dict(args[0]), ()
        order = [n for n in self.inputs if n not in kwargs]
        if len(args) > len(order):
            raise DataError(f"{self.path.name}: {len(args)} positional inputs given, the graph takes {list(self.inputs)}")
        named = {**dict(zip(order, args)), **kwargs}
        unknown = [k for k, v in named.items() if k not in self.inputs and v is not None]
        if unknown:
            raise DataError(f"{self.path.name}: inputs {unknown} are not inputs of the graph; it takes {list(self.inputs)}")
        return {k: v for k, v in named.items() if k in self.inputs and v is not None}

    def _defaults(self, named: dict[str, Any]) -> dict[str, Any]:
        """Neutral values for declared inputs the caller left out (mask of ones, ids from 0, empty past)."""
        ref = next((named[k] for k in ("input_ids", "inputs_embeds", "pixel_values") if k in named), None)
        out = dict(named)
        for name, meta in self.inputs.items():
            if name in out:
                continue
            if name.startswith(("past_key_values", "past.")):
                out[name] = self._empty_past(meta, ref)
            elif ref is not None and name in ("attention_mask", "token_type_ids", "position_ids"):
                b, seq = ref.shape[0], ref.shape[1]
                if name == "attention_mask":
                    out[name] = torch.ones(b, seq, dtype=torch.int64)
                elif name == "token_type_ids":
                    out[name] = torch.zeros(b, seq, dtype=torch.int64)
                else:
                    out[name] = torch.arange(seq, dtype=torch.int64).expand(b, seq)
            else:
                raise DataError(f"{self.path.name}: input {name!r} was not given (the graph takes {list(self.inputs)})")
        return out

    def _empty_past(self, meta: Any, ref: Any) -> np.ndarray:
        dims = [d if isinstance(d, int) else None for d in meta.shape]
        batch = ref.shape[0] if ref is not None else 1
        shape = [batch if i == 0 else (0 if i == 2 else d) for i, d in enumerate(dims)]
        if any(d is None for d in shape):
            raise DataError(f"{self.path.name}: cannot build an empty {meta.name} from shape {meta.shape}")
        return np.zeros(shape, dtype=_NP_TYPES.get(meta.type, np.float32))

    def _feed(self, named: dict[str, Any]) -> dict[str, np.ndarray]:
        feed = {}
        for name, value in named.items():
            dtype = _NP_TYPES.get(self.inputs[name].type, np.float32)
            arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            feed[name] = np.ascontiguousarray(arr.astype(dtype, copy=False))
        return feed

    # -- running
    def run_named(self, inputs: Mapping[str, Any]) -> OrtOutput:
        """Run on named inputs (missing optional ones filled in); every output as a torch tensor."""
        arrays = self.session.run(self.output_names, self._feed(self._defaults(dict(inputs))))
        return OrtOutput((n, torch.from_numpy(np.asarray(a))) for n, a in zip(self.output_names, arrays))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("return_dict", "use_cache", "output_hidden_states")}
        out = self.run_named(self._named(args, kwargs))
        if self.output_names == ["output"]:
            return out["output"]
        return out

    def extra_repr(self) -> str:
        return (f"path={str(self.path)!r}, threads={self.threads}, allow_spinning={self.allow_spinning}, "
                f"inputs={list(self.inputs)}, outputs={self.output_names}")


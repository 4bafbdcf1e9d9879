"""OpenVINO / NNCF peer rows for ``benchmarks/deploy.py`` and ``benchmarks/deploy_llm.py``.

NNCF and OpenVINO are not part of ``make setup`` (``make deploy-setup`` installs them with
``--no-deps``; their remaining dependencies are already in the venv). When they are missing, the
benchmarks skip these rows and say so under the table (:func:`missing_reason`).

* :class:`OvModel`: an ONNX file (slimkit's fp32 export) or an ``ov.Model`` compiled for the CPU
  plugin with a fixed thread count and ``INFERENCE_PRECISION_HINT=f32`` (on CPUs with bf16 /
  AMX, OpenVINO otherwise runs fp32 models in bf16 by default), behind the torch model's interface
  (tensor, tuple or dict of tensors in; a tensor or ``.logits`` / ``.last_hidden_state`` out), so
  slimkit's evaluators and ``sk.measure.compare_latency`` time and score it like the other rows.
* :func:`nncf_int8`: ``nncf.quantize`` (post-training static int8: per-channel weights, its default
  activation calibration and fast bias correction) of that ONNX file on the same calibration
  batches slimkit calibrates on.
* :func:`nncf_int4`: ``nncf.compress_weights`` (weight-only, data-free round-to-nearest) to int4.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.export.ort_model import OrtOutput

__all__ = ["missing_reason", "OvModel", "nncf_int8", "nncf_int4", "ov_version"]


def missing_reason() -> str | None:
    """None when ``openvino`` and ``nncf`` import and the CPU plugin is there; else why not."""
    try:
        import openvino as ov
    except ImportError as exc:
        return f"openvino is not installed (`make deploy-setup`): {exc}"
    try:
        import nncf  # noqa: F401
    except ImportError as exc:
        return f"nncf is not installed (`make deploy-setup`): {exc}"
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
        return f"nncf fails to import: {type(exc).__name__}: {exc}"
    if "CPU" not in ov.Core().available_devices:
        return "OpenVINO finds no CPU device"
    return None


def ov_version() -> str:
    import nncf
    import openvino as ov

    return f"openvino {ov.__version__.split('-')[0]}, nncf {nncf.__version__}"


class OvModel(nn.Module):
    """A model compiled by OpenVINO's CPU plugin, called like the torch model it was exported from."""

    def __init__(self, model: Any, threads: int, name: str = "") -> None:
        super().__init__()
        import openvino as ov

        core = ov.Core()
        self.ov_model = core.read_model(str(model)) if isinstance(model, (str, Path)) else model
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "NUM_STREAMS": 1}
        self.compiled = core.compile_model(self.ov_model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        self.input_types = {p.get_any_name(): p.get_element_type().to_dtype() for p in self.compiled.inputs}
        self.output_names = [p.get_any_name() for p in self.compiled.outputs]
        self.slimkit_runtime = f"OpenVINO {ov.__version__.split('-')[0]} CPU plugin"
        self.label = name

    def run_named(self, named: Mapping[str, Any]) -> OrtOutput:
        feed = {}
        for k in self.input_names:
            v = named[k]
            arr = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            feed[k] = np.ascontiguousarray(arr.astype(self.input_types[k], copy=False))
        res = self.request.infer(feed)
        return OrtOutput((n, torch.from_numpy(np.array(res[p]))) for n, p in zip(self.output_names, self.compiled.outputs))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and isinstance(args[0], Mapping):
            kwargs, args = dict(args[0]), ()
        named = {**dict(zip([n for n in self.input_names if n not in kwargs], args)), **kwargs}
        if "token_type_ids" in self.input_names and "token_type_ids" not in named:
            named["token_type_ids"] = torch.zeros_like(named["input_ids"])
        out = self.run_named(named)
        return out["output"] if self.output_names == ["output"] else out


def _feeds(onnx_path: Path, batches: list[Any]) -> list[dict[str, np.ndarray]]:
    """Calibration batches as feed dicts keyed by the ONNX graph's input names."""
    import onnx

    names = [i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input]
    out = []
    for b in batches:
        if isinstance(b, Mapping):
            d = {k: v for k, v in b.items() if k in names}
            if "token_type_ids" in names and "token_type_ids" not in d:
                d["token_type_ids"] = torch.zeros_like(d["input_ids"])
        else:
            d = {names[0]: b}
        out.append({k: v.numpy() for k, v in d.items()})
    return out


def nncf_int8(onnx_path: Path, calib: list[Any], transformer: bool, save_to: Path | None = None) -> Any:
    """``nncf.quantize`` (int8 PTQ, NNCF's defaults; ``model_type=TRANSFORMER`` for encoders) of the
    ONNX file read into OpenVINO, calibrated on ``calib``; returns the ``ov.Model`` (also saved to
    ``save_to`` as OpenVINO IR when given, for its size)."""
    import nncf
    import openvino as ov

    ov_model = ov.Core().read_model(str(onnx_path))
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    feeds = _feeds(onnx_path, calib)
    q = nncf.quantize(ov_model, nncf.Dataset(feeds), **kwargs)
    if save_to is not None:
        ov.save_model(q, str(save_to), compress_to_fp16=False)
    return q


def nncf_int4(onnx_path: Path, group_size: int, save_to: Path | None = None) -> Any:
    """``nncf.compress_weights`` int4 asymmetric (NNCF's default int4 mode), group ``group_size``,
    data-free round-to-nearest, ``ratio=1`` (every MatMul to int4; NNCF keeps the embedding and the
    last MatMul at int8 by default, as its docs describe)."""
    import nncf
    import openvino as ov

    ov_model = ov.Core().read_model(str(onnx_path))
    q = nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=group_size, ratio=1.0)
    if save_to is not None:
        ov.save_model(q, str(save_to), compress_to_fp16=False)
    return q


def ir_bytes(xml: Path) -> int:
    """Bytes of an OpenVINO IR (.xml + .bin)."""
    return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size

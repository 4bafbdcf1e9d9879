"""Static int8 in graph mode: int8 activations chained between layers on fbgemm/x86 kernels.

The per-layer path (:class:`~slimkit.quantize.static_int8.core.Int8StaticConv2d`) quantizes the
input of every conv and dequantizes its output, so a CNN pays two extra passes over every
activation and two rounding errors per layer. Here a traceable region of the model (e.g.
MobileNetV2's ``features``) goes through torch.ao's FX graph mode instead:

1. ``prepare_fx`` fuses Conv2d + BatchNorm2d (+ ReLU) and inserts observers. The observers are
   slimkit's own (:class:`AoObserver` wraps ``minmax`` / ``percentile`` / ``mse``) so recipes keep
   the same ``observer`` / ``weight_observer`` / ``per_channel`` meaning as the per-layer path.
2. calibration batches run through the whole model;
3. an observer whose value feeds only a ReLU / ReLU6 is clamped to the range that activation keeps
   (``[0, 6]`` for ReLU6), which is exact and doubles the resolution that matters — FX does not fuse
   conv + ReLU6, and MobileNetV2's depthwise convs have pre-activation ranges of ±100;
4. ``convert_fx`` lowers to ``quantized::conv2d`` / ``quantized::add`` / ``quantized::linear`` on
   quint8 tensors: the activations stay int8 from the region's input to its output;
5. torch.ao's quantized Conv2d / Linear (whose state holds packed, unpicklable objects) are swapped
   for :class:`QConv2dInt8` / :class:`QLinearInt8`, which keep plain int8 tensors + float scales,
   so ``sk.save`` writes real int8 bytes to safetensors.

``sk.load`` replays the ``static_int8_graph`` edit: it re-runs steps 1, 4 and 5 structurally on the
fresh base model's region (zeros of the recorded input shape as ``prepare_fx``'s example input; no
data is run, the observers hand out placeholders) and then loads the stored tensors (int8 weights,
scales, zero points), so the rebuilt graph and its outputs are identical. No code is stored: the
graph is re-derived from the base architecture and the recorded qconfig, never unpickled.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from slimkit.core.fxtrace import trace_graph
from slimkit.core.inputs import run_with_hooks
from slimkit.io.edits import register_edit_op, register_module_kind, replace_module
from slimkit.quantize.observers import make_observer, qparams
from slimkit.quantize.fbgemm import EMULATED, fbgemm_u8s8_exact
from slimkit.quantize.static_int8.core import _LazyPacked

__all__ = ["AoObserver", "QConv2dInt8", "QLinearInt8", "graph_regions", "prepare_region", "convert_region",
           "clamp_to_activations", "build_region", "plain_state", "conv_bn_pairs", "conv_activation_bounds",
           "region_inputs", "float_modules"]

_RELU_MODULES = {nn.ReLU: (0.0, math.inf), nn.ReLU6: (0.0, 6.0)}
_RELU_FUNCTIONS = {torch.relu: (0.0, math.inf), nn.functional.relu: (0.0, math.inf), nn.functional.relu6: (0.0, 6.0)}


class AoObserver(torch.ao.quantization.observer.ObserverBase):
    """A slimkit observer (``minmax`` | ``percentile`` | ``mse``) behind torch.ao's observer API.

    Activations: asymmetric quint8 per tensor. Weights: symmetric qint8 (grid ±127), per output
    channel when ``axis`` is 0. ``bounds`` clamps the observed range (set for ReLU / ReLU6 inputs).
    """

    def __init__(self, dtype: torch.dtype = torch.quint8, name: str = "minmax", percentile: float = 99.99,
                 axis: int | None = None, **_: Any) -> None:
        super().__init__(dtype=dtype)
        self.symmetric = dtype == torch.qint8
        self.name, self.percentile, self.ch_axis = name, percentile, axis
        if axis is None:
            self.qscheme = torch.per_tensor_symmetric if self.symmetric else torch.per_tensor_affine
        else:
            self.qscheme = torch.per_channel_symmetric
        self.quant_min, self.quant_max = (-128, 127) if self.symmetric else (0, 255)
        self.reduce_range = False
        self.observer = make_observer(name, axis, percentile=percentile, symmetric=self.symmetric)
        self.bounds = (-math.inf, math.inf)
        self.seen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel():
            self.observer.update(x.detach())
            self.seen = True
        return x

    def calculate_qparams(self, **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.seen:  # a structural rebuild (sk.load) runs no data: placeholders, loaded later
            return torch.ones(1), torch.zeros(1, dtype=torch.int64)
        lo, hi = self.observer.range()
        lo, hi = lo.clamp(min=self.bounds[0]), hi.clamp(max=self.bounds[1])
        scale, zero = qparams(lo, hi, bits=8, symmetric=self.symmetric)
        return scale.float(), zero.to(torch.int64)

    def extra_repr(self) -> str:
        return f"{self.name}, dtype={self.dtype}, axis={self.ch_axis}, bounds={self.bounds}"


def _qconfig(observer: str, weight_observer: str, per_channel: bool, percentile: float) -> Any:
    from torch.ao.quantization import QConfig

    return QConfig(activation=AoObserver.with_args(dtype=torch.quint8, name=observer, percentile=percentile),
                   weight=AoObserver.with_args(dtype=torch.qint8, name=weight_observer, percentile=percentile,
                                               axis=0 if per_channel else None))


def _qconfig_mapping(spec: dict[str, Any]) -> Any:
    from torch.ao.quantization import QConfigMapping

    mapping = QConfigMapping().set_global(_qconfig(spec["observer"], spec["weight_observer"], bool(spec["per_channel"]),
                                                   float(spec["percentile"])))
    for name in spec.get("float_layers", []):
        mapping.set_module_name(name, None)
    return mapping


def graph_regions(model: nn.Module, selected: set[str], untraceable: dict[str, str] | None = None) -> list[str]:
    """Names of the largest proper submodules (never the root, which ``sk.load`` replays in place)
    that contain a selected Conv2d, are not single layers, and trace with torch.fx.

    A container that holds a selected conv but does not trace is searched below instead; its name
    and torch.fx's reason go into ``untraceable`` (when given), for the step's report.
    """
    regions: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            inside = {s for s in selected if s == name or s.startswith(name + ".")}
            convs = [s for s in inside if isinstance(model.get_submodule(s), nn.Conv2d)]
            if not convs or not list(child.children()):
                continue
            graph, reason = trace_graph(child)
            if graph is not None:
                regions.append(name)
            else:
                if untraceable is not None:
                    untraceable[name] = reason
                visit(name + ".", child)

    visit("", model)
    return regions


def conv_bn_pairs(model: nn.Module, graph: torch.fx.Graph | None) -> list[tuple[str, str]]:
    """(conv, bn) names where a Conv2d's output feeds only a BatchNorm2d.

    From ``graph`` (the model traced by torch.fx); without one (untraceable model), adjacent
    children of ``nn.Sequential``.
    """
    if graph is None:
        return _sequential_pairs(model)
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(modules.get(src.target), nn.Conv2d) and len(src.users) == 1):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def conv_activation_bounds(model: nn.Module, graph: torch.fx.Graph | None) -> dict[str, tuple[float, float]]:
    """Convs whose output (through an optional BatchNorm) feeds only a ReLU / ReLU6: the range the
    activation keeps. Clamping the conv's int8 output range to it is exact (the activation would
    clamp those values anyway) and doubles the resolution of the part that matters. Needs the
    traced ``graph``; none without one."""
    if graph is None:
        return {}
    modules = dict(model.named_modules())
    bounds = {}
    for node in graph.nodes:
        kind = type(modules.get(node.target)) if node.op == "call_module" else None
        if kind not in _RELU_MODULES or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        src = node.args[0]
        if src.op == "call_module" and isinstance(modules.get(src.target), nn.BatchNorm2d) and len(src.users) == 1:
            src = src.args[0]
        if (isinstance(src, torch.fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), nn.Conv2d)
                and len(src.users) == 1):
            bounds[str(src.target)] = _RELU_MODULES[kind]  # type: ignore[index]
    return bounds


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            kids = list(module.named_children())
            for (a, ma), (b, mb) in zip(kids, kids[1:]):
                if isinstance(ma, nn.Conv2d) and isinstance(mb, nn.BatchNorm2d):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a, prefix + b))
    return pairs


def region_inputs(model: nn.Module, regions: list[str], batch: Any) -> dict[str, tuple[torch.Tensor, ...] | None]:
    """The positional tensor inputs each region receives on one calibration batch (None: not plain tensors)."""
    seen: dict[str, tuple[torch.Tensor, ...] | None] = {}

    def hook(name: str) -> Any:
        def fn(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if name not in seen:
                plain = not kwargs and args and all(isinstance(a, torch.Tensor) for a in args)
                seen[name] = tuple(a.detach() for a in args) if plain else None
        return fn

    run_with_hooks(model, [batch], [model.get_submodule(r).register_forward_pre_hook(hook(r), with_kwargs=True)
                                    for r in regions])
    return seen


def float_modules(region: nn.Module, prefix: str, layers: dict[str, nn.Module] | set[str]) -> list[str]:
    """Region-relative names of the largest submodules holding Conv2d/Linear layers none of which is
    selected: they run in float as a whole (their ReLU6 / add too), e.g. ``ignore: [features.0]``."""
    out: list[str] = []
    for n, m in region.named_modules():
        if not n or any(n.startswith(f + ".") for f in out):
            continue
        weighted = [f"{prefix}.{n}.{c}" if c else f"{prefix}.{n}" for c, sub in m.named_modules()
                    if isinstance(sub, (nn.Conv2d, nn.Linear))]
        if weighted and not any(w in layers for w in weighted):
            out.append(n)
    return out


def prepare_region(region: nn.Module, spec: dict[str, Any], example: tuple[torch.Tensor, ...]) -> torch.fx.GraphModule:
    """Fused (conv+bn+relu) copy of ``region`` with :class:`AoObserver` observers inserted."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_fx(region.eval(), _qconfig_mapping(spec), example)


def _consumer_bounds(node: torch.fx.Node, modules: dict[str, nn.Module]) -> tuple[float, float] | None:
    if node.op == "call_module" and type(modules.get(str(node.target))) in _RELU_MODULES:
        return _RELU_MODULES[type(modules[str(node.target)])]  # type: ignore[index]
    if node.op in ("call_function", "call_method") and node.target in _RELU_FUNCTIONS:
        return _RELU_FUNCTIONS[node.target]  # type: ignore[index]
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return (0.0, math.inf)
    if node.op == "call_function" and node.target is nn.functional.hardtanh and node.args[1:3] == (0.0, 6.0):
        return (0.0, 6.0)
    return None


def clamp_to_activations(prepared: torch.fx.GraphModule) -> int:
    """Clamp each observer whose output feeds only ReLU / ReLU6 to that activation's range; returns
    how many were clamped."""
    modules = dict(prepared.named_modules())
    done = 0
    for node in prepared.graph.nodes:
        obs = modules.get(str(node.target)) if node.op == "call_module" else None
        if not isinstance(obs, AoObserver) or not node.users:
            continue
        bounds = [_consumer_bounds(u, modules) for u in node.users]
        if all(b is not None for b in bounds) and len(set(bounds)) == 1:
            obs.bounds = bounds[0]  # type: ignore[assignment]
            done += 1
    return done


def convert_region(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Lower a calibrated region to quantized kernels, with slimkit int8 layers in place of torch.ao's."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = convert_fx(prepared)
        for name, module in list(gm.named_modules()):
            new = _slimkit_layer(module)
            if new is not None:
                replace_module(gm, name, new)
    return gm


def build_region(region: nn.Module, spec: dict[str, Any]) -> torch.fx.GraphModule:
    """Structural rebuild for ``sk.load``: prepare and convert without data (tensors loaded later)."""
    example = tuple(torch.zeros(*shape) for shape in spec["input_shapes"])
    prepared = prepare_region(region, spec, example)
    return convert_region(prepared)


@register_edit_op("static_int8_graph")
def _replay_graph(model: nn.Module, record: dict[str, Any]) -> None:
    replace_module(model, record["path"], build_region(model.get_submodule(record["path"]), record["spec"]))


# ----------------------------------------------------------------------------- int8 layers on quint8 tensors
def _weight_parts(qweight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if qweight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return qweight.int_repr(), qweight.q_per_channel_scales().float()
    return qweight.int_repr(), torch.tensor([qweight.q_scale()], dtype=torch.float32)


def _make_qweight(weight_int8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    if scale.numel() > 1:
        zeros = torch.zeros(scale.numel(), dtype=torch.int64)
        return torch._make_per_channel_quantized_tensor(weight_int8, scale.double(), zeros, 0)
    return torch._make_per_tensor_quantized_tensor(weight_int8, float(scale[0]), 0)


class _QLayer(_LazyPacked):
    """Shared storage of the quantized layers: int8 weight, float scales, output (scale, zero point)."""

    def _init_storage(self, weight_shape: tuple[int, ...], out: int, per_channel: bool, relu: bool) -> None:
        self.per_channel, self.relu = per_channel, relu
        self.register_buffer("weight_int8", torch.zeros(weight_shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out if per_channel else 1))
        self.register_buffer("output_scale", torch.ones(1))
        self.register_buffer("output_zero_point", torch.zeros(1, dtype=torch.int64))
        self.bias = nn.Parameter(torch.zeros(out), requires_grad=False)

    def _fill(self, qweight: torch.Tensor, bias: torch.Tensor | None, scale: float, zero_point: int) -> None:
        q, s = _weight_parts(qweight)
        self.weight_int8.copy_(q)
        self.weight_scale.copy_(s)
        if bias is not None:
            self.bias.data.copy_(bias.detach().float())
        self.output_scale.fill_(scale)
        self.output_zero_point.fill_(zero_point)

    def slimkit_weights(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight_int8, "bias": self.bias}

    def packed(self) -> Any:
        if self._packed is None:
            with warnings.catch_warnings():  # quantized-tensor constructors: deprecated, still fbgemm's only door
                warnings.simplefilter("ignore", UserWarning)
                self._packed = self._pack(_make_qweight(self.weight_int8, self.weight_scale))
        return self._packed

    def _pack(self, qweight: torch.Tensor) -> Any:  # type: ignore[override]  # pragma: no cover - abstract
        raise NotImplementedError

    kernel_label: str = ""

    @property
    def slimkit_runtime(self) -> str:  # type: ignore[override]
        return self.kernel_label if fbgemm_u8s8_exact() else EMULATED

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_int8.float() * self.weight_scale.reshape(-1, *([1] * (self.weight_int8.dim() - 1)))

    def _emulated(self, qx: torch.Tensor, op: Any) -> torch.Tensor:
        """quint8 in -> the layer's integer math in float32 -> quint8 out (where fbgemm saturates, no VNNI)."""
        y = op(qx.dequantize(), self.dequantized_weight(), self.bias)
        if self.relu:
            y = torch.relu(y)
        return torch.quantize_per_tensor(y, float(self.output_scale), int(self.output_zero_point), torch.quint8)


_CONV_KEYS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")


@register_module_kind("int8_qconv2d")
class QConv2dInt8(_QLayer):
    """``quantized::conv2d`` (``conv2d_relu`` when a ReLU was fused) from quint8 to quint8."""

    kernel_label = "torch int8 (fbgemm/x86 quantized::conv2d, int8 activations chained)"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int], groups: int, per_channel: bool = True,
                 relu: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding, self.dilation = tuple(padding), tuple(dilation)
        self._init_storage((out_channels, in_channels // groups, *self.kernel_size), out_channels, per_channel, relu)

    @classmethod
    def from_ao(cls, conv: nn.Module, relu: bool) -> "QConv2dInt8":
        qweight = conv.weight()
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, qweight.qscheme() != torch.per_tensor_affine, relu)
        layer._fill(qweight, conv.bias(), float(conv.scale), int(conv.zero_point))
        return layer

    def spec(self) -> dict[str, Any]:
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ((k, getattr(self, k)) for k in _CONV_KEYS)}
        return {**out, "per_channel": self.per_channel, "relu": self.relu}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "QConv2dInt8":
        return cls(int(spec["in_channels"]), int(spec["out_channels"]), tuple(spec["kernel_size"]), tuple(spec["stride"]),
                   tuple(spec["padding"]), tuple(spec["dilation"]), int(spec["groups"]), bool(spec["per_channel"]),
                   bool(spec["relu"]))

    def _pack(self, qweight: torch.Tensor) -> Any:
        return torch.ops.quantized.conv2d_prepack(qweight, self.bias.detach().float(), list(self.stride),
                                                  list(self.padding), list(self.dilation), self.groups)

    def forward(self, qx: torch.Tensor) -> torch.Tensor:
        if not fbgemm_u8s8_exact():
            return self._emulated(qx, lambda x, w, b: nn.functional.conv2d(x, w, b, self.stride, self.padding,
                                                                           self.dilation, self.groups))
        op = torch.ops.quantized.conv2d_relu if self.relu else torch.ops.quantized.conv2d
        return op(qx, self.packed(), float(self.output_scale), int(self.output_zero_point))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, per_channel={self.per_channel}, relu={self.relu}")


@register_module_kind("int8_qlinear")
class QLinearInt8(_QLayer):
    """``quantized::linear`` (``linear_relu`` when fused) from quint8 to quint8."""

    kernel_label = "torch int8 (fbgemm quantized::linear, int8 activations chained)"

    def __init__(self, in_features: int, out_features: int, per_channel: bool = True, relu: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_storage((out_features, in_features), out_features, per_channel, relu)

    @classmethod
    def from_ao(cls, linear: nn.Module, relu: bool) -> "QLinearInt8":
        qweight, bias = linear._packed_params._weight_bias()
        layer = cls(linear.in_features, linear.out_features, qweight.qscheme() != torch.per_tensor_affine, relu)
        layer._fill(qweight, bias, float(linear.scale), int(linear.zero_point))
        return layer

    def spec(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "per_channel": self.per_channel,
                "relu": self.relu}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "QLinearInt8":
        return cls(int(spec["in_features"]), int(spec["out_features"]), bool(spec["per_channel"]), bool(spec["relu"]))

    def _pack(self, qweight: torch.Tensor) -> Any:
        return torch.ops.quantized.linear_prepack(qweight, self.bias.detach().float())

    def forward(self, qx: torch.Tensor) -> torch.Tensor:
        if not fbgemm_u8s8_exact():
            return self._emulated(qx, nn.functional.linear)
        op = torch.ops.quantized.linear_relu if self.relu else torch.ops.quantized.linear
        return op(qx, self.packed(), float(self.output_scale), int(self.output_zero_point))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, per_channel={self.per_channel}, "
                f"relu={self.relu}")


def _slimkit_layer(module: nn.Module) -> nn.Module | None:
    aoq = torch.ao.nn.quantized
    aoi = torch.ao.nn.intrinsic.quantized
    if isinstance(module, aoi.ConvReLU2d):
        return QConv2dInt8.from_ao(module, relu=True)
    if type(module) is aoq.Conv2d:
        return QConv2dInt8.from_ao(module, relu=False)
    if isinstance(module, aoi.LinearReLU):
        return QLinearInt8.from_ao(module, relu=True)
    if type(module) is aoq.Linear:
        return QLinearInt8.from_ao(module, relu=False)
    return None


def plain_state(module: nn.Module) -> Iterator[tuple[str, Any]]:
    """State entries that are not plain tensors (quantized tensors, packed params): must be none."""
    for name, value in module.state_dict().items():
        if not isinstance(value, torch.Tensor) or value.is_quantized:
            yield name, value

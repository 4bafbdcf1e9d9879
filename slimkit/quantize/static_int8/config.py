"""Config of ``quantize: {method: static_int8}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_bool, check_choice, check_int, check_range, check_str_list
from slimkit.core.errors import ConfigError
from slimkit.quantize.observers import OBSERVERS

__all__ = ["StaticInt8Config", "STATIC_LAYER_TYPES", "GRAPH_MODES"]

#: layer classes static int8 handles (by class name, as written in recipes)
STATIC_LAYER_TYPES = ("Linear", "Conv2d")
#: ``graph``: auto (FX graph mode for traceable submodules holding a selected conv), on (required), off
GRAPH_MODES = ("auto", "on", "off")


@dataclasses.dataclass
class StaticInt8Config(StepConfig):
    """int8 weights and int8 activations whose ranges are fixed from calibration batches.

    ```yaml
    - quantize: {method: static_int8, observer: percentile, percentile: 99.99,
                 weight_observer: minmax, per_channel: true, ignore: [lm_head]}
    ```
    ``observer`` picks the activation range (``minmax`` | ``percentile`` | ``mse``);
    ``weight_observer`` the weight range (same choices), per output channel or per tensor.
    Linear layers run on fbgemm's ``quantized::linear`` with a calibrated uint8 input range;
    Conv2d layers on fbgemm's ``quantized::conv2d`` with uint8 input and output ranges, after a
    following BatchNorm is folded into them (``fold_bn: true``). Needs ``calib`` data.

    Graph mode (CNNs): with ``graph: auto`` (default) every torch.fx-traceable submodule holding a
    selected Conv2d (e.g. MobileNetV2's ``features``) is quantized as one graph: conv + BN (+ ReLU)
    fused, activations kept quint8 from layer to layer, residual adds on ``quantized::add``, observer
    ranges feeding a ReLU6 clamped to [0, 6]. ``graph: on`` requires such a region, ``off`` keeps
    the per-layer quantize → int8 conv → dequantize path everywhere.

    ```yaml
    - quantize: {method: static_int8, graph: auto, observer: minmax}
    ```

    Sensitive Linear layers can run dynamic int8 instead (one int8 scale per token, computed at
    run time on ``torch._int_mm``): named ones (``keep_dynamic``, module-selection rules) and/or the
    ``auto_keep_dynamic`` layers whose static quantization alone costs the most output SQNR on the
    first ``sensitivity_batches`` calibration batches (measured, one layer at a time).

    ``bias_correction: true`` adds to each per-layer int8 layer's bias the expected output shift
    its int8 weights cause, ``(W - W_q) E[x]`` from the mean calibration input (Nagel et al.,
    "Data-Free Quantization", 2019; NNCF's and AIMET's bias correction): on MobileNetV2 it is what
    makes per-channel int8 weights usable after the BatchNorm fold. Graph-mode regions are not
    corrected (``graph: on`` with it is refused; with ``auto`` the step notes which layers were).

    ```yaml
    - quantize: {method: static_int8, graph: off, bias_correction: true}
    - quantize: {method: static_int8, auto_keep_dynamic: 4}
    - quantize: {method: static_int8, keep_dynamic: ["re:.*output\\.dense$"]}
    ```
    """

    method: str = "static_int8"
    observer: str = "minmax"
    percentile: float = 99.99
    weight_observer: str = "minmax"
    per_channel: bool = True
    layer_types: list[str] = dataclasses.field(default_factory=lambda: list(STATIC_LAYER_TYPES))
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)
    fold_bn: bool = True
    quantize_tied: bool = False
    graph: str = "auto"
    keep_dynamic: list[str] = dataclasses.field(default_factory=list)
    auto_keep_dynamic: int = 0
    sensitivity_batches: int = 2
    bias_correction: bool = False

    def validate(self) -> None:
        check_choice("graph", self.graph, GRAPH_MODES)
        check_bool("bias_correction", self.bias_correction)
        if self.bias_correction and self.graph == "on":
            raise ConfigError("bias_correction = True needs per-layer int8 layers, but graph = 'on' quantizes the "
                              "convs in graph mode without it; valid: graph 'off' or 'auto' with bias_correction")
        check_str_list("keep_dynamic", self.keep_dynamic)
        check_int("auto_keep_dynamic", self.auto_keep_dynamic, 0, 10_000)
        check_int("sensitivity_batches", self.sensitivity_batches, 1, 10_000)
        check_choice("observer", self.observer, OBSERVERS)
        check_choice("weight_observer", self.weight_observer, OBSERVERS)
        check_range("percentile", self.percentile, 90.0, 100.0, lo_open=True)
        check_bool("per_channel", self.per_channel)
        check_bool("fold_bn", self.fold_bn)
        check_bool("quantize_tied", self.quantize_tied)
        for t in check_str_list("layer_types", self.layer_types):
            check_choice("layer_types[]", t, STATIC_LAYER_TYPES)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)

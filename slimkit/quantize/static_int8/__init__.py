"""Static int8 post-training quantization (calibrated activation ranges) of Linear and Conv2d."""
from slimkit.quantize.static_int8.config import StaticInt8Config
from slimkit.quantize.static_int8.core import (FoldedBatchNorm, Int8StaticConv2d, Int8StaticLinear, fold_batchnorm,
                                               quantize_weight)
from slimkit.quantize.static_int8.graph import AoObserver, QConv2dInt8, QLinearInt8

__all__ = ["StaticInt8Config", "Int8StaticLinear", "Int8StaticConv2d", "FoldedBatchNorm", "fold_batchnorm",
           "quantize_weight", "AoObserver", "QConv2dInt8", "QLinearInt8"]

"""SmoothQuant: activation outliers migrated into weights, then W8A8 on torch int8 kernels."""
from slimkit.quantize.smoothquant.config import SmoothQuantConfig
from slimkit.quantize.smoothquant.core import SmoothQuantLinear, smoothing_factors

__all__ = ["SmoothQuantConfig", "SmoothQuantLinear", "smoothing_factors"]

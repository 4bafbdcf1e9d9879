"""int8 dynamic quantization of Linear layers on the fbgemm/x86 int8 kernel."""
from slimkit.quantize.dynamic_int8.config import DynamicInt8Config
from slimkit.quantize.dynamic_int8.core import Int8DynamicLinear, quantize_per_channel

__all__ = ["DynamicInt8Config", "Int8DynamicLinear", "quantize_per_channel"]

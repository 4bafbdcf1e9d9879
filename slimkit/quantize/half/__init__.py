"""fp16 / bf16: the whole model in half precision behind an fp32 interface."""
from slimkit.quantize.half.config import Bf16Config, Fp16Config
from slimkit.quantize.half.core import HALF_DTYPES, cast_floats, cast_model

__all__ = ["Fp16Config", "Bf16Config", "HALF_DTYPES", "cast_model", "cast_floats"]

"""Shared weight-only quantization: group-wise math, packing, the packed layers, block-by-block calibration."""
from slimkit.quantize.weight_only.config import WeightOnlyConfig
from slimkit.quantize.weight_only.core import (
    dequantize_groups, pack_codes, quantize_groups, sqnr_db, unpack_codes,
)
from slimkit.quantize.weight_only.layer import WeightOnlyEmbedding, WeightOnlyLinear

__all__ = ["WeightOnlyConfig", "WeightOnlyLinear", "WeightOnlyEmbedding", "quantize_groups",
           "dequantize_groups", "pack_codes", "unpack_codes", "sqnr_db"]

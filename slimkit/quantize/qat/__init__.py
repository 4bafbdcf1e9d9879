"""Quantization-aware training (fake quantization + straight-through estimator) to stored integers."""
from slimkit.quantize.qat.config import QATConfig
from slimkit.quantize.qat.core import FakeQuantLayer, IntWeightLayer, fake_quant_ste, pack_nibbles, unpack_nibbles

__all__ = ["QATConfig", "FakeQuantLayer", "IntWeightLayer", "fake_quant_ste", "pack_nibbles", "unpack_nibbles"]

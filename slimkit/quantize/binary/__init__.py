"""Binary (1-bit) and ternary (2-bit) weights with per-channel scales, stored packed."""
from slimkit.quantize.binary.config import BinaryConfig, TernaryConfig
from slimkit.quantize.binary.core import LowBitLayer, binarize, pack_codes, ternarize, unpack_codes

__all__ = ["BinaryConfig", "TernaryConfig", "LowBitLayer", "binarize", "ternarize", "pack_codes", "unpack_codes"]

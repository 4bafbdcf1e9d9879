"""Weight-only round-to-nearest quantization (2-8 bits, group-wise, symmetric or asymmetric)."""
from slimkit.quantize.rtn.config import RTNConfig
from slimkit.quantize.rtn.core import rtn_linear

__all__ = ["RTNConfig", "rtn_linear"]

"""Mixed-precision weight-only quantization: per-layer bits from measured sensitivity under a budget."""
from slimkit.quantize.mixed.config import MixedConfig
from slimkit.quantize.mixed.core import FLOAT, layer_bytes, layer_error, upgrade_path

__all__ = ["MixedConfig", "FLOAT", "layer_bytes", "layer_error", "upgrade_path"]

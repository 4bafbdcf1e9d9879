"""AWQ weight-only quantization (activation-aware per-channel scaling, searched on calibration data)."""
from slimkit.quantize.awq.config import AWQConfig
from slimkit.quantize.awq.core import ActivationStats, awq_search

__all__ = ["AWQConfig", "ActivationStats", "awq_search"]

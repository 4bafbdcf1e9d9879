"""GPTQ weight-only quantization (Hessian-based error feedback, act-order, any group size)."""
from slimkit.quantize.gptq.config import GPTQConfig
from slimkit.quantize.gptq.core import HessianAccumulator, gptq_quantize

__all__ = ["GPTQConfig", "HessianAccumulator", "gptq_quantize"]

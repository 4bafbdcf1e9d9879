"""Compress models larger than RAM: block by block from safetensors shards (``sk.compress_stream``)."""
from slimkit.stream.api import DEFAULT_MAX_ACTIVATION_BYTES, StreamResult, compress_stream
from slimkit.stream.steps import STREAMABLE

__all__ = ["compress_stream", "StreamResult", "STREAMABLE", "DEFAULT_MAX_ACTIVATION_BYTES"]

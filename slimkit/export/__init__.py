"""slimkit.export: write compressed models for ONNX Runtime, llama.cpp (GGUF) and plain transformers."""
from __future__ import annotations

from slimkit.export.api import FORMATS, ExportOptions, export, register_exporter

__all__ = ["export", "register_exporter", "ExportOptions", "FORMATS"]

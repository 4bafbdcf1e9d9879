"""Checkpoints: safetensors + ``slimkit.json``, atomic, never pickled."""
from slimkit.io.checkpoint import FORMAT_VERSION, load, read_manifest, save
from slimkit.io.edits import register_edit_op, register_module_kind

__all__ = ["save", "load", "read_manifest", "FORMAT_VERSION", "register_edit_op", "register_module_kind"]

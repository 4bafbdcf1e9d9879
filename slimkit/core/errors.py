"""Typed errors: every error slimkit raises on purpose derives from :class:`SlimkitError`."""
from __future__ import annotations

__all__ = ["SlimkitError", "ConfigError", "UnsupportedModelError", "DataError", "CheckpointError"]


class SlimkitError(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigError(SlimkitError, ValueError):
    """A recipe, step config or argument is invalid (names the field, the value and the valid range)."""


class UnsupportedModelError(SlimkitError):
    """A step cannot handle this model or one of its layers (the layer is named)."""


class DataError(SlimkitError):
    """Data is missing, empty or mis-shaped for what a step or evaluator needs."""


class CheckpointError(SlimkitError):
    """A checkpoint directory is missing, corrupt, truncated or not a slimkit checkpoint."""

"""Search: per-layer level allocation by evolution (``search: {method: evolution}``) and more.

Keep this module minimal and additive: each search family adds its own exports.
"""
from slimkit.search.space import LevelSpace, SpaceOptions, register_space

__all__ = ["LevelSpace", "SpaceOptions", "register_space"]

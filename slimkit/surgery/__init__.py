"""Layer surgery: drop whole blocks, merge layers (BN / linear folding, similar blocks), grow (Net2Net)."""
from slimkit.surgery.blocks import BlockList, find_blocks

__all__ = ["BlockList", "find_blocks"]

"""Cross-layer parameter sharing: groups of same-shape blocks use one set of parameters."""
from slimkit.share.cross_layer.config import CrossLayerShareConfig
from slimkit.share.cross_layer.core import shared_parameters, tie_blocks

__all__ = ["CrossLayerShareConfig", "shared_parameters", "tie_blocks"]

"""Drop whole blocks chosen by block influence (ShortGPT), by measured quality drop, or the last ones."""
from slimkit.surgery.drop_layers.config import DropLayersConfig
from slimkit.surgery.drop_layers.core import block_influence, choose_blocks

__all__ = ["DropLayersConfig", "block_influence", "choose_blocks"]

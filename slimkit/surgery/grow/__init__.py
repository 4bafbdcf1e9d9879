"""Function-preserving growth (Net2Net): wider hidden layers, deeper block stacks."""
from slimkit.surgery.grow.config import GrowConfig
from slimkit.surgery.grow.core import identity_init, widen_pair, widening_map

__all__ = ["GrowConfig", "identity_init", "widen_pair", "widening_map"]

"""EvoPress-style evolutionary search of per-layer levels under the wrapped step's exact budget."""
from slimkit.search.evolution.config import EvolutionSearchConfig

__all__ = ["EvolutionSearchConfig"]

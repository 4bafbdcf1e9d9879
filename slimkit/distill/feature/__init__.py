"""Hidden-state / feature distillation with learned linear projections and a layer map."""
from slimkit.distill.feature.config import FeatureKDConfig
from slimkit.distill.feature.core import default_feature_map, feature_spec, pair_layers

__all__ = ["FeatureKDConfig", "default_feature_map", "feature_spec", "pair_layers"]

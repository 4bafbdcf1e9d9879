"""Knowledge distillation (step ``distill``): logit KD, feature KD with projections, attention-map
KD; students built from the teacher; healing a compressed model from its original."""
from slimkit.distill.attention import AttentionKDConfig
from slimkit.distill.engine import DistillObjective, LossSpec
from slimkit.distill.feature import FeatureKDConfig
from slimkit.distill.logit import LogitKDConfig
from slimkit.distill.students import build_student, every_kth, keep_blocks, shrink_width

__all__ = [
    "AttentionKDConfig",
    "DistillObjective",
    "FeatureKDConfig",
    "LogitKDConfig",
    "LossSpec",
    "build_student",
    "every_kth",
    "keep_blocks",
    "shrink_width",
]

"""Which student feature learns which teacher feature: the default block pairing and the checks."""
from __future__ import annotations

from torch import nn

from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.distill.engine import LossSpec
from slimkit.distill.feature.config import FeatureKDConfig
from slimkit.distill.run import check_module_names

__all__ = ["pair_layers", "default_feature_map", "feature_spec"]


def pair_layers(n_student: int, n_teacher: int) -> dict[int, int]:
    """Student layer ``i`` -> teacher layer ``round((i + 1) * T / S) - 1`` (last aligned with last)."""
    return {i: max(0, round((i + 1) * n_teacher / n_student) - 1) for i in range(n_student)}


def default_feature_map(student: nn.Module, teacher: nn.Module) -> dict[str, str]:
    """Pair the outputs of the two models' block stacks (HF decoder/encoder layers, CNN stages)."""
    from slimkit.surgery.blocks import find_blocks

    try:
        s, t = find_blocks(student), find_blocks(teacher)
    except UnsupportedModelError as exc:
        raise ConfigError(f"layer_map is needed: {exc}") from None
    return {f"{s.path}.{i}": f"{t.path}.{j}" for i, j in pair_layers(len(s), len(t)).items()}


def feature_spec(cfg: FeatureKDConfig, student: nn.Module, teacher: nn.Module) -> LossSpec:
    """The objective of ``method: feature`` (raises on a ``layer_map`` naming unknown modules)."""
    fmap = dict(cfg.layer_map) if cfg.layer_map is not None else default_feature_map(student, teacher)
    check_module_names(student, list(fmap), "student")
    check_module_names(teacher, list(fmap.values()), "teacher")
    return LossSpec(temperature=cfg.temperature, alpha=cfg.alpha, logit_weight=cfg.logit_weight,
                    feature_map=fmap, feature_weight=cfg.feature_weight, projection=cfg.projection)

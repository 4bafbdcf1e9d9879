"""Truncated-SVD factorization of Linear layers into two thinner Linear layers."""
from slimkit.lowrank.svd.config import LowRankSVDConfig
from slimkit.lowrank.svd.core import LowRankLinear, choose_rank, factorize

__all__ = ["LowRankSVDConfig", "LowRankLinear", "choose_rank", "factorize"]

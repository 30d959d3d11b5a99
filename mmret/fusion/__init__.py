"""Fusion of a reference image and a modification text into a composed query feature
(docs/methods.md §6): ``create_fusion("sum" | "combiner", embed_dim, **options)``.

Inputs are the towers' RAW reference-image and text features, FloatTensor[B, d] each; the
output is FloatTensor[B, d], L2-normalised.
"""

from mmret.fusion import combiner, sum_fusion  # noqa: F401  (registers the fusions)
from mmret.fusion.base import FUSIONS, Fusion, create_fusion, list_fusions, register_fusion
from mmret.fusion.combiner import CombinerFusion
from mmret.fusion.sum_fusion import SumFusion

__all__ = [
    "FUSIONS",
    "CombinerFusion",
    "Fusion",
    "SumFusion",
    "create_fusion",
    "list_fusions",
    "register_fusion",
]

"""Sentence-embedding objectives (docs/methods.md §9–§10).

Every objective here takes the two views of a batch of sentences as keyword tensors:

- ``anchor_features`` (N, d): view 0 (the sentence itself), raw pooled / head outputs;
- ``positive_features`` (N, d): view 1 (dropout copy, or the positive sentence); row i is
  the positive of anchor i;
- ``negative_features`` (M, d), optional: extra candidate columns (SimCSE hard
  negatives, usually M = N); used by the contrastive losses, ignored by the paradigm and
  non-contrastive ones (their reference setting has none).

Features are L2-normalised inside. ``hierarchical_triplet`` also takes
``level_features`` (N, K, d) and an optional ``level_mask`` (N,).

Importing this package registers ``infonce``, ``arccon``, ``mpt``, ``met``, ``mat``,
``gradient_paradigm``, ``mhe``, ``mhs``, ``vicreg_surrogate``, ``barlow_twins_surrogate``
and ``hierarchical_triplet``.
"""

from mmret.objectives.text import contrastive, hierarchical, non_contrastive, paradigm  # noqa: F401
from mmret.objectives.text.contrastive import (
    ArcConObjective,
    InfoNCEObjective,
    MATObjective,
    METObjective,
    MPTObjective,
)
from mmret.objectives.text.hierarchical import HierarchicalTripletObjective
from mmret.objectives.text.non_contrastive import (
    BarlowTwinsSurrogateObjective,
    MHEObjective,
    MHSObjective,
    VICRegSurrogateObjective,
)
from mmret.objectives.text.paradigm import GradientParadigmObjective

__all__ = [
    "ArcConObjective",
    "BarlowTwinsSurrogateObjective",
    "GradientParadigmObjective",
    "HierarchicalTripletObjective",
    "InfoNCEObjective",
    "MATObjective",
    "METObjective",
    "MHEObjective",
    "MHSObjective",
    "MPTObjective",
    "VICRegSurrogateObjective",
]

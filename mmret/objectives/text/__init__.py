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
and ``hierarchical_triplet``, one module each (named after the objective;
``gradient_paradigm`` in ``paradigm.py``, ``hierarchical_triplet`` in ``hierarchical.py``);
their shared bases are in :mod:`mmret.objectives.text.base`.
"""

from mmret.objectives.text.arccon import ArcConObjective
from mmret.objectives.text.barlow_twins_surrogate import BarlowTwinsSurrogateObjective
from mmret.objectives.text.hierarchical import HierarchicalTripletObjective
from mmret.objectives.text.infonce import InfoNCEObjective
from mmret.objectives.text.mat import MATObjective
from mmret.objectives.text.met import METObjective
from mmret.objectives.text.mhe import MHEObjective
from mmret.objectives.text.mhs import MHSObjective
from mmret.objectives.text.mpt import MPTObjective
from mmret.objectives.text.paradigm import GradientParadigmObjective
from mmret.objectives.text.vicreg_surrogate import VICRegSurrogateObjective

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

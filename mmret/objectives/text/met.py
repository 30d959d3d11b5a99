"""Margin Euclidean triplet, MET (docs/methods.md §9)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmret.objectives.base import register_objective
from mmret.objectives.text.base import TripletObjective
from mmret.objectives.text.common import hardest


@register_objective("met")
class METObjective(TripletObjective):
    """Margin Euclidean triplet (MET) on the hardest negative.

    Formula:
        ``d_ij = √max(2 − 2 s_ij, 1e-4)`` with ``S = cos(anchor, [positive; negative])``,
        ``L = mean_i ReLU(d_ii − min_{j≠i} d_ij + m)`` (``"column"``: the same on ``Sᵀ``).

    Inputs:
        ``anchor_features`` (N, d), ``positive_features`` (N, d), optional
        ``negative_features`` (M, d) (row mode only); normalised inside.

    Returns:
        ``{"met_loss": L}`` (times ``weight``).

    Defaults:
        ``margin`` m = 0.45, ``hardest_negative="row"``, ``weight`` = 1.

    Paper:
        The unified gradient paradigm of contrastive sentence embeddings (ACL 2024, code
        ``BDBC-KG-NLP/UnderstandingCSE``).

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> anchors = torch.eye(4)
        >>> out = create_objective("met")(anchor_features=anchors, positive_features=anchors)
        >>> float(out["met_loss"])  # d_ii = 0.01, nearest negative √2: hinge inactive
        0.0
    """

    def __init__(self, weight: float = 1.0, margin: float = 0.45, hardest_negative: str = "row"):
        super().__init__(weight, margin, hardest_negative)

    def triplet_loss(self, sim: torch.Tensor) -> torch.Tensor:
        dist = torch.sqrt(torch.clamp(2 - 2 * sim, min=1e-4))
        return F.relu(dist.diagonal() - hardest(dist, largest=False) + self.margin).mean()

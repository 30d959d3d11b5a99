"""Margin angular triplet, MAT (docs/methods.md §9)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmret.objectives.base import register_objective
from mmret.objectives.text.base import TripletObjective
from mmret.objectives.text.common import ACOS_EPS, hardest


@register_objective("mat")
class MATObjective(TripletObjective):
    """Margin angular triplet (MAT) on the hardest negative (the reference's analysis loss).

    Formula:
        ``θ_ij = arccos s_ij`` (``s`` clamped to ``[-1 + 1e-6, 1 - 1e-6]``),
        ``L = mean_i ReLU(θ_ii − min_{j≠i} θ_ij + m·π)`` (``"column"``: on ``Sᵀ``).

    Inputs:
        ``anchor_features`` (N, d), ``positive_features`` (N, d), optional
        ``negative_features`` (M, d) (row mode only); normalised inside.

    Returns:
        ``{"mat_loss": L}`` (times ``weight``).

    Defaults:
        ``margin`` m = 0.15 (times π), ``hardest_negative="row"``, ``weight`` = 1.

    Paper:
        The unified gradient paradigm of contrastive sentence embeddings (ACL 2024, code
        ``BDBC-KG-NLP/UnderstandingCSE``), where MAT appears in the analysis only.

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> anchors = torch.eye(4)
        >>> out = create_objective("mat")(anchor_features=anchors, positive_features=anchors)
        >>> float(out["mat_loss"])  # θ_ii ≈ 0, nearest negative at π/2 > 0.15π
        0.0
    """

    def __init__(self, weight: float = 1.0, margin: float = 0.15, hardest_negative: str = "row"):
        super().__init__(weight, margin, hardest_negative)

    def triplet_loss(self, sim: torch.Tensor) -> torch.Tensor:
        theta = torch.acos(sim.clamp(-1 + ACOS_EPS, 1 - ACOS_EPS))
        return F.relu(
            theta.diagonal() - hardest(theta, largest=False) + self.margin * math.pi
        ).mean()

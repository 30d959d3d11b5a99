"""Margin product triplet, MPT (docs/methods.md §9)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmret.objectives.base import register_objective
from mmret.objectives.text.base import TripletObjective
from mmret.objectives.text.common import hardest


@register_objective("mpt")
class MPTObjective(TripletObjective):
    """Margin product triplet (MPT) on the hardest negative.

    Formula:
        ``S = cos(anchor, [positive; negative])``,
        ``L = mean_i ReLU(max_{j≠i} s_ij − s_ii + m)`` (``hardest_negative="row"``); with
        ``"column"`` the hardest negative of positive i is an anchor: the same on ``Sᵀ``.

    Inputs:
        ``anchor_features`` (N, d), ``positive_features`` (N, d), optional
        ``negative_features`` (M, d) (row mode only); normalised inside.

    Returns:
        ``{"mpt_loss": L}`` (times ``weight``).

    Defaults:
        ``margin`` m = 0.23, ``hardest_negative="row"``, ``weight`` = 1.

    Paper:
        The unified gradient paradigm of contrastive sentence embeddings (ACL 2024, code
        ``BDBC-KG-NLP/UnderstandingCSE``); ``"column"`` is its ICLR 2023 predecessor's
        (gradient dissipation, ``BDBC-KG-NLP/ICLR2023_Gradient-Dissipation``).

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> anchors = torch.eye(4)
        >>> out = create_objective("mpt")(anchor_features=anchors, positive_features=anchors)
        >>> float(out["mpt_loss"])  # positives at 1, negatives at 0: margin 1 > 0.23
        0.0
    """

    def __init__(self, weight: float = 1.0, margin: float = 0.23, hardest_negative: str = "row"):
        super().__init__(weight, margin, hardest_negative)

    def triplet_loss(self, sim: torch.Tensor) -> torch.Tensor:
        return F.relu(hardest(sim, largest=True) - sim.diagonal() + self.margin).mean()

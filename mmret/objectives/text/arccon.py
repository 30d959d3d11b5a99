"""ArcCon, the angular-margin contrastive loss (docs/methods.md §9)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from mmret.objectives.base import register_objective
from mmret.objectives.text.base import (
    PairObjective,
    check_positive,
)
from mmret.objectives.text.common import ACOS_EPS, positive_mask


@register_objective("arccon")
class ArcConObjective(PairObjective):
    """ArcCon (ArcCSE's angular-margin contrastive loss), one direction.

    Formula:
        ``S = cos(anchor, [positive; negative])``; the positive logit becomes
        ``cos(θ_ii + u)``, ``θ_ii = arccos s_ii`` (``s_ii`` clamped to
        ``[-1 + 1e-6, 1 - 1e-6]`` before ``arccos``); ``L = CE(S'/τ, y)``, ``y_i = i``.

    Inputs:
        ``anchor_features`` (N, d), ``positive_features`` (N, d), optional
        ``negative_features`` (M, d); raw features, normalised inside.

    Returns:
        ``{"arccon_loss": L}`` (times ``weight``).

    Defaults:
        ``temperature`` τ = 0.05, ``margin_degrees`` u = 10° (π/18), ``weight`` = 1.

    Paper:
        Zhang et al., "A Contrastive Framework for Learning Sentence Representations from
        Pairwise and Triple-wise Perspective in Angular Space" (ACL 2022); defaults as in
        the ACL 2024 gradient-paradigm study (``BDBC-KG-NLP/UnderstandingCSE``).

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> anchors = torch.randn(8, 16)
        >>> arccon = create_objective("arccon", margin_degrees=10.0)
        >>> sorted(arccon(anchor_features=anchors, positive_features=anchors + 0.01))
        ['arccon_loss']
    """

    def __init__(
        self, weight: float = 1.0, temperature: float = 0.05, margin_degrees: float = 10.0
    ) -> None:
        super().__init__(weight)
        self.temperature = check_positive("arccon", "temperature", temperature)
        self.margin = math.radians(margin_degrees)

    def compute(
        self,
        anchor_features: torch.Tensor,
        positive_features: torch.Tensor,
        negative_features: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        sim = self._similarity(anchor_features, positive_features, negative_features)
        theta = torch.acos(sim.diagonal().clamp(-1 + ACOS_EPS, 1 - ACOS_EPS))
        logits = torch.where(positive_mask(sim), torch.cos(theta + self.margin)[:, None], sim)
        labels = torch.arange(sim.shape[0], device=sim.device)
        return {"arccon_loss": F.cross_entropy(logits / self.temperature, labels)}

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, temperature={self.temperature}, "
            f"margin_degrees={math.degrees(self.margin):.4g}"
        )

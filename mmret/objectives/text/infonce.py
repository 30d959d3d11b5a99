"""SimCSE InfoNCE (docs/methods.md §9)."""

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


@register_objective("infonce")
class InfoNCEObjective(PairObjective):
    """SimCSE's InfoNCE, one direction (anchors as rows).

    Formula:
        ``S = cos(anchor, [positive; negative])`` (N × (N+M)),
        ``L = CE(S/τ, y) = -(1/N) Σ_i log softmax(S_i/τ)_i``, ``y_i = i``.

    Inputs:
        ``anchor_features`` (N, d), ``positive_features`` (N, d) (row i is anchor i's
        positive), optional ``negative_features`` (M, d) hard negatives (extra columns);
        raw features, normalised inside.

    Returns:
        ``{"infonce_loss": L}`` (times ``weight``).

    Defaults:
        ``temperature`` τ = 0.05 (fixed, the reference's), ``weight`` = 1.

    Paper:
        Gao, Yao, Chen, "SimCSE: Simple Contrastive Learning of Sentence Embeddings"
        (EMNLP 2021); the unified-gradient-paradigm study (ACL 2024, code
        ``BDBC-KG-NLP/UnderstandingCSE``) uses it as its base loss.

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> anchors = torch.eye(8, 16)  # orthogonal rows: every negative at cos 0
        >>> out = create_objective("infonce")(anchor_features=anchors,
        ...                                   positive_features=anchors)
        >>> sorted(out), bool(out["infonce_loss"] < 1e-6)  # log(1 + 7 e^{-1/τ})
        (['infonce_loss'], True)
    """

    def __init__(self, weight: float = 1.0, temperature: float = 0.05) -> None:
        super().__init__(weight)
        self.temperature = check_positive("infonce", "temperature", temperature)

    def compute(
        self,
        anchor_features: torch.Tensor,
        positive_features: torch.Tensor,
        negative_features: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        sim = self._similarity(anchor_features, positive_features, negative_features)
        labels = torch.arange(sim.shape[0], device=sim.device)
        return {"infonce_loss": F.cross_entropy(sim / self.temperature, labels)}

    def chance_loss(
        self, positive_features: torch.Tensor | None = None,
        negative_features: torch.Tensor | None = None, **_: Any,
    ) -> float | None:
        """``weight · ln(N + M)``: all scores equal over the N positives and M negatives."""
        if positive_features is None:
            return None
        candidates = positive_features.shape[0] + (
            negative_features.shape[0] if negative_features is not None else 0)
        return self.weight * math.log(max(candidates, 1))

    def extra_repr(self) -> str:
        return f"weight={self.weight}, temperature={self.temperature}"

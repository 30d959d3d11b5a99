"""Contrastive sentence-embedding losses: InfoNCE, ArcCon, MPT, MET, MAT (docs/methods.md §9).

All work on ``S = cos(anchor, [positive; negative])`` (N, N+M); ``s_ii`` is the positive of
row i and every column ``j ≠ i`` one of its negatives (in-batch positives of the other
rows, then the optional hard negatives). Defaults are the reference's: InfoNCE and
ArcCon τ = 0.05, ArcCon u = 10°, MPT m = 0.23, MET m = 0.45, MAT m = 0.15.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from mmret.objectives.base import Objective, register_objective
from mmret.objectives.text.common import (
    ACOS_EPS,
    candidate_similarity,
    check_views,
    hardest,
    positive_mask,
)

HARDEST_MODES = ("row", "column")


class _PairObjective(Objective):
    requires = ("anchor_features", "positive_features")

    def _similarity(
        self,
        anchor_features: torch.Tensor,
        positive_features: torch.Tensor,
        negative_features: torch.Tensor | None,
    ) -> torch.Tensor:
        check_views(self.name, anchor_features, positive_features, negative_features)
        return candidate_similarity(anchor_features, positive_features, negative_features)


def _check_positive(name: str, field: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name}: {field} must be > 0, got {value}")
    return float(value)


@register_objective("infonce")
class InfoNCEObjective(_PairObjective):
    """SimCSE InfoNCE: ``L = CE(S/τ, y)``, ``y_i = i`` (one direction, anchors as rows).

    With ``negative_features`` the candidates are [positives; hard negatives] (N × (N+M)).
    Returns ``{"infonce_loss"}``.
    """

    def __init__(self, weight: float = 1.0, temperature: float = 0.05) -> None:
        super().__init__(weight)
        self.temperature = _check_positive("infonce", "temperature", temperature)

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

    def extra_repr(self) -> str:
        return f"weight={self.weight}, temperature={self.temperature}"


@register_objective("arccon")
class ArcConObjective(_PairObjective):
    """ArcCon: the positive logit becomes ``cos(θ_ii + u)``, ``θ_ii = arccos s_ii``; then
    ``L = CE(S'/τ, y)``. ``margin_degrees`` is u (10° = π/18 by default).

    ``s_ii`` is clamped to ``[-1 + 1e-6, 1 - 1e-6]`` before ``arccos``. Returns
    ``{"arccon_loss"}``.
    """

    def __init__(
        self, weight: float = 1.0, temperature: float = 0.05, margin_degrees: float = 10.0
    ) -> None:
        super().__init__(weight)
        self.temperature = _check_positive("arccon", "temperature", temperature)
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


class _TripletObjective(_PairObjective):
    """Shared hardest-negative logic of MPT/MET/MAT.

    ``hardest_negative="row"`` (UnderstandingCSE): anchor i's hardest negative among all
    candidate columns ``j ≠ i``. ``"column"`` (the ICLR 2023 predecessor, §9): for
    positive i, the hardest *anchor* ``k ≠ i`` (square batches only, no hard negatives).
    """

    def __init__(self, weight: float, margin: float, hardest_negative: str) -> None:
        super().__init__(weight)
        if hardest_negative not in HARDEST_MODES:
            raise ValueError(
                f"{self.name}: hardest_negative must be one of {HARDEST_MODES}, "
                f"got {hardest_negative!r}"
            )
        self.margin = float(margin)
        self.hardest_negative = hardest_negative

    def triplet_loss(self, sim: torch.Tensor) -> torch.Tensor:
        """The loss on the oriented similarity matrix (positives on the diagonal)."""
        raise NotImplementedError

    def compute(
        self,
        anchor_features: torch.Tensor,
        positive_features: torch.Tensor,
        negative_features: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        sim = self._oriented(anchor_features, positive_features, negative_features)
        return {f"{self.name}_loss": self.triplet_loss(sim)}

    def _oriented(
        self,
        anchor_features: torch.Tensor,
        positive_features: torch.Tensor,
        negative_features: torch.Tensor | None,
    ) -> torch.Tensor:
        sim = self._similarity(anchor_features, positive_features, negative_features)
        if self.hardest_negative == "row":
            return sim
        if negative_features is not None:
            raise ValueError(
                f"{self.name}: hardest_negative='column' takes no negative_features "
                "(the column-wise hardest negative is an anchor)"
            )
        return sim.T

    def extra_repr(self) -> str:
        return f"weight={self.weight}, margin={self.margin}, hardest_negative={self.hardest_negative!r}"


@register_objective("mpt")
class MPTObjective(_TripletObjective):
    """Margin product triplet: ``L = mean_i ReLU(max_{j≠i} s_ij − s_ii + m)``, m = 0.23.

    Returns ``{"mpt_loss"}``.
    """

    def __init__(self, weight: float = 1.0, margin: float = 0.23, hardest_negative: str = "row"):
        super().__init__(weight, margin, hardest_negative)

    def triplet_loss(self, sim: torch.Tensor) -> torch.Tensor:
        return F.relu(hardest(sim, largest=True) - sim.diagonal() + self.margin).mean()


@register_objective("met")
class METObjective(_TripletObjective):
    """Margin Euclidean triplet: ``d_ij = √max(2 − 2 s_ij, 1e-4)``,
    ``L = mean_i ReLU(d_ii − min_{j≠i} d_ij + m)``, m = 0.45. Returns ``{"met_loss"}``."""

    def __init__(self, weight: float = 1.0, margin: float = 0.45, hardest_negative: str = "row"):
        super().__init__(weight, margin, hardest_negative)

    def triplet_loss(self, sim: torch.Tensor) -> torch.Tensor:
        dist = torch.sqrt(torch.clamp(2 - 2 * sim, min=1e-4))
        return F.relu(dist.diagonal() - hardest(dist, largest=False) + self.margin).mean()


@register_objective("mat")
class MATObjective(_TripletObjective):
    """Margin angular triplet: ``θ_ij = arccos s_ij``,
    ``L = mean_i ReLU(θ_ii − min_{j≠i} θ_ij + m·π)``, m = 0.15 (the reference uses it in
    the analysis only). Returns ``{"mat_loss"}``."""

    def __init__(self, weight: float = 1.0, margin: float = 0.15, hardest_negative: str = "row"):
        super().__init__(weight, margin, hardest_negative)

    def triplet_loss(self, sim: torch.Tensor) -> torch.Tensor:
        theta = torch.acos(sim.clamp(-1 + ACOS_EPS, 1 - ACOS_EPS))
        return F.relu(
            theta.diagonal() - hardest(theta, largest=False) + self.margin * math.pi
        ).mean()

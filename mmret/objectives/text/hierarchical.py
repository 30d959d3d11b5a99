"""NGCSE's hierarchical triplet objective (docs/methods.md §10).

``L = InfoNCE(anchor, [positive; negative]) + β · L_level`` with the level term on the rows
that carry generated levels (the reference's ``aigen`` rows)::

    σ_ik = cos(anchor_i, level_ik),                       k = 0 … K−1 (key order 5, 4, 3, …)
    L_level = (1/(K−1)) Σ_{k=0}^{K−2} mean_{i: mask_i} ReLU(σ_{i,k+1} − σ_ik + m_k)

``m_k = margins[min(k, len(margins) − 1)]`` (the last margin repeats). For STS_HT (levels
"5", "4", "3"): ``½[ReLU(σ₄ − σ₅ + m₁) + ReLU(σ₃ − σ₄ + m₂)]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mmret.objectives.base import register_objective
from mmret.objectives.text.infonce import InfoNCEObjective


def level_triplet_loss(
    anchor: torch.Tensor,
    levels: torch.Tensor,
    margins: Sequence[float],
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L_level`` above. ``anchor`` (N, d), ``levels`` (N, K, d) with K ≥ 2, ``mask`` (N,)
    bool (default all rows). No selected row gives an exact (attached) zero."""
    if levels.dim() != 3 or levels.shape[0] != anchor.shape[0] or levels.shape[2] != anchor.shape[1]:
        raise ValueError(
            f"hierarchical_triplet: level_features {tuple(levels.shape)} must be (N, K, d) = "
            f"({anchor.shape[0]}, K, {anchor.shape[1]}), levels in key order 5, 4, 3, …"
        )
    if levels.shape[1] < 2:
        raise ValueError(
            f"hierarchical_triplet: level_features needs K >= 2 levels, got {levels.shape[1]}"
        )
    if not margins:
        raise ValueError("hierarchical_triplet: margins must hold at least one value")
    sigma = (F.normalize(anchor, dim=-1)[:, None, :] * F.normalize(levels, dim=-1)).sum(-1)
    if mask is not None:
        if mask.shape != (anchor.shape[0],) or mask.dtype != torch.bool:
            raise ValueError(
                f"hierarchical_triplet: level_mask must be a bool tensor of shape "
                f"({anchor.shape[0]},), got {mask.dtype} {tuple(mask.shape)}"
            )
        if not bool(mask.any()):
            return sigma.sum() * 0.0
        sigma = sigma[mask]
    k = sigma.shape[1]
    m = torch.tensor(
        [margins[min(i, len(margins) - 1)] for i in range(k - 1)],
        dtype=sigma.dtype,
        device=sigma.device,
    )
    return F.relu(sigma[:, 1:] - sigma[:, :-1] + m).mean(dim=0).mean()


@register_objective("hierarchical_triplet")
class HierarchicalTripletObjective(InfoNCEObjective):
    """NGCSE's objective: InfoNCE + β × the level-margin (hierarchical) triplet term.

    Formula:
        ``L = InfoNCE(anchor, [positive; negative]) + β · L_level`` with
        ``σ_ik = cos(anchor_i, level_ik)`` and
        ``L_level = (1/(K−1)) Σ_{k=0}^{K−2} mean_{i: mask_i} ReLU(σ_{i,k+1} − σ_ik + m_k)``,
        ``m_k = margins[min(k, len(margins) − 1)]``.

    Inputs:
        ``anchor_features`` (N, d), ``positive_features`` (N, d), optional
        ``negative_features`` (M, d) (extra InfoNCE columns), ``level_features``
        (N, K, d): for row i its K level sentences in key order ("5", "4", "3", …), and
        optional ``level_mask`` (N,) bool marking the rows that have levels (rows outside
        it may hold any finite values).

    Returns:
        ``{"infonce_loss", "level_triplet_loss"}`` (the latter already × β).

    Defaults:
        τ = 0.05, β = 1, margins (5e-3, 5e-2) (Wiki.STS_HT; NLI.STS_HT uses (5e-3, 1e-1)).

    Paper:
        NGCSE, the RFD / FDI study with the hierarchical triplet loss (AAAI 2024, code
        ``BDBC-KG-NLP/NGCSE``).

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> anchors = torch.randn(4, 8)
        >>> levels = anchors[:, None, :] + torch.tensor([0.0, 0.5, 1.0])[None, :, None]
        >>> out = create_objective("hierarchical_triplet")(
        ...     anchor_features=anchors, positive_features=anchors, level_features=levels)
        >>> sorted(out)
        ['infonce_loss', 'level_triplet_loss']
    """

    requires = ("anchor_features", "positive_features", "level_features")

    def __init__(
        self,
        weight: float = 1.0,
        temperature: float = 0.05,
        beta: float = 1.0,
        margins: Sequence[float] = (5e-3, 5e-2),
    ) -> None:
        super().__init__(weight, temperature)
        self.beta = float(beta)
        self.margins = tuple(float(m) for m in margins)
        if not self.margins:
            raise ValueError("hierarchical_triplet: margins must hold at least one value")

    def compute(
        self,
        anchor_features: torch.Tensor,
        positive_features: torch.Tensor,
        level_features: torch.Tensor,
        negative_features: torch.Tensor | None = None,
        level_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        losses = super().compute(anchor_features, positive_features, negative_features)
        level = level_triplet_loss(anchor_features, level_features, self.margins, level_mask)
        losses["level_triplet_loss"] = self.beta * level
        return losses

    def chance_loss(self, **inputs: Any) -> float | None:
        """Not declared: the level term at collapse depends on the margins' layout."""
        return None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta}, margins={self.margins}"

"""Gradient-equivalent surrogate of VICReg (docs/methods.md §9)."""

from __future__ import annotations

import torch

from mmret.objectives.base import register_objective
from mmret.objectives.text.base import CovarianceSurrogateObjective


@register_objective("vicreg_surrogate")
class VICRegSurrogateObjective(CovarianceSurrogateObjective):
    """Gradient-equivalent surrogate of VICReg's invariance + covariance terms (not VICReg).

    Formula:
        One direction (u1, u2) of the normalised views (B rows):
        ``P = u1 · sg(u1)ᵀ``, ``neg_i = Σ_j G_ij P_ij``; ``G = 2 sg(K) / B²`` (``w`` off)
        or ``G_ij = E_ij / Σ_{k≠l} E_kl``, ``E = exp(K/τ)`` (or ``max(K, 1e-4)^power``)
        (``w`` on), with ``K = u1 u1ᵀ`` (the anchor view's own Gram matrix, detached);
        ``pos_i = −(2/B) u1_i · sg(u2_i)`` without ``r``, with ``r``
        ``pos_i = λ · ratio · (Σ_{j≠i} G_ij) · (−u1_i·u2_i)``; direction loss
        ``Σ_i (pos_i + λ neg_i)``, summed over (view0, view1) and (view1, view0).

    Inputs:
        ``anchor_features`` (B, d) and ``positive_features`` (B, d), the two views;
        ``negative_features`` is not used.

    Returns:
        ``{"vicreg_positive_loss", "vicreg_negative_loss"}`` (the latter includes λ).

    Defaults:
        ``lam`` λ = 30, ``margin`` m = 0.30, ``temperature`` τ = 0.05, ``ratio`` 1,
        ``gd = w = r = False``, ``power`` None.

    Paper:
        The unified gradient paradigm of contrastive sentence embeddings (ACL 2024, code
        ``BDBC-KG-NLP/UnderstandingCSE``); VICReg: Bardes, Ponce, LeCun (ICLR 2022).

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> views = torch.randn(8, 16)
        >>> vicreg = create_objective("vicreg_surrogate", w=True, temperature=0.05)
        >>> sorted(vicreg(anchor_features=views, positive_features=views + 0.1))
        ['vicreg_negative_loss', 'vicreg_positive_loss']
    """

    default_lam = 30.0
    prefix = "vicreg"

    def gram(self, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        return u1 @ u1.T

    def plain_positive(self, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        return -(2 / u1.shape[0]) * (u1 * u2.detach()).sum(dim=1)

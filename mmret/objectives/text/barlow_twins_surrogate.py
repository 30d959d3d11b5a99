"""Gradient-equivalent surrogate of Barlow Twins (docs/methods.md §9)."""

from __future__ import annotations

import torch

from mmret.objectives.base import register_objective
from mmret.objectives.text.base import CovarianceSurrogateObjective


@register_objective("barlow_twins_surrogate")
class BarlowTwinsSurrogateObjective(CovarianceSurrogateObjective):
    """Gradient-equivalent surrogate of Barlow Twins (not the original Barlow Twins loss).

    Formula:
        As ``vicreg_surrogate`` but ``K = u2 u2ᵀ`` (the *other* view's Gram matrix), and
        without ``r`` a per-dimension positive term: ``C = sg(u1ᵀ u2) / B`` (D × D),
        ``pos_i = Σ_d (2/B)(1 − (1−λ) C_dd)(−u1_id · sg(u2_id))``.

    Inputs:
        ``anchor_features`` (B, d) and ``positive_features`` (B, d), the two views;
        ``negative_features`` is not used.

    Returns:
        ``{"barlow_twins_positive_loss", "barlow_twins_negative_loss"}`` (the latter
        includes λ).

    Defaults:
        ``lam`` λ = 30, ``margin`` m = 0.30, ``temperature`` τ = 0.05, ``ratio`` 1,
        ``gd = w = r = False``, ``power`` None.

    Paper:
        The unified gradient paradigm of contrastive sentence embeddings (ACL 2024, code
        ``BDBC-KG-NLP/UnderstandingCSE``); Barlow Twins: Zbontar et al. (ICML 2021).

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> views = torch.randn(8, 16)
        >>> bt = create_objective("barlow_twins_surrogate")
        >>> sorted(bt(anchor_features=views, positive_features=views + 0.1))
        ['barlow_twins_negative_loss', 'barlow_twins_positive_loss']
    """

    default_lam = 30.0
    prefix = "barlow_twins"

    def gram(self, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        return u2 @ u2.T

    def plain_positive(self, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        b = u1.shape[0]
        u2 = u2.detach()
        c_diag = (u1.detach() * u2).sum(dim=0) / b  # diag of u1ᵀu2 / B
        scale = (2 / b) * (1 - (1 - self.lam) * c_diag)
        return -(u1 * u2 * scale).sum(dim=1)

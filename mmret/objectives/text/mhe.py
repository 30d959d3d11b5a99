"""Minimum hyperspherical energy, MHE: alignment + uniformity (docs/methods.md §9)."""

from __future__ import annotations

from typing import Any

import torch

from mmret.objectives.base import register_objective
from mmret.objectives.text.base import (
    NonContrastiveObjective,
    alignment_terms,
)
from mmret.objectives.text.common import positive_mask


@register_objective("mhe")
class MHEObjective(NonContrastiveObjective):
    """Alignment + uniformity ("minimum hyperspherical energy", MHE) with the gd/w/r switches.

    Formula:
        ``h``, ``h'`` the normalised views (B rows), ``a_i = 2 − 2 h_i·h'_i``;
        ``c = 1`` (``w`` off) or ``1/τ`` (``w`` on). Per view v,
        ``U^v = log Σ_{i>j} exp(c · h_i·h_j)`` (one scalar over the strict lower triangle),
        alignment weights ``ω_i = 1/B`` (``w`` off) or
        ``ω^v_i = sg(exp(LSE_{j≠i}(c·h_i·h_j) − U^v)) / τ`` (``w`` on), and::

            L = λ(U⁰ + U¹) + ρ(Σ_i a_i ω⁰_i / 2 + Σ_i a_i ω¹_i / 2),   ρ = ratio if r else 1

        ``gd`` detaches the rows outside the within-view neighbour mask
        (:class:`~mmret.objectives.text.base.NonContrastiveObjective`).

    Inputs:
        ``anchor_features`` (B, d) and ``positive_features`` (B, d), the two views;
        ``negative_features`` is not used.

    Returns:
        ``{"mhe_uniformity_loss": λ(U⁰+U¹), "mhe_alignment_loss": the rest}``.

    Defaults:
        ``lam`` λ = 10, ``margin`` m = 0.30, ``temperature`` τ = 0.05, ``ratio`` 1,
        ``gd = w = r = False``, ``power`` None.

    Paper:
        The unified gradient paradigm of contrastive sentence embeddings (ACL 2024, code
        ``BDBC-KG-NLP/UnderstandingCSE``, its "other" branch).

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> views = torch.randn(8, 16)
        >>> mhe = create_objective("mhe", gd=True, w=True, r=True, lam=1.0, ratio=1.75)
        >>> sorted(mhe(anchor_features=views, positive_features=views + 0.1))
        ['mhe_alignment_loss', 'mhe_uniformity_loss']
    """

    default_lam = 10.0

    def _energy(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``U`` (scalar, attached) and the detached ω (B,)."""
        c = 1.0 / self.temperature if self.w else 1.0
        gram = c * (h @ h.T)
        rows, cols = torch.tril_indices(h.shape[0], h.shape[0], offset=-1, device=h.device)
        energy = torch.logsumexp(gram[rows, cols], dim=0)
        if not self.w:
            return energy, torch.full_like(gram[0], 1.0 / h.shape[0]).detach()
        row_lse = torch.logsumexp(gram.detach().masked_fill(positive_mask(gram), -torch.inf), 1)
        return energy, torch.exp(row_lse - energy.detach()) / self.temperature

    def compute(
        self, anchor_features: torch.Tensor, positive_features: torch.Tensor, **_: Any
    ) -> dict[str, torch.Tensor]:
        h, h_pos = self.views(anchor_features, positive_features)
        u0, w0 = self._energy(h)
        u1, w1 = self._energy(h_pos)
        align = alignment_terms(h, h_pos)
        rho = self.ratio if self.r else 1.0
        return {
            "mhe_uniformity_loss": self.lam * (u0 + u1),
            "mhe_alignment_loss": rho * ((align * w0).sum() / 2 + (align * w1).sum() / 2),
        }

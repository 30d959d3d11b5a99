"""Minimum hyperspherical separation, MHS (docs/methods.md §9)."""

from __future__ import annotations

from typing import Any

import torch

from mmret.objectives.base import register_objective
from mmret.objectives.text.base import (
    NonContrastiveObjective,
    alignment_terms,
)
from mmret.objectives.text.common import hardest


@register_objective("mhs")
class MHSObjective(NonContrastiveObjective):
    """Minimum hyperspherical separation (MHS) with the gd/r switches.

    Formula:
        ``D⁰_ij = √(‖h_i − sg(h'_j)‖² + 1e-4)``, ``u⁰_i = −min_{j≠i} D⁰_ij``; ``D¹``, ``u¹``
        the same with the views swapped; ``a_i = 2 − 2 h_i·h'_i``; ``ω = ½`` (``r`` off)
        or ``ω⁰_i = sg(ratio / (2 min_{j≠i} D⁰_ij))`` (``r`` on), and::

            L = λ(mean u⁰ + mean u¹) + mean(a ω⁰) + mean(a ω¹)

        ``w`` has no effect (as in the reference); ``gd`` as in ``mhe``.

    Inputs:
        ``anchor_features`` (B, d) and ``positive_features`` (B, d), the two views;
        ``negative_features`` is not used.

    Returns:
        ``{"mhs_separation_loss", "mhs_alignment_loss"}`` (the first includes λ).

    Defaults:
        ``lam`` λ = 1, ``margin`` m = 0.30, ``ratio`` 1, ``gd = w = r = False``.

    Paper:
        The unified gradient paradigm of contrastive sentence embeddings (ACL 2024, code
        ``BDBC-KG-NLP/UnderstandingCSE``).

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> views = torch.randn(8, 16)
        >>> sorted(create_objective("mhs")(anchor_features=views, positive_features=views))
        ['mhs_alignment_loss', 'mhs_separation_loss']
    """

    default_lam = 1.0

    @staticmethod
    def _nearest(h: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``min_{j≠i} √(‖h_i − sg(o_j)‖² + 1e-4)`` (B,)."""
        sq = (2 - 2 * h @ other.detach().T).clamp_min(0.0)
        return hardest(torch.sqrt(sq + 1e-4), largest=False)

    def compute(
        self, anchor_features: torch.Tensor, positive_features: torch.Tensor, **_: Any
    ) -> dict[str, torch.Tensor]:
        h, h_pos = self.views(anchor_features, positive_features)
        near0, near1 = self._nearest(h, h_pos), self._nearest(h_pos, h)
        align = alignment_terms(h, h_pos)
        if self.r:
            w0, w1 = (self.ratio / (2 * near.detach()) for near in (near0, near1))
        else:
            w0 = w1 = torch.full_like(align, 0.5)
        return {
            "mhs_separation_loss": self.lam * (-near0.mean() - near1.mean()),
            "mhs_alignment_loss": (align * w0).mean() + (align * w1).mean(),
        }

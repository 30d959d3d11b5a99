"""The gradient paradigm written as a loss (the reference's ``sg``; docs/methods.md §9).

The paradigm (§9) says every contrastive loss has the per-anchor gradient
``∂L_i/∂h_i = GD · Σ_{j≠i} W_ij (h'_j − R · h'_i)``. This objective sets each factor by
hand so the three can be studied one at a time:

- **GD** (``gd=True``): row i keeps its gradient only while
  ``s_ii − max_{j≠i} s_ij < m`` (computed on detached values) — a *cross-view* margin;
- **W**: ``W_ij = softmax_{j≠i}(s_ij/τ)`` (detached), or with ``power=p``
  ``W_ij ∝ max(s_ij, 1e-4)^p`` over ``j ≠ i`` (p = 0: uniform);
- **R** = ``ratio``.

Per direction, with ``S = h · sg(h')ᵀ`` except its diagonal ``s_ii = h_i · h'_i`` fully
attached, ``T_ij = s_ij − R s_ii`` and

    ℓ(h, h') = (1 / (|M|·B)) Σ_{i∈M} Σ_j W_ij T_ij    (gd=True, M = rows passing the mask)
    ℓ(h, h') = (1 / B²)      Σ_i    Σ_j W_ij T_ij    (gd=False)

so that, since ``Σ_j W_ij = 1``, row i's gradient is ``Σ_j W_ij h'_j − R h'_i`` (times the
constant 1/(|M|B)). The loss is ``ℓ(h, h') + ℓ(h', h)``; the reverse direction's mask is
therefore column-wise in S. When no row passes the mask the term is an exact zero (still
attached to the graph) instead of the reference's 0/0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmret.objectives.base import Objective, register_objective
from mmret.objectives.text.common import check_views, hardest, positive_mask


def paradigm_weights(
    sim: torch.Tensor, temperature: float, power: float | None
) -> torch.Tensor:
    """Detached W (N, M): row-wise softmax of ``s/τ`` over ``j ≠ i``, or normalised
    ``max(s, 1e-4)^power`` over ``j ≠ i``; ``W_ii = 0``."""
    sim = sim.detach()
    diag = positive_mask(sim)
    if power is None:
        return torch.softmax((sim / temperature).masked_fill(diag, float("-inf")), dim=1)
    base = torch.clamp(sim, min=1e-4).pow(power).masked_fill(diag, 0.0)
    return base / base.sum(dim=1, keepdim=True)


def margin_mask(sim: torch.Tensor, margin: float) -> torch.Tensor:
    """``M_i = 1[s_ii − max_{j≠i} s_ij < m]`` on detached values (bool, N)."""
    sim = sim.detach()
    return (sim.diagonal() - hardest(sim, largest=True)) < margin


@register_objective("gradient_paradigm")
class GradientParadigmObjective(Objective):
    """The reference's ``sg`` objective: the gradient paradigm written as a loss.

    Formula:
        ``S = h · sg(h')ᵀ`` with its diagonal ``s_ii = h_i · h'_i`` fully attached,
        ``W`` the detached softmax weights over ``j ≠ i`` (or power weights),
        ``T_ij = s_ij − R s_ii``; per direction
        ``ℓ(h, h') = (1/(|M|·B)) Σ_{i∈M} Σ_j W_ij T_ij`` (``gd``, M = rows passing the
        cross-view margin mask) or ``(1/B²) Σ_i Σ_j W_ij T_ij``; ``L = ℓ(h, h') + ℓ(h', h)``
        (details in the module docstring).

    Inputs:
        ``anchor_features`` (N, d), ``positive_features`` (N, d), normalised inside;
        ``negative_features`` is not used.

    Returns:
        ``{"paradigm_loss": L}`` (times ``weight``).

    Defaults:
        The reference's empirical-study base: ``margin`` m = 0.30, ``temperature``
        τ = 0.05, ``ratio`` R = 1, ``gd=True``, ``power`` None, ``weight`` = 1.

    Paper:
        The unified gradient paradigm of contrastive sentence embeddings (ACL 2024, code
        ``BDBC-KG-NLP/UnderstandingCSE``, its ``sg`` loss).

    Example:
        >>> import torch
        >>> from mmret.objectives import create_objective
        >>> views = torch.randn(8, 16)
        >>> paradigm = create_objective("gradient_paradigm", gd=False, ratio=1.0)
        >>> sorted(paradigm(anchor_features=views, positive_features=views + 0.1))
        ['paradigm_loss']

    Args:
        gd: apply the cross-view margin mask (the reference's ``w_gd`` flag).
        margin: m of the mask.
        temperature: τ of the softmax weights.
        power: use power weights ``max(s, 1e-4)^power`` instead of the softmax.
        ratio: R.
    """

    requires = ("anchor_features", "positive_features")

    def __init__(
        self,
        weight: float = 1.0,
        gd: bool = True,
        margin: float = 0.30,
        temperature: float = 0.05,
        power: float | None = None,
        ratio: float = 1.0,
    ) -> None:
        super().__init__(weight)
        if power is None and not temperature > 0:
            raise ValueError(f"gradient_paradigm: temperature must be > 0, got {temperature}")
        self.gd = bool(gd)
        self.margin = float(margin)
        self.temperature = float(temperature)
        self.power = None if power is None else float(power)
        self.ratio = float(ratio)

    def _direction(self, h: torch.Tensor, h_other: torch.Tensor) -> torch.Tensor:
        n = h.shape[0]
        sim = h @ h_other.detach().T
        s_pos = (h * h_other).sum(dim=1)  # fully attached diagonal
        sim = torch.where(positive_mask(sim), s_pos[:, None], sim)
        weights = paradigm_weights(sim, self.temperature, self.power)
        terms = weights * (sim - self.ratio * s_pos[:, None])
        if not self.gd:
            return terms.sum() / (n * n)
        rows = margin_mask(sim, self.margin)
        count = int(rows.sum())
        if count == 0:
            return terms.sum() * 0.0
        return terms[rows].sum() / (count * n)

    def compute(
        self, anchor_features: torch.Tensor, positive_features: torch.Tensor, **_: Any
    ) -> dict[str, torch.Tensor]:
        check_views(self.name, anchor_features, positive_features)
        h = F.normalize(anchor_features, dim=-1)
        h_pos = F.normalize(positive_features, dim=-1)
        return {"paradigm_loss": self._direction(h, h_pos) + self._direction(h_pos, h)}

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, gd={self.gd}, margin={self.margin}, "
            f"temperature={self.temperature}, power={self.power}, ratio={self.ratio}"
        )

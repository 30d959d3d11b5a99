"""Non-contrastive sentence-embedding losses with the paradigm's three knobs
(docs/methods.md §9): ``mhe``, ``mhs``, ``vicreg_surrogate``, ``barlow_twins_surrogate``.

Notation: ``h`` = normalised ``anchor_features`` (view 0), ``h'`` = normalised
``positive_features`` (view 1), B rows; ``sg(·)`` = detach. Alignment per pair
``a_i = 2 − 2 h_i·h'_i``. ``negative_features`` is not used.

Switches, shared by all four (the reference's ``w_gd``, ``w_w``, ``w_r`` flags):

- ``gd``: a **within-view** neighbour mask (unlike ``gradient_paradigm``'s cross-view
  margin): ``M⁰_i = 1[1 − max_{j≠i} h_i·h_j < m]`` (detached), ``M¹`` likewise on view 1;
  rows outside the mask are replaced by their detached copies before any term is
  computed, so they receive no gradient at all;
- ``w``: temperature-sharpened negative weights (per loss below);
- ``r``: a ratio on the positive (alignment) term.

Parameters: ``lam`` (λ), ``margin`` (m), ``temperature`` (τ), ``ratio``, ``power``. Defaults:
λ of the reference's "original" runs (mhe 10, mhs 1, vicreg/BT 30), m = 0.30, τ = 0.05,
ratio 1, switches off. The modified runs (``*.w_gd.w_w.w_r``) use λ = 1 with the ratios of
the hyper-parameter table (e.g. mhe ratio 1.75).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmret.objectives.base import Objective, register_objective
from mmret.objectives.text.common import check_views, hardest, positive_mask


def within_view_mask(h: torch.Tensor, margin: float) -> torch.Tensor:
    """``M_i = 1[1 − max_{j≠i} h_i·h_j < m]`` on detached, normalised ``h`` (bool, B)."""
    h = h.detach()
    return (1 - hardest(h @ h.T, largest=True)) < margin


def stop_gradient_outside(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``h`` where ``keep``, ``sg(h)`` elsewhere (same values)."""
    return torch.where(keep[:, None], h, h.detach())


class _NonContrastive(Objective):
    requires = ("anchor_features", "positive_features")
    default_lam = 1.0

    def __init__(
        self,
        weight: float = 1.0,
        lam: float | None = None,
        gd: bool = False,
        w: bool = False,
        r: bool = False,
        margin: float = 0.30,
        temperature: float = 0.05,
        ratio: float = 1.0,
        power: float | None = None,
    ) -> None:
        super().__init__(weight)
        if power is None and not temperature > 0:
            raise ValueError(f"{self.name}: temperature must be > 0, got {temperature}")
        self.lam = float(self.default_lam if lam is None else lam)
        self.gd, self.w, self.r = bool(gd), bool(w), bool(r)
        self.margin = float(margin)
        self.temperature = float(temperature)
        self.ratio = float(ratio)
        self.power = None if power is None else float(power)

    def views(
        self, anchor_features: torch.Tensor, positive_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised views, with the ``gd`` within-view stop-gradient applied."""
        check_views(self.name, anchor_features, positive_features)
        h = F.normalize(anchor_features, dim=-1)
        h_pos = F.normalize(positive_features, dim=-1)
        if self.gd:
            h = stop_gradient_outside(h, within_view_mask(h, self.margin))
            h_pos = stop_gradient_outside(h_pos, within_view_mask(h_pos, self.margin))
        return h, h_pos

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, lam={self.lam}, gd={self.gd}, w={self.w}, r={self.r}, "
            f"margin={self.margin}, temperature={self.temperature}, ratio={self.ratio}, "
            f"power={self.power}"
        )


def alignment_terms(h: torch.Tensor, h_pos: torch.Tensor) -> torch.Tensor:
    """``a_i = 2 − 2 h_i·h'_i = ‖h_i − h'_i‖²`` (B,), both sides attached."""
    return 2 - 2 * (h * h_pos).sum(dim=1)


@register_objective("mhe")
class MHEObjective(_NonContrastive):
    """Alignment + uniformity ("minimum hyperspherical energy").

    ``c = 1`` (``w`` off) or ``1/τ`` (``w`` on). Per view v,
    ``U^v = log Σ_{i>j} exp(c · h_i·h_j)`` (one scalar over the strict lower triangle),
    alignment weights ``ω_i = 1/B`` (``w`` off) or
    ``ω^v_i = sg(exp(LSE_{j≠i}(c·h_i·h_j) − U^v)) / τ`` (``w`` on), and

        L = λ(U⁰ + U¹) + ρ(Σ_i a_i ω⁰_i / 2 + Σ_i a_i ω¹_i / 2),   ρ = ratio if r else 1.

    Returns ``{"mhe_uniformity_loss": λ(U⁰+U¹), "mhe_alignment_loss": the rest}``.
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


@register_objective("mhs")
class MHSObjective(_NonContrastive):
    """Minimum hyperspherical separation.

    ``D⁰_ij = √(‖h_i − sg(h'_j)‖² + 1e-4)``, ``u⁰_i = −min_{j≠i} D⁰_ij``; ``D¹``, ``u¹`` the
    same with the views swapped. ``ω = ½`` (``r`` off) or
    ``ω⁰_i = sg(ratio / (2 min_{j≠i} D⁰_ij))`` (``r`` on), and

        L = λ(mean u⁰ + mean u¹) + mean(a ω⁰) + mean(a ω¹).

    ``w`` has no effect (as in the reference). Returns ``{"mhs_separation_loss",
    "mhs_alignment_loss"}``.
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


class _CovarianceSurrogate(_NonContrastive):
    """Shared body of the VICReg and Barlow Twins surrogates; one direction (u1, u2):

    - ``P = u1 · sg(u1)ᵀ``; ``neg_i = Σ_j G_ij P_ij`` (the diagonal included);
    - ``G = 2 sg(K) / B²`` (``w`` off), or ``G_ij = E_ij / Σ_{k≠l} E_kl`` with
      ``E = exp(K/τ)`` (or ``max(K, 1e-4)^power`` when ``power`` is set) (``w`` on), K being
      the Gram matrix that :meth:`gram` chooses (detached);
    - with ``r``: ``pos_i = λ · ratio · (Σ_{j≠i} G_ij) · (−u1_i·u2_i)``, both attached;
      without: :meth:`plain_positive`;
    - direction loss ``Σ_i (pos_i + λ neg_i)``; the total sums (view0, view1) and
      (view1, view0).
    """

    prefix = "surrogate"

    def gram(self, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def plain_positive(self, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def negative_weights(self, gram: torch.Tensor) -> torch.Tensor:
        b = gram.shape[0]
        gram = gram.detach()
        if not self.w:
            return 2 * gram / b**2
        off = ~positive_mask(gram)
        if self.power is None:
            logits = gram / self.temperature
            energy = torch.exp(logits - logits[off].max())  # the shift cancels below
        else:
            energy = torch.clamp(gram, min=1e-4).pow(self.power)
        return energy / energy[off].sum()

    def _direction(self, u1: torch.Tensor, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.negative_weights(self.gram(u1, u2))
        neg = (weights * (u1 @ u1.detach().T)).sum(dim=1)
        if self.r:
            off_sum = weights.masked_fill(positive_mask(weights), 0.0).sum(dim=1)
            pos = self.lam * self.ratio * off_sum * (-(u1 * u2).sum(dim=1))
        else:
            pos = self.plain_positive(u1, u2)
        return pos.sum(), self.lam * neg.sum()

    def compute(
        self, anchor_features: torch.Tensor, positive_features: torch.Tensor, **_: Any
    ) -> dict[str, torch.Tensor]:
        h, h_pos = self.views(anchor_features, positive_features)
        pos0, neg0 = self._direction(h, h_pos)
        pos1, neg1 = self._direction(h_pos, h)
        return {
            f"{self.prefix}_positive_loss": pos0 + pos1,
            f"{self.prefix}_negative_loss": neg0 + neg1,
        }


@register_objective("vicreg_surrogate")
class VICRegSurrogateObjective(_CovarianceSurrogate):
    """Gradient-equivalent surrogate of VICReg's invariance + covariance terms (not the
    original VICReg). K = ``u1 u1ᵀ`` (the anchor view's own Gram matrix); without ``r``,
    ``pos_i = −(2/B) u1_i · sg(u2_i)``. Returns ``{"vicreg_positive_loss",
    "vicreg_negative_loss"}`` (the latter includes λ)."""

    default_lam = 30.0
    prefix = "vicreg"

    def gram(self, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        return u1 @ u1.T

    def plain_positive(self, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
        return -(2 / u1.shape[0]) * (u1 * u2.detach()).sum(dim=1)


@register_objective("barlow_twins_surrogate")
class BarlowTwinsSurrogateObjective(_CovarianceSurrogate):
    """Barlow Twins surrogate: as ``vicreg_surrogate`` but K = ``u2 u2ᵀ`` (the *other*
    view's Gram matrix), and without ``r`` a per-dimension positive term:
    ``C = sg(u1ᵀ u2) / B`` (D × D), ``pos_i = Σ_d (2/B)(1 − (1−λ) C_dd)(−u1_id · sg(u2_id))``.
    Returns ``{"barlow_twins_positive_loss", "barlow_twins_negative_loss"}``."""

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

"""Unregistered base classes and shared pieces of the sentence-embedding objectives.

Each registered objective lives in its own module (``infonce.py``, ``arccon.py``, ``mpt.py``,
``met.py``, ``mat.py``, ``mhe.py``, ``mhs.py``, ``vicreg_surrogate.py``,
``barlow_twins_surrogate.py``, ``paradigm.py``, ``hierarchical.py``); the families share
the bases here:

- :class:`PairObjective`: the contrastive losses on ``S = cos(anchor, [positive; negative])``
  (N, N+M); ``s_ii`` is the positive of row i and every column ``j ≠ i`` one of its
  negatives (in-batch positives of the other rows, then the optional hard negatives).
- :class:`TripletObjective`: the hardest-negative margin losses (MPT, MET, MAT).
- :class:`NonContrastiveObjective` and :class:`CovarianceSurrogateObjective`: the
  non-contrastive losses with the paradigm's three switches (docs/methods.md §9).

Temperatures here are fixed hyper-parameters of the references (plain floats, divided
into the logits exactly as the reference does; in the non-contrastive losses τ only
enters detached weights, so no gradient could reach it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmret.objectives.base import Objective
from mmret.objectives.text.common import (
    candidate_similarity,
    check_views,
    hardest,
    positive_mask,
)

HARDEST_MODES = ("row", "column")


def check_positive(name: str, field: str, value: float) -> float:
    """``float(value)``; ``ValueError`` naming ``name`` and ``field`` unless it is > 0."""
    if not value > 0:
        raise ValueError(f"{name}: {field} must be > 0, got {value}")
    return float(value)


class PairObjective(Objective):
    """Base of the contrastive sentence losses: the checked candidate similarity ``S``."""

    requires = ("anchor_features", "positive_features")

    def _similarity(
        self,
        anchor_features: torch.Tensor,
        positive_features: torch.Tensor,
        negative_features: torch.Tensor | None,
    ) -> torch.Tensor:
        check_views(self.name, anchor_features, positive_features, negative_features)
        return candidate_similarity(anchor_features, positive_features, negative_features)


class TripletObjective(PairObjective):
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


def within_view_mask(h: torch.Tensor, margin: float) -> torch.Tensor:
    """``M_i = 1[1 − max_{j≠i} h_i·h_j < m]`` on detached, normalised ``h`` (bool, B)."""
    h = h.detach()
    return (1 - hardest(h @ h.T, largest=True)) < margin


def stop_gradient_outside(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``h`` where ``keep``, ``sg(h)`` elsewhere (same values)."""
    return torch.where(keep[:, None], h, h.detach())


def alignment_terms(h: torch.Tensor, h_pos: torch.Tensor) -> torch.Tensor:
    """``a_i = 2 − 2 h_i·h'_i = ‖h_i − h'_i‖²`` (B,), both sides attached."""
    return 2 - 2 * (h * h_pos).sum(dim=1)


class NonContrastiveObjective(Objective):
    """Base of ``mhe``, ``mhs``, ``vicreg_surrogate`` and ``barlow_twins_surrogate``.

    Non-contrastive sentence-embedding losses with the paradigm's three knobs
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


class CovarianceSurrogateObjective(NonContrastiveObjective):
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

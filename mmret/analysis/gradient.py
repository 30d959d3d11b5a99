"""Per-sample gradient dissipation (GD), weights (W) and ratio (R) in closed form
(docs/methods.md §9).

For each anchor i the gradient of the contrastive losses takes the form

    ∂L_i/∂h_i = c · GD_i · Σ_{j≠i} W_ij (h'_j − R_i · h'_i)

where ``h_i`` is the (unit) anchor, ``h'_j`` the candidate columns (``h'_i`` its positive),
and ``c`` a loss constant (1/τ for InfoNCE and ArcCon, 1 otherwise). With the per-row
constants kept inside W (MET: 1/d_ij*, MAT: 1/sin θ_ij*), the identity is **exact** for
the Euclidean gradient w.r.t. ``h_i`` as a free vector in ``s_ij = h_i·h'_j``; projecting
both sides on the tangent plane ``(I − h_i h_iᵀ)`` gives the gradient through the
objectives' internal L2 normalisation.

| loss    | GD_i                                              | W_ij                          | R_i |
|---------|---------------------------------------------------|-------------------------------|-----|
| InfoNCE | 1 / (1 + e^{s_ii/τ} / Σ_{j≠i} e^{s_ij/τ})         | softmax_{j≠i}(s_ij/τ)         | 1 |
| ArcCon  | 1 / (1 + e^{cos(θ_ii+u)/τ} / Σ_{j≠i} e^{s_ij/τ})  | softmax_{j≠i}(s_ij/τ)         | sin(θ_ii+u)/sin θ_ii |
| MPT     | 1[s_ii − max_{j≠i} s_ij < m]                      | one-hot j* = argmax s_ij      | 1 |
| MET     | 1[min_{j≠i} d_ij − d_ii < m]                      | one-hot j* = argmin d_ij, × 1/d_ij* | d_ij*/d_ii |
| MAT     | 1[min_{j≠i} θ_ij − θ_ii < m·π]                    | one-hot j* = argmin θ_ij, × 1/sin θ_ij* | sin θ_ij*/sin θ_ii |

``d_ij = √max(2 − 2 s_ij, 1e-4)``, ``θ_ij = arccos s_ij``. All functions take the
similarity matrix ``S`` (N, M), M ≥ N, positive of row i in column i, and return
:class:`ParadigmTerms` (no gradient).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mmret.objectives.text.common import ACOS_EPS, positive_mask


@dataclass(frozen=True)
class ParadigmTerms:
    """``gd`` (N,), ``w`` (N, M) with ``w_ii = 0``, ``r`` (N,), and the constant ``scale`` c."""

    gd: torch.Tensor
    w: torch.Tensor
    r: torch.Tensor
    scale: float = 1.0


def _check(sim: torch.Tensor) -> torch.Tensor:
    if sim.dim() != 2 or sim.shape[1] < sim.shape[0] or sim.shape[0] < 1 or sim.shape[1] < 2:
        raise ValueError(
            f"sim must be (N, M) with M >= N and M >= 2 (positive of row i in column i), "
            f"got {tuple(sim.shape)}"
        )
    return sim.detach()


def _softmax_terms(sim: torch.Tensor, positive_logit: torch.Tensor, temperature: float):
    diag = positive_mask(sim)
    neg_logits = (sim / temperature).masked_fill(diag, float("-inf"))
    lse_neg = torch.logsumexp(neg_logits, dim=1)
    gd = torch.sigmoid(lse_neg - positive_logit / temperature)  # 1/(1 + e^{pos}/Σ e^{neg})
    return gd, torch.softmax(neg_logits, dim=1)


def infonce_terms(sim: torch.Tensor, temperature: float = 0.05) -> ParadigmTerms:
    """InfoNCE (τ = 0.05): GD = 1 − p_ii, W = softmax over negatives, R = 1, c = 1/τ."""
    sim = _check(sim)
    gd, w = _softmax_terms(sim, sim.diagonal(), temperature)
    return ParadigmTerms(gd, w, torch.ones_like(gd), 1.0 / temperature)


def arccon_terms(
    sim: torch.Tensor, temperature: float = 0.05, margin_degrees: float = 10.0
) -> ParadigmTerms:
    """ArcCon (τ = 0.05, u = 10°): positive logit cos(θ_ii + u), R = sin(θ_ii+u)/sin θ_ii."""
    sim = _check(sim)
    u = math.radians(margin_degrees)
    theta = torch.acos(sim.diagonal().clamp(-1 + ACOS_EPS, 1 - ACOS_EPS))
    gd, w = _softmax_terms(sim, torch.cos(theta + u), temperature)
    return ParadigmTerms(gd, w, torch.sin(theta + u) / torch.sin(theta), 1.0 / temperature)


def _one_hot(sim: torch.Tensor, index: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    w = torch.zeros_like(sim)
    w[torch.arange(sim.shape[0], device=sim.device), index] = scale
    return w


def mpt_terms(sim: torch.Tensor, margin: float = 0.23) -> ParadigmTerms:
    """MPT (m = 0.23): GD = 1[s_ii − max s_ij < m], W = one-hot hardest, R = 1."""
    sim = _check(sim)
    neg = sim.masked_fill(positive_mask(sim), float("-inf"))
    best, index = neg.max(dim=1)
    gd = ((sim.diagonal() - best) < margin).to(sim.dtype)
    return ParadigmTerms(gd, _one_hot(sim, index, torch.ones_like(best)), torch.ones_like(gd))


def met_terms(sim: torch.Tensor, margin: float = 0.45) -> ParadigmTerms:
    """MET (m = 0.45): GD = 1[min d_ij − d_ii < m], W = (1/d_ij*) on the hardest,
    R = d_ij*/d_ii."""
    sim = _check(sim)
    dist = torch.sqrt(torch.clamp(2 - 2 * sim, min=1e-4))
    nearest, index = dist.masked_fill(positive_mask(sim), float("inf")).min(dim=1)
    d_pos = dist.diagonal()
    gd = ((nearest - d_pos) < margin).to(sim.dtype)
    return ParadigmTerms(gd, _one_hot(sim, index, 1.0 / nearest), nearest / d_pos)


def mat_terms(sim: torch.Tensor, margin: float = 0.15) -> ParadigmTerms:
    """MAT (m = 0.15, in units of π): GD = 1[min θ_ij − θ_ii < mπ], W = (1/sin θ_ij*) on
    the hardest, R = sin θ_ij*/sin θ_ii."""
    sim = _check(sim)
    theta = torch.acos(sim.clamp(-1 + ACOS_EPS, 1 - ACOS_EPS))
    nearest, index = theta.masked_fill(positive_mask(sim), float("inf")).min(dim=1)
    t_pos = theta.diagonal()
    gd = ((nearest - t_pos) < margin * math.pi).to(sim.dtype)
    sin_neg = torch.sin(nearest)
    return ParadigmTerms(gd, _one_hot(sim, index, 1.0 / sin_neg), sin_neg / torch.sin(t_pos))


PARADIGM_LOSSES: dict[str, Callable[..., ParadigmTerms]] = {
    "infonce": infonce_terms,
    "arccon": arccon_terms,
    "mpt": mpt_terms,
    "met": met_terms,
    "mat": mat_terms,
}


def paradigm_terms(loss: str, sim: torch.Tensor, **params: float) -> ParadigmTerms:
    """Dispatch by loss name (``infonce``, ``arccon``, ``mpt``, ``met``, ``mat``)."""
    if loss not in PARADIGM_LOSSES:
        raise KeyError(f"paradigm_terms: unknown loss {loss!r}; known: {sorted(PARADIGM_LOSSES)}")
    return PARADIGM_LOSSES[loss](sim, **params)


def paradigm_gradient(terms: ParadigmTerms, candidates: torch.Tensor) -> torch.Tensor:
    """``c · GD_i · Σ_j W_ij (h'_j − R_i h'_i)`` (N, d) for ``candidates`` h' (M, d)."""
    n = terms.w.shape[0]
    if candidates.dim() != 2 or candidates.shape[0] != terms.w.shape[1]:
        raise ValueError(
            f"candidates must be (M, d) with M = {terms.w.shape[1]}, got {tuple(candidates.shape)}"
        )
    w = terms.w.to(candidates.dtype)
    pulled = w @ candidates - (terms.r * w.sum(dim=1))[:, None].to(candidates.dtype) * candidates[:n]
    return terms.scale * terms.gd[:, None].to(candidates.dtype) * pulled

"""Spherical linear interpolation (SLERP) of task vectors, pairwise and composed for N.

Pairwise, with α the angle between ``v0`` and ``v1`` (cos α = v0·v1 / (‖v0‖‖v1‖))::

    slerp(t; v0, v1) = sin((1 − t)α)/sin α · v0 + sin(tα)/sin α · v1

(Shoemake 1985; the factors of METHODS-TEXT §5a item 2 with t = a_j / (a_i + a_j)). Near
parallel vectors (|cos α| > ``dot_threshold``, default 0.9995 as mergekit) fall back to
linear interpolation ``(1 − t) v0 + t v1``; a vector of norm ≤ ``eps`` counts as norm 1
(so its cosine with anything is 0), as mergekit does. For gradients (Self Positioning) use
``angle_eps`` instead: α is clamped into [angle_eps, π − angle_eps] and no branch is taken.

N vectors (METHODS-TEXT §5a item 2)::

    V_(1..k) = slerp(t_k; V_(1..k−1), V_k),  t_k = a_k / (ā_(k−1) + a_k)

with ā_(k−1) the mean of a_1..a_(k−1) (``accumulate="mean"``, as the text says) or their
sum (``"sum"``: every model ends with the same share when all a are equal). Every composed
vector is a linear combination ``Σ c_i V_i``, so only the Gram matrix ``G_ij = V_i·V_j`` is
needed to find ``c``: :func:`compose_coefficients` works on a batch of Gram matrices (one per
tensor for per-tensor angles, one for the flattened model, one per output row for
mergekit's row-wise variant) and is differentiable in ``a``.

Example::

    >>> v0, v1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    >>> slerp(0.5, v0, v1)          # 45 degrees: (0.7071, 0.7071)
    tensor([0.7071, 0.7071])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

ACCUMULATE = ("mean", "sum")


def slerp_factors(cos: torch.Tensor, t: torch.Tensor, *, dot_threshold: float | None = 0.9995,
                  angle_eps: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors ``(s0, s1)`` of ``s0·v0 + s1·v1`` for cosines ``cos`` and weights ``t``
    (broadcast). Exactly one of ``dot_threshold`` (static: linear fallback) and
    ``angle_eps`` (differentiable: α clamped away from 0 and π) is used; ``angle_eps``
    wins when both are given."""
    cos = cos.clamp(-1.0, 1.0)
    if angle_eps is not None:
        theta = torch.acos(cos).clamp(angle_eps, math.pi - angle_eps)
        sin = torch.sin(theta)
        return torch.sin((1 - t) * theta) / sin, torch.sin(t * theta) / sin
    threshold = 0.9995 if dot_threshold is None else dot_threshold
    linear = cos.abs() > threshold
    theta = torch.acos(torch.where(linear, torch.zeros_like(cos), cos))
    sin = torch.where(linear, torch.ones_like(theta), torch.sin(theta))
    s0 = torch.where(linear, 1 - t + 0 * theta, torch.sin((1 - t) * theta) / sin)
    s1 = torch.where(linear, t + 0 * theta, torch.sin(t * theta) / sin)
    return s0, s1


def slerp(t: float | torch.Tensor, v0: torch.Tensor, v1: torch.Tensor, *,
          dot_threshold: float = 0.9995, eps: float = 1e-8) -> torch.Tensor:
    """SLERP of two tensors of the same shape, the angle over all their elements (module
    docstring); computed in float64, returned in ``v0``'s dtype."""
    a, b = v0.double().reshape(-1), v1.double().reshape(-1)
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    na = torch.where(na > eps, na, torch.ones_like(na))
    nb = torch.where(nb > eps, nb, torch.ones_like(nb))
    cos = ((a / na) * (b / nb)).sum()
    s0, s1 = slerp_factors(cos, torch.as_tensor(t, dtype=torch.float64),
                           dot_threshold=dot_threshold)
    return (s0 * a + s1 * b).reshape(v0.shape).to(v0.dtype)


def compose_coefficients(gram: torch.Tensor, weights: torch.Tensor, *,
                         accumulate: str = "mean", dot_threshold: float | None = 0.9995,
                         angle_eps: float | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Coefficients ``c`` (…, N) with ``V_(1..N) = Σ c_i V_i`` for Gram matrices ``gram``
    (…, N, N) and positive weights ``weights`` (N,) (module docstring)."""
    if accumulate not in ACCUMULATE:
        raise ValueError(f"accumulate must be one of {ACCUMULATE}, got {accumulate!r}")
    n = gram.shape[-1]
    if weights.shape != (n,):
        raise ValueError(f"weights: expected shape ({n},), got {tuple(weights.shape)}")
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    c = eye[0].expand(*gram.shape[:-2], n)
    for k in range(1, n):
        prev = weights[:k].mean() if accumulate == "mean" else weights[:k].sum()
        t = weights[k] / (prev + weights[k])
        g_k = gram[..., :, k]                                    # (…, N)
        dot = (c * g_k).sum(-1)
        norm_acc = torch.sqrt((c.unsqueeze(-1) * gram * c.unsqueeze(-2)).sum((-1, -2))
                              .clamp_min(0))
        norm_k = torch.sqrt(gram[..., k, k].clamp_min(0))
        norm_acc = torch.where(norm_acc > eps, norm_acc, torch.ones_like(norm_acc))
        norm_k = torch.where(norm_k > eps, norm_k, torch.ones_like(norm_k))
        cos = dot / (norm_acc * norm_k)
        s0, s1 = slerp_factors(cos, t, dot_threshold=dot_threshold, angle_eps=angle_eps)
        c = s0.unsqueeze(-1) * c + s1.unsqueeze(-1) * eye[k]
    return c


def gram_matrix(vectors: Sequence[torch.Tensor], rows: bool = False) -> torch.Tensor:
    """``G_ij = V_i·V_j`` (float64 result; the dots in the tensors' own dtype) over the
    elements of same-shaped tensors (N, N), or per leading row (R, N, N) with
    ``rows=True``."""
    if rows:
        x = torch.stack([v.double().reshape(v.shape[0], -1) for v in vectors], dim=1)
        return x @ x.transpose(1, 2)
    n = len(vectors)
    flat = [v.reshape(-1) for v in vectors]  # views: no copy (dots in the tensors' dtype)
    gram = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i, n):
            gram[i, j] = gram[j, i] = torch.dot(flat[i], flat[j]).double()
    return gram


__all__ = ["ACCUMULATE", "compose_coefficients", "gram_matrix", "slerp", "slerp_factors"]

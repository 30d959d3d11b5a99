"""SLERP merge: the task vectors (or the weights) composed by spherical interpolation.

``θ = θ_0 + λ · V_(1..N)`` with ``V_(1..N)`` the iterative SLERP of
:mod:`mmret.merging.slerp` (pairwise for two models: ``t`` is the second one's share) over
the task vectors (``space="task_vectors"``, Self Positioning's composition) or
``θ = V_(1..N)`` over the weights themselves (``space="weights"``, mergekit's ``slerp``
between two models). Angles: ``per_tensor`` (one per tensor), ``flattened`` (one for the
whole model) or ``per_row`` (one per output row, mergekit 0.1.5's). Near-parallel vectors
fall back to linear interpolation (``dot_threshold``).

Options: ``t`` (two models: share of the second, in [0, 1]) or ``weights`` (N positive
shares a_i), ``angles``, ``space``, ``accumulate`` (mean | sum), ``scale`` λ (task-vector
space only), ``normalize`` (divide each V_i by its whole-model norm ‖V_i‖ first, so λ sets the
norm; the angles are unchanged, the shares of the interpolation are not),
``dot_threshold``.

Speed: with numba (the ``merge`` extra), the Gram matrices of large tensors are one pass
over the N vectors and ``θ_0 + λ Σ c_i V_i`` one fused pass (:mod:`.linear_kernels`);
without it, or for more than 8 models, the torch code (the same result to rounding).

Example: ``create_method("slerp", t=0.5)(tv)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmret.merging.checkpoint import MergeError
from mmret.merging.methods import linear_kernels
from mmret.merging.methods.base import (
    MergeMethod,
    MergeResult,
    check_weights,
    consume_key,
    register_method,
    work_dtype,
)
from mmret.merging.slerp import ACCUMULATE, compose_coefficients, gram_matrix
from mmret.merging.task_vectors import TaskVectors

ANGLES = ("per_tensor", "flattened", "per_row")
SMALL = 65536  # tensors of at most this many elements: Gram matrices by one batched matmul
SPACES = ("task_vectors", "weights")


@register_method("slerp")
class Slerp(MergeMethod):
    def __init__(self, t: float | None = None, weights: Sequence[float] | None = None,
                 angles: str = "per_tensor", space: str = "task_vectors",
                 accumulate: str = "mean", scale: float = 1.0, normalize: bool = False,
                 dot_threshold: float = 0.9995) -> None:
        if angles not in ANGLES:
            raise MergeError(f"angles must be one of {ANGLES}, got {angles!r}")
        if space not in SPACES:
            raise MergeError(f"space must be one of {SPACES}, got {space!r}")
        if accumulate not in ACCUMULATE:
            raise MergeError(f"accumulate must be one of {ACCUMULATE}, got {accumulate!r}")
        if t is not None and weights is not None:
            raise MergeError("slerp: give t (two models) or weights, not both")
        if t is not None and not 0.0 <= float(t) <= 1.0:
            raise MergeError(f"t = {t} is out of range (expected 0 <= t <= 1)")
        if not float(scale) > 0 or float(scale) > 100:
            raise MergeError(f"scale (lambda) = {scale} is out of range (expected 0 < x <= 100)")
        if not 0.0 < float(dot_threshold) <= 1.0:
            raise MergeError(f"dot_threshold = {dot_threshold} is out of range (0, 1]")
        self.t = None if t is None else float(t)
        self.weights = list(weights) if weights is not None else None
        self.angles, self.space, self.accumulate = angles, space, accumulate
        self.scale, self.normalize = float(scale), bool(normalize)
        self.dot_threshold = float(dot_threshold)

    def shares(self, n: int) -> torch.Tensor:
        if self.t is not None:
            if n != 2:
                raise MergeError(f"slerp: t is for two models, got {n}; give weights")
            return torch.tensor([1.0 - self.t, self.t], dtype=torch.float64)
        w = check_weights(self.weights, n, "weights", positive=True) or [1.0] * n
        return torch.tensor(w, dtype=torch.float64)

    def _vectors(self, tv: TaskVectors, key: str) -> list[torch.Tensor]:
        if self.space == "weights":
            return [tv.base[key] + v[key] for v in tv.vectors]
        return [v[key] for v in tv.vectors]

    def _coefficients(self, gram: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
        if self.t is not None and self.t in (0.0, 1.0):  # the endpoint itself
            c = torch.zeros(*gram.shape[:-1], dtype=gram.dtype)
            c[..., int(self.t)] = 1.0
            return c
        return compose_coefficients(gram, shares, accumulate=self.accumulate,
                                    dot_threshold=self.dot_threshold)

    def _combine(self, theta0: torch.Tensor, vectors: list[torch.Tensor],
                 c: torch.Tensor | list[float]) -> torch.Tensor:
        """θ_0 + λ Σ c_i V_i (task vectors) or Σ c_i θ_i (weights); ``c`` (N,) or (R, N)."""
        dtype = work_dtype(theta0)
        if (self.space == "task_vectors" and isinstance(c, list) and _fusable(theta0, vectors)):
            out = torch.empty_like(theta0)
            linear_kernels.combine(out.view(-1).numpy(), theta0.reshape(-1).numpy(),
                                   tuple(v.reshape(-1).numpy() for v in vectors),
                                   [self.scale * float(ci) for ci in c])
            return out
        if self.space == "task_vectors":
            merged, factor = theta0.to(dtype, copy=True), self.scale
        else:
            merged, factor = torch.zeros_like(theta0, dtype=dtype), 1.0
        for i, v in enumerate(vectors):
            ci = c[i] if isinstance(c, list) else c[..., i]
            if isinstance(ci, torch.Tensor) and ci.dim():
                ci = ci.reshape(-1, *([1] * (v.dim() - 1))).to(dtype)
                merged += factor * ci * v.to(dtype)
            else:
                merged.add_(v.to(dtype), alpha=factor * float(ci))
        return merged.to(theta0.dtype)

    def __call__(self, tv: TaskVectors, consume: bool = False) -> MergeResult:
        n = len(tv.vectors)
        shares = self.shares(n)
        norms = torch.ones(n, dtype=torch.float64)
        if self.normalize:
            if self.space == "weights":
                raise MergeError("slerp: normalize applies to task vectors (space=task_vectors)")
            norms = torch.tensor(tv.norms(), dtype=torch.float64).clamp_min(1e-12)
        outer = norms[:, None] * norms[None, :]
        keys = list(tv.base)
        flat_c, key_c = None, None
        if self.angles == "flattened":
            gram = (tv_gram_matrices(tv, keys, self._vectors).sum(0) if keys
                    else torch.zeros(n, n, dtype=torch.float64))
            flat_c = self._coefficients(gram / outer, shares) / norms
            flat_list = flat_c.tolist()
        elif self.angles == "per_tensor" and self.space == "task_vectors" and keys:
            # all Gram matrices first, then one batched composition (no per-tensor overhead)
            grams = tv_gram_matrices(tv, keys, self._vectors) / outer
            key_c = dict(zip(keys, (self._coefficients(grams, shares) / norms).tolist(),
                             strict=True))
        out: dict[str, torch.Tensor] = {}
        for key in keys:
            theta0 = tv.base[key]
            vectors = self._vectors(tv, key)
            if flat_c is not None:
                c = flat_list
            elif key_c is not None:
                c = key_c[key]
            else:
                by_row = self.angles == "per_row" and theta0.dim() >= 1
                gram = gram_matrix(vectors, rows=by_row) / outer
                c = self._coefficients(gram, shares) / norms
            out[key] = self._combine(theta0, vectors, c)
            if consume:
                del vectors
                consume_key(tv, key)
        names = tv.names
        coefficients = {"shares": dict(zip(names, shares.tolist(), strict=True)),
                        **self.options()}
        if flat_c is not None:
            coefficients["flattened_coefficients"] = dict(zip(tv.names, flat_c.tolist(),
                                                              strict=True))
        return MergeResult(out, coefficients)


def _fusable(theta0: torch.Tensor, vectors: Sequence[torch.Tensor]) -> bool:
    """Whether the fused kernels of :mod:`.linear_kernels` take these tensors (numba,
    float32/float64 contiguous tensors of one dtype, at most ``FUSED_MAX`` of them)."""
    return (linear_kernels.available() and 1 <= len(vectors) <= linear_kernels.FUSED_MAX
            and theta0.dtype in (torch.float32, torch.float64) and theta0.numel() > 0
            and all(v.dtype == theta0.dtype and v.is_contiguous() for v in vectors)
            and theta0.is_contiguous())


def tv_gram_matrices(tv: TaskVectors, keys: Sequence[str], vectors_of) -> torch.Tensor:
    """``G[t] = Gram matrix of vectors_of(tv, keys[t])`` (T, N, N), float64: large tensors by
    the one-pass :func:`.linear_kernels.gram` (numba; else :func:`gram_matrix`, N(N+1)/2
    dots), small ones grouped by size and stacked
    (T_s, N, D) into one batched ``X @ Xᵀ`` (the dots in the tensors' dtype either way)."""
    n = len(tv.vectors)
    out = torch.empty(len(keys), n, n, dtype=torch.float64)
    groups: dict[tuple[int, torch.dtype], list[int]] = {}
    for idx, key in enumerate(keys):
        t = tv.base[key]
        if t.numel() <= SMALL:
            groups.setdefault((t.numel(), t.dtype), []).append(idx)
            continue
        vectors = vectors_of(tv, key)
        if _fusable(t, vectors):
            out[idx] = torch.from_numpy(linear_kernels.gram(
                tuple(v.reshape(-1).numpy() for v in vectors)))
        else:
            out[idx] = gram_matrix(vectors)
    for idxs in groups.values():
        x = torch.stack([torch.stack([v.reshape(-1) for v in vectors_of(tv, keys[j])])
                         for j in idxs])
        out[idxs] = (x @ x.transpose(1, 2)).double()
    return out

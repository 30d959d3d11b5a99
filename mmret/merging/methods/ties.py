"""TIES-merging: trim, elect sign, disjoint merge.

Per tensor (Yadav et al., "TIES-Merging", NeurIPS 2023; mergekit's ``ties``)::

    τ̂_i   = V_i with all but its top-k% entries by |·| set to 0      (trim, k = density)
    γ      = sign(Σ_i w_i τ̂_i)   (a 0 sum counts as +)                  (elect)
    m_i    = [sign(τ̂_i) = γ]
    θ      = θ_0 + λ · Σ_i w_i m_i τ̂_i / Σ_i w_i m_i   (a 0 divisor counts as 1)

Options: ``density`` k ∈ (0, 1] (default 0.2), ``scale`` λ > 0 (default 1), ``weights``.
At least one entry per non-empty tensor is kept (k·numel rounded down, at least 1).

Speed: with numba importable, float32/float64 tensors of up to ``FUSED_MAX`` (8) models
take the exact kernels of :mod:`.ties_kernels` (the k-th magnitude by vectorised counting
passes instead of a full ``kthvalue``, and the election and disjoint mean fused in one
vectorised pass); otherwise, or with ``method._use_kernels = False``,
the torch code below (the same result: tests/test_merging_methods.py compares them).

Example: ``create_method("ties", density=0.2)(tv)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mmret.merging.checkpoint import MergeError
from mmret.merging.methods import ties_kernels
from mmret.merging.methods.base import (
    MergeMethod,
    check_fraction,
    check_weights,
    register_method,
    work_dtype,
)


def trim_top_k(delta: torch.Tensor, density: float) -> torch.Tensor:
    """``delta`` with all but its ``max(1, int(density·numel))`` largest-magnitude entries
    zeroed (ties between equal magnitudes: the stable sort's first)."""
    if density >= 1:
        return delta
    if delta.numel() == 0:
        return delta.clone()
    k = max(1, int(density * delta.numel()))
    flat = delta.reshape(-1)
    magnitude = flat.abs()
    # the k-th largest magnitude as a threshold (O(n)); exact ties at it: sort instead
    threshold = torch.kthvalue(magnitude, flat.numel() - k + 1).values
    mask = magnitude >= threshold
    if int(mask.sum()) != k:
        keep = torch.argsort(magnitude.float(), descending=True, stable=True)[:k]
        mask = torch.zeros_like(mask)
        mask[keep] = True
    return torch.where(mask, flat, torch.zeros_like(flat)).reshape(delta.shape)


def elect_and_merge(deltas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sign election and disjoint weighted mean of stacked (trimmed) deltas (N, …)."""
    w = weights.reshape(-1, *([1] * (deltas.dim() - 1))).to(deltas.dtype)
    weighted = deltas * w
    majority = torch.where(weighted.sum(0) >= 0, 1.0, -1.0).to(deltas.dtype)
    mask = (weighted.sign() == majority).to(deltas.dtype)
    divisor = (w * mask).sum(0)
    divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    return (weighted * mask).sum(0) / divisor


SMALL = 4096  # tensors of at most this many elements are merged together (merge_small)


@register_method("ties")
class Ties(MergeMethod):
    def __init__(self, density: float = 0.2, scale: float = 1.0,
                 weights: Sequence[float] | None = None) -> None:
        self.density = check_fraction(density, "density")
        if not float(scale) > 0 or float(scale) > 100:
            raise MergeError(f"scale (lambda) = {scale} is out of range (expected 0 < x <= 100)")
        self.scale = float(scale)
        self.weights = list(weights) if weights is not None else None
        self._use_kernels = True

    def model_weights(self, n: int) -> list[float]:
        return check_weights(self.weights, n) or [1.0] * n

    def _kernels_take(self, base: torch.Tensor, n_models: int) -> bool:
        return (self._use_kernels and base.numel() > 0 and ties_kernels.available()
                and work_dtype(base) == base.dtype and n_models <= ties_kernels.FUSED_MAX)

    def merge_small(self, tv, weights: Sequence[float]) -> dict[str, torch.Tensor]:
        """Tensors of at most ``SMALL`` elements (biases, norms) in one kernel call per
        dtype: their cost is per call (tensors with ties at a threshold are left to
        :meth:`merge_tensor`)."""
        groups: dict[torch.dtype, list[str]] = {}
        for key, base in tv.base.items():
            if base.numel() <= SMALL and self._kernels_take(base, len(tv.vectors)) and all(
                    v[key].dtype == base.dtype for v in tv.vectors):
                groups.setdefault(base.dtype, []).append(key)
        out = {}
        for keys in groups.values():
            sizes = [tv.base[key].numel() for key in keys]
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            ks = np.array([self._keep_count(n) for n in sizes])
            flat = torch.cat([tv.base[key].reshape(-1) for key in keys])
            deltas = [torch.cat([v[key].reshape(-1) for key in keys]) for v in tv.vectors]
            merged = torch.empty_like(flat)
            tied = ties_kernels.ties_merge_segments(
                merged.numpy(), flat.numpy(), tuple(d.numpy() for d in deltas), offsets, ks,
                weights, self.scale)
            for i, key in enumerate(keys):
                if not tied[i]:
                    out[key] = merged[offsets[i]:offsets[i + 1]].reshape(
                        tv.base[key].shape).clone()
        return out

    def merge_tensor(self, key: str, base: torch.Tensor, deltas: Sequence[torch.Tensor],
                     weights: Sequence[float]) -> torch.Tensor:
        if self._kernels_take(base, len(deltas)):
            return self._merge_kernels(base, deltas, weights)
        return self._merge_torch(base, deltas, weights)

    def _keep_count(self, n: int) -> int:
        """How many entries of an n-element delta survive the trim (all at density 1)."""
        return max(1, int(self.density * n)) if self.density < 1 else n

    def _merge_torch(self, base: torch.Tensor, deltas: Sequence[torch.Tensor],
                     weights: Sequence[float]) -> torch.Tensor:
        """The plain definition (also where the kernels found ties at a threshold)."""
        trimmed = torch.stack([trim_top_k(d, self.density) for d in deltas])
        mixed = elect_and_merge(trimmed, torch.tensor(weights, dtype=trimmed.dtype))
        return (base + self.scale * mixed).to(base.dtype)

    def _merge_kernels(self, base: torch.Tensor, deltas: Sequence[torch.Tensor],
                       weights: Sequence[float]) -> torch.Tensor:
        """The numba path of :meth:`merge_tensor` (same result, see module docstring): one
        kernel call finds the thresholds and merges."""
        dtype, n = base.dtype, base.numel()
        flat_base = _flat(base)
        flats = [_flat(d if d.dtype == dtype else d.to(dtype)) for d in deltas]
        out = np.empty(n, dtype=flat_base.dtype)
        tied = ties_kernels.ties_merge_segments(
            out, flat_base, tuple(flats), np.array([0, n], dtype=np.int64),
            np.array([self._keep_count(n)], dtype=np.int64), weights, self.scale)
        if tied[0]:  # ties at a threshold: the stable-sort trim of the torch code
            return self._merge_torch(base, deltas, weights)
        return torch.from_numpy(out).reshape(base.shape)


def _flat(t: torch.Tensor) -> np.ndarray:
    """The tensor's elements as a flat numpy array (a view when it is contiguous)."""
    return t.numpy().ravel() if t.is_contiguous() else t.reshape(-1).numpy()

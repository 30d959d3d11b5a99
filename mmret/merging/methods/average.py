"""Weight averaging ("model soup"): θ = Σ_i w_i θ_i / Σ_i w_i = θ_0 + Σ_i w_i V_i / Σ_i w_i.

Reference: Wortsman et al., "Model soups", ICML 2022; mergekit's ``linear`` method.
Options: ``weights`` (one per model, ≥ 0, not all 0; default equal).

Example: ``create_method("average")(tv)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmret.merging.checkpoint import MergeError
from mmret.merging.methods.base import MergeMethod, check_weights, register_method, work_dtype


@register_method("average")
class Average(MergeMethod):
    def __init__(self, weights: Sequence[float] | None = None) -> None:
        self.weights = list(weights) if weights is not None else None

    def model_weights(self, n: int) -> list[float]:
        w = check_weights(self.weights, n) or [1.0] * n
        if sum(w) <= 0:
            raise MergeError(f"weights {w}: their sum must be > 0")
        return w

    def merge_tensor(self, key: str, base: torch.Tensor, deltas: Sequence[torch.Tensor],
                     weights: Sequence[float]) -> torch.Tensor:
        total = sum(weights)
        dtype = work_dtype(base)
        out = base.to(dtype, copy=True)
        for w, d in zip(weights, deltas, strict=True):
            out.add_(d.to(dtype), alpha=w / total)
        return out.to(base.dtype)

"""Task arithmetic: θ = θ_0 + λ Σ_i w_i V_i.

Reference: Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023; mergekit's
``task_arithmetic``. Options: ``scale`` λ (> 0, default 1), ``weights`` (≥ 0, default 1).

Example: ``create_method("task_arithmetic", scale=0.5)(tv)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmret.merging.checkpoint import MergeError
from mmret.merging.methods.base import MergeMethod, check_weights, register_method, work_dtype


@register_method("task_arithmetic")
class TaskArithmetic(MergeMethod):
    def __init__(self, scale: float = 1.0, weights: Sequence[float] | None = None) -> None:
        if not float(scale) > 0 or float(scale) > 100:
            raise MergeError(f"scale (lambda) = {scale} is out of range (expected 0 < x <= 100)")
        self.scale = float(scale)
        self.weights = list(weights) if weights is not None else None

    def model_weights(self, n: int) -> list[float]:
        return check_weights(self.weights, n) or [1.0] * n

    def merge_tensor(self, key: str, base: torch.Tensor, deltas: Sequence[torch.Tensor],
                     weights: Sequence[float]) -> torch.Tensor:
        dtype = work_dtype(base)
        out = base.to(dtype, copy=True)
        for w, d in zip(weights, deltas, strict=True):
            out.add_(d.to(dtype), alpha=self.scale * w)
        return out.to(base.dtype)

"""DARE: drop and rescale, then task arithmetic (or TIES' sign election).

Per tensor and model (Yu et al., "Language Models are Super Mario", ICML 2024)::

    m ~ Bernoulli(1 − p) elementwise,  V̂_i = m ⊙ V_i · r
    r = 1/(1 − p)                        (rescale="inverse", the paper's)
    r = ‖V_i‖₁ / ‖m ⊙ V_i‖₁              (rescale="l1", mergekit 0.1.5's ``dare_linear``)
    r = 1                                (rescale="none")
    θ = θ_0 + λ Σ_i w_i V̂_i                       (sign=false: ``dare_linear``)
    θ = θ_0 + λ · disjoint mean of TIES          (sign=true:  ``dare_ties``)

The masks come from a ``torch.Generator`` seeded with ``seed``, drawn tensor by tensor (in
the task vectors' key order), model by model: the same seed gives the same merge.
Options: ``drop`` p ∈ [0, 1), ``rescale``, ``sign``, ``scale`` λ, ``weights``, ``seed``.

Example: ``create_method("dare", drop=0.9, seed=0)(tv)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmret.merging.checkpoint import MergeError
from mmret.merging.methods.base import (
    MergeMethod,
    check_fraction,
    check_weights,
    register_method,
)
from mmret.merging.methods.ties import elect_and_merge

RESCALE = ("inverse", "l1", "none")


def drop_and_rescale(delta: torch.Tensor, drop: float, rescale: str,
                     generator: torch.Generator | None = None, eps: float = 1e-7
                     ) -> torch.Tensor:
    """``m ⊙ delta · r`` with ``m ~ Bernoulli(1 − drop)`` (module docstring)."""
    if drop <= 0:
        return delta
    work = delta.float() if delta.dtype in (torch.float16,) else delta
    mask = torch.bernoulli(torch.full_like(work, 1.0 - drop), generator=generator)
    kept = work * mask
    if rescale == "inverse":
        kept = kept / (1.0 - drop)
    elif rescale == "l1":
        before, after = work.abs().sum(), kept.abs().sum()
        if before >= eps and after >= eps:
            kept = kept * (before / after)
    return kept.to(delta.dtype)


@register_method("dare")
class Dare(MergeMethod):
    def __init__(self, drop: float = 0.9, rescale: str = "inverse", sign: bool = False,
                 scale: float = 1.0, weights: Sequence[float] | None = None,
                 seed: int = 0) -> None:
        self.drop = check_fraction(drop, "drop", low_open=False)
        if rescale not in RESCALE:
            raise MergeError(f"rescale must be one of {RESCALE}, got {rescale!r}")
        if not float(scale) > 0 or float(scale) > 100:
            raise MergeError(f"scale (lambda) = {scale} is out of range (expected 0 < x <= 100)")
        self.rescale, self.sign, self.scale = rescale, bool(sign), float(scale)
        self.weights = list(weights) if weights is not None else None
        self.seed = int(seed)
        self._generator: torch.Generator | None = None

    def model_weights(self, n: int) -> list[float]:
        self._generator = torch.Generator().manual_seed(self.seed)
        return check_weights(self.weights, n) or [1.0] * n

    def merge_tensor(self, key: str, base: torch.Tensor, deltas: Sequence[torch.Tensor],
                     weights: Sequence[float]) -> torch.Tensor:
        dropped = [drop_and_rescale(d, self.drop, self.rescale, self._generator)
                   for d in deltas]
        if self.sign:
            mixed = elect_and_merge(torch.stack(dropped),
                                    torch.tensor(weights, dtype=base.dtype))
        else:
            mixed = sum(w * d for w, d in zip(weights, dropped, strict=True))
        return (base + self.scale * mixed).to(base.dtype)

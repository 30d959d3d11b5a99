"""DARE: drop and rescale, then task arithmetic (or TIES' sign election).

Per tensor and model (Yu et al., "Language Models are Super Mario", ICML 2024)::

    m ~ Bernoulli(1 − p) elementwise,  V̂_i = m ⊙ V_i · r
    r = 1/(1 − p)                        (rescale="inverse", the paper's)
    r = ‖V_i‖₁ / ‖m ⊙ V_i‖₁              (rescale="l1", mergekit 0.1.5's ``dare_linear``)
    r = 1                                (rescale="none")
    θ = θ_0 + λ Σ_i w_i V̂_i                       (sign=false: ``dare_linear``)
    θ = θ_0 + λ · disjoint mean of TIES          (sign=true:  ``dare_ties``)

The masks are seeded by ``seed``, tensor by tensor (in the task vectors' key order), model
by model: the same seed gives the same merge. Three exact samplers of an i.i.d.
Bernoulli(1 − p) mask (``sampler``):

* ``hash`` (numba, the ``merge`` extra): counter-based — element j's keep decision is a
  SplitMix64 hash of (seed, tensor, model, j) compared with round((1 − p)·2^32)
  (:mod:`.dare_kernels`), so the masks and the merge
  ``θ_0 + Σ_i λ w_i r (keep_i ⊙ V_i)`` are one vectorised pass over the elements for up to
  8 models (rescale ``inverse`` or ``none``, no sign election; otherwise the masks as arrays).

* ``uniform``: ``m = [u < 1 − p]``, ``u = torch.rand`` in the tensor's dtype — the very
  draws (and mask) of ``torch.bernoulli(full(1 − p))`` with the same generator, so the same
  seed gives mergekit's mask; about 3× faster than ``torch.bernoulli``.
* ``gaps``: the kept positions directly, as cumulative sums of geometric gaps
  ``G = 1 + ⌊log(U) / log p⌋`` (U uniform in (0, 1], float32 draws: 2^-24 resolution, as the
  uniform sampler's), i.e. ≈ n(1 − p) draws instead of n; without sign election the merge
  then only touches the kept entries (``θ_0`` copied once, ``λ w_i r`` times the kept
  entries of V_i added in place).
* ``auto`` (default): ``hash`` when numba imports; else ``gaps`` when 1 − p ≤ 0.25 (where it
  is faster), else ``uniform``. For mergekit's very masks (its parity tests) pass
  ``sampler: uniform`` and seed torch's global generator as mergekit does.

Options: ``drop`` p ∈ [0, 1), ``rescale``, ``sign``, ``scale`` λ, ``weights``, ``seed``,
``sampler``.

Example: ``create_method("dare", drop=0.9, seed=0)(tv)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mmret.merging.checkpoint import MergeError
from mmret.merging.methods import dare_kernels
from mmret.merging.methods.base import (
    MergeMethod,
    check_fraction,
    check_weights,
    register_method,
    work_dtype,
)
from mmret.merging.methods.ties import elect_and_merge

RESCALE = ("inverse", "l1", "none")
SAMPLERS = ("auto", "uniform", "gaps", "hash")
GAPS_BELOW = 0.25  # auto: the gap sampler when the keep fraction 1 − p is at most this


def resolve_sampler(sampler: str, drop: float) -> str:
    """``auto`` → ``hash`` with numba, else ``gaps`` when ``1 − drop ≤ GAPS_BELOW``, else
    ``uniform``; ``hash`` without numba is an error."""
    if sampler == "hash" and not dare_kernels.available():
        raise MergeError("dare sampler 'hash' needs numba (pip install 'mmret[merge]')")
    if sampler != "auto":
        return sampler
    if dare_kernels.available():
        return "hash"
    return "gaps" if 1.0 - drop <= GAPS_BELOW else "uniform"


def kept_positions(n: int, keep: float, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """Sorted positions in ``[0, n)`` of an i.i.d. Bernoulli(``keep``) mask, from geometric
    gaps (module docstring); int64."""
    if keep >= 1 or n == 0:
        return torch.arange(n)
    log_drop = math.log1p(-keep)
    chunks, end = [], -1
    while end < n - 1:
        mean = (n - 1 - end) * keep
        m = int(mean + 6.0 * math.sqrt(mean * (1.0 - keep)) + 16)
        u = torch.rand(m, generator=generator, dtype=torch.float32).double()
        gaps = u.neg_().add_(1.0).log_().div_(log_drop).floor_().long()  # G − 1
        pos = gaps.cumsum_(0).add_(torch.arange(end + 1, end + 1 + m))
        chunks.append(pos)
        end = int(pos[-1])
    pos = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    return pos[: int(torch.searchsorted(pos, n))]


def rescale_factor(delta: torch.Tensor, kept: torch.Tensor, drop: float, rescale: str,
                   eps: float = 1e-7) -> float | torch.Tensor:
    """``r`` for the kept entries ``kept`` (any layout) of ``delta`` (module docstring)."""
    if rescale == "inverse":
        return 1.0 / (1.0 - drop)
    if rescale == "l1":
        before, after = delta.abs().sum(), kept.abs().sum()
        if before >= eps and after >= eps:
            return before / after
    return 1.0


def drop_and_rescale(delta: torch.Tensor, drop: float, rescale: str,
                     generator: torch.Generator | None = None, eps: float = 1e-7,
                     sampler: str = "uniform", stream: tuple[int, int, int] | None = None
                     ) -> torch.Tensor:
    """``m ⊙ delta · r`` with ``m ~ Bernoulli(1 − drop)`` (module docstring); the ``hash``
    sampler takes its mask from ``stream = (seed, tensor, model)``."""
    if drop <= 0:
        return delta
    work = delta.float() if delta.dtype in (torch.float16, torch.bfloat16) else delta
    sampler = resolve_sampler(sampler, drop)
    if sampler == "hash":
        if stream is None:
            raise MergeError("dare sampler 'hash' needs stream=(seed, tensor, model)")
        keep = dare_kernels.keep_mask(work.numel(), 1.0 - drop, *stream)
        kept = torch.where(torch.from_numpy(keep).reshape(work.shape), work, 0.0)
        r = rescale_factor(work, kept, drop, rescale, eps)
        return (kept.mul_(r) if not isinstance(r, float) or r != 1.0 else kept).to(delta.dtype)
    if sampler == "gaps":
        flat = work.reshape(-1)
        pos = kept_positions(flat.numel(), 1.0 - drop, generator)
        values = flat.index_select(0, pos)
        kept = torch.zeros_like(flat)
        kept[pos] = values * rescale_factor(flat, values, drop, rescale, eps)
        return kept.reshape(delta.shape).to(delta.dtype)
    mask = torch.rand(work.shape, generator=generator, dtype=work.dtype) < 1.0 - drop
    kept = torch.where(mask, work, 0.0)
    r = rescale_factor(work, kept, drop, rescale, eps)
    return (kept.mul_(r) if not isinstance(r, float) or r != 1.0 else kept).to(delta.dtype)


@register_method("dare")
class Dare(MergeMethod):
    def __init__(self, drop: float = 0.9, rescale: str = "inverse", sign: bool = False,
                 scale: float = 1.0, weights: Sequence[float] | None = None,
                 seed: int = 0, sampler: str = "auto") -> None:
        self.drop = check_fraction(drop, "drop", low_open=False)
        if rescale not in RESCALE:
            raise MergeError(f"rescale must be one of {RESCALE}, got {rescale!r}")
        if not float(scale) > 0 or float(scale) > 100:
            raise MergeError(f"scale (lambda) = {scale} is out of range (expected 0 < x <= 100)")
        self.rescale, self.sign, self.scale = rescale, bool(sign), float(scale)
        self.weights = list(weights) if weights is not None else None
        self.seed = int(seed)
        if sampler not in SAMPLERS:
            raise MergeError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        self.sampler = sampler
        self._generator: torch.Generator | None = None
        self._tensor = 0

    def model_weights(self, n: int) -> list[float]:
        self._generator = torch.Generator().manual_seed(self.seed)
        self._tensor = -1
        return check_weights(self.weights, n) or [1.0] * n

    def merge_tensor(self, key: str, base: torch.Tensor, deltas: Sequence[torch.Tensor],
                     weights: Sequence[float]) -> torch.Tensor:
        sampler = resolve_sampler(self.sampler, self.drop)
        self._tensor += 1
        if self.drop > 0 and not self.sign:
            if (sampler == "hash" and self.rescale != "l1" and base.numel() > 0
                    and work_dtype(base) == base.dtype
                    and len(deltas) <= dare_kernels.FUSED_MAX):
                return self._merge_fused(base, deltas, weights)
            if sampler == "gaps":
                return self._merge_sparse(base, deltas, weights)
        dropped = [drop_and_rescale(d, self.drop, self.rescale, self._generator,
                                    sampler=sampler, stream=(self.seed, self._tensor, i))
                   for i, d in enumerate(deltas)]
        if self.sign:
            mixed = elect_and_merge(torch.stack(dropped),
                                    torch.tensor(weights, dtype=base.dtype))
        else:
            mixed = sum(w * d for w, d in zip(weights, dropped, strict=True))
        return (base + self.scale * mixed).to(base.dtype)

    def _merge_fused(self, base: torch.Tensor, deltas: Sequence[torch.Tensor],
                     weights: Sequence[float]) -> torch.Tensor:
        """``hash`` masks without sign election: θ_0 + Σ_i λ w_i r (keep_i ⊙ V_i) in one
        pass (:func:`.dare_kernels.fused_merge`; the masks of :func:`drop_and_rescale`)."""
        r = 1.0 / (1.0 - self.drop) if self.rescale == "inverse" else 1.0
        out = torch.empty_like(base)
        dare_kernels.fused_merge(
            out.view(-1).numpy(), base.reshape(-1).contiguous().numpy(),
            tuple(d.to(base.dtype).reshape(-1).contiguous().numpy() for d in deltas),
            [self.scale * w * r for w in weights], 1.0 - self.drop, self.seed, self._tensor)
        return out

    def _merge_sparse(self, base: torch.Tensor, deltas: Sequence[torch.Tensor],
                      weights: Sequence[float]) -> torch.Tensor:
        """Without sign election: θ_0 + Σ_i λ w_i r_i (kept entries of V_i), touching only
        the kept entries (the same masks as :func:`drop_and_rescale` with ``gaps``)."""
        dtype = work_dtype(base)
        out = base.to(dtype, copy=True)
        flat_out = out.view(-1)
        for w, d in zip(weights, deltas, strict=True):
            flat = d.to(dtype).reshape(-1)
            pos = kept_positions(flat.numel(), 1.0 - self.drop, self._generator)
            values = flat.index_select(0, pos)
            r = rescale_factor(flat, values, self.drop, self.rescale)
            flat_out.index_add_(0, pos, values, alpha=float(self.scale * w * r))
        return out.to(base.dtype)

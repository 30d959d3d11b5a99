"""Optional numba kernels for TIES (exact; the torch code in :mod:`.ties` is the fallback).

Two kernels, both single passes over memory:

* :func:`kth_largest_abs` — the exact k-th largest ``|x|`` of a flat array without sorting it:
  the k-th magnitude is estimated from a strided sample of ``SAMPLE`` elements, a bracket
  ``[lo, hi]`` of ±(4σ + 2) sample ranks around it is taken (σ = the binomial spread of a
  sample rank), one pass counts ``|x| > hi`` and gathers the few ``lo ≤ |x| ≤ hi``, and
  ``np.partition`` finds the k-th among those. If the bracket misses (the count above ``hi``
  is already ≥ k, or the gathered ones do not reach k) it returns
  ``nan`` and the caller uses the exact ``torch.kthvalue`` — the result is exact either way.
  Tensors of at most ``2·SAMPLE`` elements are sorted whole.
* :func:`ties_merge` — sign election and disjoint mean of all N trimmed deltas fused into
  one loop over elements (trim by the per-model thresholds, sums in float64):
  ``γ = sign(Σ w_i τ̂_i)`` (0 → +), ``θ = θ_0 + λ Σ_{sign(w_i τ̂_i)=γ} w_i τ̂_i /
  Σ_{…} w_i`` (0 → 1).

numba is the optional ``merge`` extra (``pip install mmret[merge]``; ``make setup`` has it):
:func:`available` says whether it imports; the kernels are compiled on first use (a few seconds; cached on disk by numba). Measured on one 2-core
CPU thread for a 1536×384 float32 tensor: the threshold pass ≈ 1.2–1.7 ms per model (vs
``torch.kthvalue`` ≈ 12 ms), the fused merge of 3 models ≈ 2.1 ms (vs one ``add_`` ≈ 0.1 ms
and the output's first touch ≈ 1 ms).

Example::

    if available():
        thr, count = kth_largest_abs(x.numpy(), k)
"""

from __future__ import annotations

import functools
import math

import numpy as np

SAMPLE = 4096


@functools.cache
def _kernels():
    import numba

    @numba.njit(cache=True, nogil=True)
    def kth_abs(x, k, sample):
        n = x.size
        if n <= 2 * sample:
            a = np.abs(x)
            a.sort()
            thr = a[n - k]
            count = 0
            for j in range(n):
                if a[j] >= thr:
                    count += 1
            return thr, count
        step = n // sample
        s = n // step
        samp = np.empty(s, dtype=x.dtype)
        for i in range(s):
            samp[i] = abs(x[i * step])
        samp.sort()
        r = k * s / n                      # the k-th largest's rank from the top, in the sample
        margin = 4.0 * math.sqrt(r * (1.0 - r / s)) + 2.0
        pos = s - r                        # its ascending position in the sample
        lo_i = int(math.floor(pos - margin))
        hi_i = int(math.ceil(pos + margin))
        lo = samp[lo_i] if lo_i >= 0 else -1.0
        hi = samp[hi_i] if hi_i < s else np.inf
        # n + 1 slots, only the first m + 1 ever written (untouched pages cost nothing)
        buf = np.empty(n + 1, dtype=x.dtype)
        above = 0
        m = 0
        for j in range(n):  # branch-free: the gather writes every element, keeps the inside
            v = abs(x[j])
            above += v > hi
            buf[m] = v
            m += (v >= lo) & (v <= hi)
        if above >= k or above + m < k:
            return np.nan, -1
        inside = buf[:m]
        idx = m - (k - above)              # ascending index of the (k − above)-th largest
        thr = np.partition(inside, idx)[idx]
        count = above
        for j in range(m):
            if inside[j] >= thr:
                count += 1
        return thr, count

    @numba.njit(cache=True, nogil=True)
    def merge(out, base, deltas, thr, w, scale):
        n = base.size
        nm = len(deltas)
        for j in range(n):
            s = 0.0
            for i in range(nm):
                x = deltas[i][j]
                if abs(x) >= thr[i]:
                    s += w[i] * x
            num = 0.0
            den = 0.0
            for i in range(nm):
                x = deltas[i][j]
                if abs(x) >= thr[i]:
                    y = w[i] * x
                    if (y > 0.0 and s >= 0.0) or (y < 0.0 and s < 0.0):
                        num += y
                        den += w[i]
            if den == 0.0:
                den = 1.0
            out[j] = base[j] + scale * (num / den)

    return kth_abs, merge


@functools.cache
def available() -> bool:
    """Whether numba imports (the fast path is used only then)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def kth_largest_abs(x: np.ndarray, k: int) -> tuple[float, int]:
    """``(t, c)``: ``t`` the exact k-th largest ``|x|`` of the flat array ``x`` and ``c`` the
    number of ``|x| ≥ t`` (``c > k`` means ties at ``t``); ``(nan, -1)`` when the sampled
    bracket missed (module docstring)."""
    thr, count = _kernels()[0](x, int(k), SAMPLE)
    return float(thr), int(count)


def ties_merge(out: np.ndarray, base: np.ndarray, deltas: tuple[np.ndarray, ...],
               thresholds: np.ndarray, weights: np.ndarray, scale: float) -> None:
    """Write ``θ_0 + λ · disjoint mean`` into ``out`` (flat arrays of one dtype), each delta
    trimmed to ``|δ_i| ≥ thresholds[i]`` (module docstring)."""
    _kernels()[1](out, base, deltas, thresholds, weights, float(scale))


__all__ = ["SAMPLE", "available", "kth_largest_abs", "ties_merge"]

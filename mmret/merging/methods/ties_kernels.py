"""Optional numba kernels for TIES (exact; the torch code in :mod:`.ties` is the fallback).

The kernels themselves are in :mod:`.ties_jit` (imported only when numba is, module-level
so that numba's disk cache serves the next process); this module drives them.

* :func:`kth_largest_abs` — the exact k-th largest ``|x|`` of a flat array, without sorting
  it, in two passes over the array (typical; both vectorised):

  1. a strided sample of ``SAMPLE`` elements gives a bracket of ±(2.5σ + 2) sample ranks
     around the k-th (σ the binomial spread of a sample rank); its ranks come from exact
     order statistics of the sample by bisection on the float's bit pattern (vectorised
     counts: a quickselect's branches cannot be predicted);
  2. the first pass reads the array from memory and counts ``#(|x| > t)`` at four
     thresholds (the bracket's ends and its thirds: memory-bound, so the two inner compares
     are free). The k-th now lies in one third, with the invariant ``A < k ≤ B``
     (``A``, ``B`` the counts above its ends). A missed bracket widens by the sample first,
     then to the sample's maximum, the array's, or down to −1;
  3. the second pass counts at two thresholds around the k-th's known rank ``k − A``
     (±(3σ + 8) ranks), placed by an inverse quadratic through three points of the counting
     curve (the third's ends and the next threshold: the density's slope would make a
     linear guess miss by hundreds of ranks), and gathers the values between them (one
     encoded counter per 64-element block; blocks that hold any are gathered without
     branches): typically ≈ 130 values of 590 k;
  4. if it holds the k-th, ``np.partition`` picks it among the gathered values; otherwise
     the bracket shrinks to the part that holds it and the loop goes on (linear
     interpolation, more passes: rare).

  Arrays of at most ``2·SAMPLE`` elements take the order statistic of ``|x|`` directly.
  The result is exact for any data (ties, zeros, a sample that misses): the bracket only
  decides how fast it is found.
* the fused merge — sign election and disjoint mean of the N trimmed deltas in one
  vectorised loop over elements, generated for each N ≤ ``FUSED_MAX`` (the torch code
  for more models), in the tensors' dtype with the torch code's order of operations
  (tests: equal to it):
  ``y_i = w_i δ_i [|δ_i| ≥ t_i]``, ``γ = sign(Σ y_i)`` (0 → +),
  ``θ = θ_0 + λ Σ_{y_i γ > 0} y_i / Σ_{y_i γ > 0} w_i`` (0 → 1).
* :func:`ties_merge_segments` — the thresholds and the fused merge of tensors packed end to
  end, in one call (one per big tensor; all the small ones, biases and norms, together).

numba is the optional ``merge`` extra (``pip install mmret[merge]``; ``make setup`` has it):
:func:`available` says whether it imports. The kernels compile on first use: ≈ 11 s the
first time on this machine, then ≈ 1.6 s per process from numba's cache, plus ≈ 1 s for
the code generated per N. Measured on one 2-core AMD EPYC thread (AVX-512), 1536×384
float32, warm memory: ``kth_largest_abs`` ≈ 0.17 ms per model (``torch.kthvalue`` 12 ms),
the fused merge of 3 models ≈ 0.25 ms, against ≈ 0.25 ms for ``clone`` + 3 ``add_``.

Example::

    if available():
        thr, count = kth_largest_abs(x.numpy(), k)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from mmret.merging.methods.jit import (
    FUSED_MAX,
    available,
    check_models,
    compile_generated,
)

SAMPLE = 1024
GATHER_MAX = 512


@functools.cache
def _jit():
    """:mod:`.ties_jit` (numba is imported here)."""
    from mmret.merging.methods import ties_jit

    return ties_jit


def _fused_merge_source(n_models: int) -> str:
    """Source of the fused TIES merge for ``n_models`` deltas (one select per model)."""
    idx = range(n_models)
    args = ", ".join([f"d{i}" for i in idx] + [f"t{i}" for i in idx] + [f"w{i}" for i in idx])
    lines = [f"def merge(out, base, {args}, scale):",
             "    zero = out.dtype.type(0.0)",
             "    one = out.dtype.type(1.0)",
             "    for j in range(base.size):"]
    for i in idx:
        lines += [f"        x{i} = d{i}[j]",
                  f"        y{i} = w{i} * x{i} if abs(x{i}) >= t{i} else zero"]
    total = " + ".join(f"y{i}" for i in idx)
    lines.append(f"        g = one if {total} >= zero else -one")
    lines += ["        num = zero", "        den = zero"]
    for i in idx:  # conditional sums, so that each term is one masked add
        lines += [f"        k{i} = y{i} * g > zero",
                  f"        num = num + y{i} if k{i} else num",
                  f"        den = den + w{i} if k{i} else den"]
    lines.append("        out[j] = base[j] + scale * (num / (den if den != zero else one))")
    return "\n".join(lines) + "\n"


@functools.cache
def _fused_merge(n_models: int):
    return compile_generated(_fused_merge_source(n_models), "merge")


def _segments_merge_source(n_models: int) -> str:
    """Source of the TIES merge of tensors packed end to end (one call: a big tensor alone,
    or all the small ones together): each threshold by ``kth_abs``, then ``merge``."""
    idx = range(n_models)
    ds = ", ".join(f"d{i}" for i in idx)
    ws = ", ".join(f"w{i}" for i in idx)
    lines = [f"def merge_segments(out, base, {ds}, offsets, ks, {ws}, scale, tied, ikind, "
             "sample, gather_max):",
             "    for s in range(offsets.size - 1):",
             "        a = offsets[s]",
             "        b = offsets[s + 1]",
             "        k = ks[s]"]
    for i in idx:
        lines += [f"        t{i} = zero_of(d{i})",
                  "        if k < b - a:",
                  f"            t{i}, c{i} = kth_abs(d{i}[a:b], k, sample, gather_max, ikind)",
                  f"            tied[s] |= c{i} != k"]
    ts = ", ".join(f"t{i}" for i in idx)
    lines.append(f"        merge(out[a:b], base[a:b], {', '.join(f'd{i}[a:b]' for i in idx)}, "
                 f"{ts}, {ws}, scale)")
    return "\n".join(lines) + "\n"


@functools.cache
def _segments_merge(n_models: int):
    return compile_generated(_segments_merge_source(n_models), "merge_segments",
                             {"kth_abs": _jit().kth_abs, "merge": _fused_merge(n_models),
                              "zero_of": _jit().zero_of})


def ties_merge_segments(out: np.ndarray, base: np.ndarray, deltas: tuple[np.ndarray, ...],
                        offsets: np.ndarray, ks: np.ndarray, weights: Sequence[float],
                        scale: float) -> np.ndarray:
    """The fused TIES merge of tensors packed end to end in flat arrays (tensor ``s`` is
    ``[offsets[s], offsets[s + 1])``, trimmed to its ``ks[s]`` largest ``|δ_i|``; ``ks[s]``
    equal to its size: no trim) in one call, each threshold by :func:`kth_largest_abs`.
    Returns which tensors have ties at a threshold (those need the stable-sort trim)."""
    check_models(len(deltas))
    kind = out.dtype.type
    tied = np.zeros(len(offsets) - 1, dtype=np.bool_)
    _segments_merge(len(deltas))(out, base, *deltas, np.asarray(offsets, dtype=np.int64),
                                 np.asarray(ks, dtype=np.int64), *(kind(w) for w in weights),
                                 kind(scale), tied, _int_like(out), SAMPLE, GATHER_MAX)
    return tied


def _int_like(x: np.ndarray) -> np.ndarray:
    """An empty array of the integer type as wide as x's float type (the kernels' view of
    its bit patterns)."""
    return np.empty(0, dtype=np.int32 if x.dtype == np.float32 else np.int64)


def kth_largest_abs(x: np.ndarray, k: int) -> tuple[float, int]:
    """``(t, c)``: ``t`` the exact k-th largest ``|x|`` of the flat array ``x`` (1 ≤ k ≤
    x.size) and ``c`` the number of ``|x| ≥ t`` (``c > k`` means ties at ``t``)."""
    thr, count = _jit().kth_abs(x, int(k), SAMPLE, GATHER_MAX, _int_like(x))
    return float(thr), int(count)


__all__ = ["FUSED_MAX", "GATHER_MAX", "SAMPLE", "available", "kth_largest_abs",
           "ties_merge_segments"]

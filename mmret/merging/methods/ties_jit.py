"""The numba kernels of :mod:`.ties_kernels` (imported only when numba is; module-level
functions, so that numba's on-disk cache finds them again in the next process)."""

from __future__ import annotations

import math

import numpy as np

from mmret.extras import require
from mmret.merging.methods.jit import JIT_OPTIONS

numba = require("numba", "merge")

COUNT_BLOCK = 4096  # float counters stay exact up to 2**24
_JIT = {"cache": True, **JIT_OPTIONS}
_JIT_SUM = {**_JIT, "fastmath": {"reassoc"}}  # lets LLVM vectorise the counters' sums


@numba.njit(**_JIT)
def zero_of(x):
    """0 in x's dtype."""
    return x.dtype.type(0.0)



@numba.njit(**_JIT_SUM)
def count_above4(x, t):
    """#|x| > t[j] for four thresholds in one pass (the first pass reads the array from
    memory, slower than four compares)."""
    one = x.dtype.type(1.0)
    zero = x.dtype.type(0.0)
    t0, t1, t2, t3 = t[0], t[1], t[2], t[3]
    c = np.zeros(4, dtype=np.int64)
    for start in range(0, x.size, COUNT_BLOCK):
        y = x[start:start + COUNT_BLOCK]
        f0 = zero
        f1 = zero
        f2 = zero
        f3 = zero
        for j in range(y.size):
            v = abs(y[j])
            f0 += one if v > t0 else zero
            f1 += one if v > t1 else zero
            f2 += one if v > t2 else zero
            f3 += one if v > t3 else zero
        c[0] += int(f0)
        c[1] += int(f1)
        c[2] += int(f2)
        c[3] += int(f3)
    return c

@numba.njit(**_JIT)
def count_above(x, t1, t2):
    """(#|x| > t1, #|x| > t2) (the rare passes: a missed bracket, a wide one)."""
    t = np.empty(4, dtype=x.dtype)
    t[0] = t1
    t[1] = t2
    t[2] = t2
    t[3] = t2
    c = count_above4(x, t)
    return c[0], c[1]


@numba.njit(**_JIT_SUM)
def count_gather(x, lo, hi, cap):
    """(#|x| > lo, #|x| > hi, the values lo < |x| ≤ hi): one pass of vectorised counts
    over 64-element blocks, gathering (without branches) from the blocks that hold any
    (only the first ``cap`` kept: a larger count means the buffer is incomplete)."""
    n = x.size
    out = np.empty(cap + 64, dtype=x.dtype)
    one = x.dtype.type(1.0)
    zero = x.dtype.type(0.0)
    above = x.dtype.type(128.0)         # one counter per block: 128·#(> hi) + #inside
    got = 0
    c_lo = 0
    c_hi = 0
    blocks = n // 64
    for b in range(blocks):
        start = b * 64
        f = zero
        for j in range(start, start + 64):
            v = abs(x[j])
            f += above if v > hi else (one if v > lo else zero)
        e = int(f)
        c = e >> 7
        a = c + (e & 127)
        c_lo += a
        c_hi += c
        if a != c and got + (a - c) <= cap:
            for j in range(start, start + 64):
                v = abs(x[j])
                out[got] = v
                got += (v > lo) & (v <= hi)
    for j in range(blocks * 64, n):
        v = abs(x[j])
        c_lo += v > lo
        c_hi += v > hi
        if v > lo and v <= hi and got < cap:
            out[got] = v
            got += 1
    return c_lo, c_hi, out[:got]

@numba.njit(**_JIT_SUM)
def count_below(x, t, inclusive):
    """#(x ≤ t) (``inclusive``) or #(x < t), vectorised (float counters over blocks, as
    :func:`count_above`)."""
    one = x.dtype.type(1.0)
    zero = x.dtype.type(0.0)
    c = 0
    for start in range(0, x.size, COUNT_BLOCK):
        y = x[start:start + COUNT_BLOCK]  # indexed from 0, so that LLVM vectorises
        f = zero
        if inclusive:
            for j in range(y.size):
                f += one if y[j] <= t else zero
        else:
            for j in range(y.size):
                f += one if y[j] < t else zero
        c += int(f)
    return c


@numba.njit(**_JIT)
def order_statistic(x, r, scratch, bits):
    """The exact r-th smallest (0-based) of the non-negative ``x``, by bisection on the
    float's bit pattern (monotone for x ≥ 0): counting passes, no branches on the data,
    faster than a quickselect whose branches cannot be predicted. ``scratch`` is a
    one-element array of x's dtype, ``bits`` its integer view."""
    scratch[0] = x.max()
    lo = -1                             # count(x ≤ value(lo)) ≤ r < count(x ≤ value(hi))
    hi = bits[0]
    while hi - lo > 1:
        mid = lo + ((hi - lo) >> 1)  # lo + hi of float64 bit patterns can pass 2**63
        bits[0] = mid
        if count_below(x, scratch[0], True) > r:
            hi = mid
        else:
            lo = mid
    bits[0] = hi
    return scratch[0]

@numba.njit(**_JIT)
def sample_ranks(x, lo_r, hi_r, ikind):
    """The ascending values of ranks lo_r … hi_r (0-based, inclusive) of the
    non-negative sample ``x``: two order statistics, then a sort of what lies between."""
    scratch = np.empty(1, dtype=x.dtype)
    bits = scratch.view(ikind.dtype)
    v_lo = order_statistic(x, lo_r, scratch, bits)
    v_hi = order_statistic(x, hi_r, scratch, bits)
    between = np.empty(x.size, dtype=x.dtype)
    m = 0
    below = 0
    for j in range(x.size):
        v = x[j]
        below += v < v_lo
        if v_lo <= v <= v_hi:
            between[m] = v
            m += 1
    ranked = np.sort(between[:m])       # sorted(x)[below : below + m]
    return ranked[lo_r - below:hi_r - below + 1]

@numba.njit(**_JIT)
def inverse_quadratic(ca, ta, cb, tb, cc, tc, c):
    """The threshold t at which the count is ``c``, by the quadratic t(count) through
    three (count, t) points (nan if two counts are equal)."""
    ca, cb, cc, c = float(ca), float(cb), float(cc), float(c)
    if ca == cb or ca == cc or cb == cc:
        return math.nan
    return (ta * (c - cb) * (c - cc) / ((ca - cb) * (ca - cc))
            + tb * (c - ca) * (c - cc) / ((cb - ca) * (cb - cc))
            + tc * (c - ca) * (c - cb) / ((cc - ca) * (cc - cb)))

@numba.njit(**_JIT)
def kth_abs(x, k, sample, gather_max, ikind):
    """(t, c): the exact k-th largest |x| and #(|x| ≥ t), by the passes described in
    :mod:`.ties_kernels` (``ikind``: an empty integer array as wide as x's floats)."""
    n = x.size
    if n <= 2 * sample:                 # small: the order statistic of |x| directly
        a = np.abs(x)
        scratch = np.empty(1, dtype=x.dtype)
        thr = order_statistic(a, n - k, scratch, scratch.view(ikind.dtype))
        return thr, n - count_below(a, thr, False)
    step = n // sample
    s = n // step
    samp = np.empty(s, dtype=x.dtype)
    for i in range(s):
        samp[i] = abs(x[i * step])
    r = k * s / n                       # the k-th largest's rank from the top, in the sample
    margin = 2.5 * math.sqrt(r * (1.0 - r / s)) + 2.0
    pos = s - r
    lo_i = int(math.floor(pos - margin))
    hi_i = int(math.ceil(pos + margin))
    top = samp.max()
    # four thresholds at sample ranks lo_i, ⅓, ⅔ and hi_i of the bracket: the first pass
    # is memory-bound, so the two inner compares cost nothing and the pass ends with
    # the k-th in a third of the bracket and three points of the counting curve
    lo_c = max(lo_i, 0)
    hi_c = min(hi_i, s - 1)
    ranked = sample_ranks(samp, lo_c, hi_c, ikind)  # sample ranks lo_c … hi_c
    tt4 = np.empty(4, dtype=x.dtype)    # thresholds in the array's dtype
    for q in range(4):
        tt4[q] = ranked[(hi_c - lo_c) * q // 3]
    if lo_i < 0:
        tt4[0] = -1.0
    if hi_i >= s:
        tt4[3] = top
    c4 = count_above4(x, tt4)
    j4 = -1                             # which third holds the k-th (-1: none)
    if c4[3] < k <= c4[0]:
        j4 = 0
        while c4[j4 + 1] >= k:
            j4 += 1
        lo, big_b, hi, a_cnt = tt4[j4], c4[j4], tt4[j4 + 1], c4[j4 + 1]
    else:
        lo, big_b, hi, a_cnt = tt4[0], c4[0], tt4[3], c4[3]
    tt = np.empty(2, dtype=x.dtype)
    # invariant from here on: a_cnt = #(|x| > hi) < k <= big_b = #(|x| > lo)
    wide = 2 * (hi_c - lo_c) + 2         # a missed bracket widens by this many ranks first
    scratch = np.empty(1, dtype=x.dtype)
    bits = scratch.view(ikind.dtype)
    if a_cnt >= k and hi_c + wide < s:
        tt[1] = order_statistic(samp, hi_c + wide, scratch, bits)
        g1, g2 = count_above(x, hi, tt[1])
        if g2 < k:
            lo, big_b, hi, a_cnt = hi, g1, tt[1], g2
    while a_cnt >= k:                   # the k-th is above hi: widen upwards
        lo, big_b = hi, a_cnt
        if hi < top:
            tt[1] = top
        else:
            mx = hi
            for j in range(n):
                mx = max(mx, abs(x[j]))
            tt[1] = mx
        a_cnt, _ = count_above(x, tt[1], tt[1])
        hi = tt[1]
    if big_b < k and lo_c - wide >= 0:
        tt[0] = order_statistic(samp, lo_c - wide, scratch, bits)
        g1, g2 = count_above(x, tt[0], lo)
        if g1 >= k:
            lo, big_b, hi, a_cnt = tt[0], g1, lo, g2
    if big_b < k:                       # the k-th is at or below lo: widen downwards
        hi, a_cnt = lo, big_b
        tt[0] = -1.0
        lo, big_b = tt[0], n
    inside = np.empty(0, dtype=x.dtype)
    done = False
    for _ in range(32):
        m = big_b - a_cnt
        if m <= gather_max:
            break
        rr = k - a_cnt                  # the k-th's rank from the top inside (lo, hi]
        d = 3.0 * math.sqrt(rr * (1.0 - rr / m)) + 8.0
        width = hi - lo
        tt[0] = hi - min(rr + d, m) / m * width
        tt[1] = hi - max(rr - d, 0.0) / m * width
        if j4 >= 0:                     # the first pass's curvature: inverse quadratic
            o = j4 - 1 if j4 > 0 else j4 + 2  # through the bracket and one more point
            t_lo = inverse_quadratic(big_b, lo, a_cnt, hi, c4[o], tt4[o], k + d)
            t_hi = inverse_quadratic(big_b, lo, a_cnt, hi, c4[o], tt4[o], k - d)
            if lo <= t_lo < t_hi <= hi:
                tt[0] = t_lo
                tt[1] = t_hi
            j4 = -1
        if not tt[0] > lo:
            tt[0] = lo
        if not tt[1] < hi:
            tt[1] = hi
        if 2.0 * d + 1.0 <= gather_max:  # the new bracket will be small: gather it now
            g1, g2, got = count_gather(x, tt[0], tt[1], 4 * gather_max)
            if g2 < k <= g1 and got.size == g1 - g2:
                lo, big_b, hi, a_cnt = tt[0], g1, tt[1], g2
                inside = got
                done = True
                break
        else:
            g1, g2 = count_above(x, tt[0], tt[1])
        if g2 >= k:
            lo, big_b = tt[1], g2
        elif g1 < k:
            hi, a_cnt = tt[0], g1
        else:
            lo, big_b, hi, a_cnt = tt[0], g1, tt[1], g2
        if big_b - a_cnt == m:          # no progress (values equal across the bracket)
            break
    m = big_b - a_cnt
    if not done:
        inside = count_gather(x, lo, hi, m)[2]
    idx = m - (k - a_cnt)               # ascending index of the (k − A)-th largest inside
    thr = np.partition(inside, idx)[idx]
    count = a_cnt
    for j in range(m):
        if inside[j] >= thr:
            count += 1
    return thr, count

"""The numba kernels of :mod:`.dare_kernels` (imported only when numba is; module-level
functions, so that numba's on-disk cache finds them again in the next process)."""

from __future__ import annotations

import numpy as np

from mmret.extras import require
from mmret.merging.methods.jit import JIT_OPTIONS

numba = require("numba", "merge")

_U = np.uint64
GAMMA = _U(0x9E3779B97F4A7C15)
HASH_CONSTANTS = {"GAMMA": GAMMA, "M1": _U(0xBF58476D1CE4E5B9),
                  "M2": _U(0x94D049BB133111EB), "S30": _U(30), "S27": _U(27), "S31": _U(31),
                  "S32": _U(32), "LOW": _U(0xFFFFFFFF)}

M1, M2, S30, S27, S31, S32, LOW = (HASH_CONSTANTS[k] for k in ("M1", "M2", "S30", "S27",
                                                              "S31", "S32", "LOW"))


@numba.njit(cache=True, **JIT_OPTIONS)
def mix(z):
    """SplitMix64's finaliser (uint64, wrapping)."""
    z = (z ^ (z >> S30)) * M1
    z = (z ^ (z >> S27)) * M2
    return z ^ (z >> S31)


@numba.njit(cache=True, **JIT_OPTIONS)
def key(seed, tensor, pair):
    """The stream key of a pair of models in a tensor."""
    s_t = mix(mix(seed) + (tensor + np.uint64(1)) * GAMMA)
    return mix(s_t + (pair + np.uint64(1)) * GAMMA)


@numba.njit(cache=True, **JIT_OPTIONS)
def mask(out, key, high, thresh):
    """One model's keep mask from its pair's key (the high or low 32-bit half)."""
    for j in range(out.size):
        h = mix(key + (np.uint64(j) + np.uint64(1)) * GAMMA)
        half = (h >> S32) if high else (h & LOW)
        out[j] = half < thresh

"""Per-sample seeding of random image transforms.

The trainer's batch sampler may hand datasets ``(index, seed)`` keys instead of plain
indices. A dataset then runs its random transform under :func:`seeded_random`, so the
augmentation of a sample is a function of ``seed`` only (independent of the DataLoader
worker that loads it and of resuming mid-epoch).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import torch

#: Seeds are kept in [0, 2**63) (what ``torch.manual_seed`` accepts without wrapping).
_SEED_MODULUS = 2**63


@contextlib.contextmanager
def seeded_random(seed: int) -> Iterator[None]:
    """Run the body with torch's CPU RNG and Python's ``random`` seeded by ``seed``, then
    restore both (a random transform inside becomes a function of ``seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) % _SEED_MODULUS)
        state = random.getstate()
        random.seed(int(seed))
        try:
            yield
        finally:
            random.setstate(state)


def derive_seed(seed: int, stream: int) -> int:
    """An independent seed for sub-stream ``stream`` of a sample (e.g. 0 = reference image,
    1 = target image), so two images of one sample do not share their random draws."""
    return (int(seed) * 1_000_003 + 7919 * (int(stream) + 1)) % _SEED_MODULUS


def split_key(key: Any) -> tuple[int, int | None]:
    """``index`` or ``(index, seed)`` -> ``(index, seed or None)``; anything else raises."""
    if isinstance(key, tuple):
        if len(key) != 2:
            raise KeyError(f"dataset key: expected an index or an (index, seed) pair, got {key!r}")
        return int(key[0]), int(key[1])
    if isinstance(key, bool) or not isinstance(key, int) and not hasattr(key, "__index__"):
        raise KeyError(f"dataset key: expected an index or an (index, seed) pair, got {key!r}")
    return int(key), None

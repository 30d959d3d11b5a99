"""Per-sample seeding of random image transforms.

The trainer's batch sampler may hand datasets ``(index, seed)`` keys instead of plain
indices. A dataset then runs its random transform under :func:`seeded_random`, so the
augmentation of a sample is a function of ``seed`` only (independent of the DataLoader
worker that loads it and of resuming mid-epoch).

:func:`seeded_random` and :func:`split_key` are :mod:`mmret.data.images`' own (one
implementation for every dataset); this module adds :func:`derive_seed` for samples with
several images (a composed triplet's reference and target).
"""

from __future__ import annotations

from mmret.data.images import seeded_random, split_key

#: Derived seeds are kept in [0, 2**63) (what ``torch.manual_seed`` accepts without wrapping).
_SEED_MODULUS = 2**63

__all__ = ["derive_seed", "seeded_random", "split_key"]


def derive_seed(seed: int, stream: int) -> int:
    """An independent seed for sub-stream ``stream`` of a sample (e.g. 0 = reference image,
    1 = target image), so two images of one sample do not share their random draws."""
    return (int(seed) * 1_000_003 + 7919 * (int(stream) + 1)) % _SEED_MODULUS

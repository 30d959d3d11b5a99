"""Shared pieces of the composed image retrieval objectives (docs/methods.md §6).

The objectives are in ``cir_inbatch.py`` and ``cir_bank.py``:

- ``cir_inbatch`` (stage 1): InfoNCE of each composed query over the batch's targets.
- ``cir_bank`` (stage 2, scaling negatives): cross-entropy of each query over a static
  bank of every training image (or over its target and ``neg_num`` sampled negatives).

Both take L2-normalised ``query_features`` (a fusion module's output; normalised again,
which is idempotent) and normalise the target side at use: stage 1 passes raw target
features, and the bank stores raw features (the raw-feature quirk of §6), so a bank
equal to the batch's targets gives exactly the in-batch loss.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mmret.objectives.temperature import LearnableTemperature

DEFAULT_CIR_TEMPERATURE = 0.02


def cir_temperature(temperature: float | None, learn: bool, max_logit_scale: float
                    ) -> LearnableTemperature | None:
    """The objective's own τ (clamped to ``τ >= 1/max_logit_scale``), or None to use the
    model's ``logit_scale``."""
    if temperature is None:
        return None
    return LearnableTemperature(temperature, min_temperature=1.0 / max_logit_scale,
                                learnable=learn)


def check_features(name: str, x: Any, objective: str) -> Tensor:
    """``x`` if it is a (B, d) tensor, else ``ValueError`` naming ``objective`` and ``name``."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{objective}: {name} must be a (B, d) tensor, got {shape}")
    return x

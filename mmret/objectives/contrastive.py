"""Shared pieces of the contrastive objectives: temperatures and soft-target cross-entropy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LearnableTemperature(nn.Module):
    """A temperature ``τ`` stored as ``log(1/τ)`` and exposed as ``logit_scale = 1/τ``.

    ``clamp()`` keeps ``τ`` in ``[min_temperature, max_temperature]``; objectives call it
    from ``post_step`` (after each optimiser step) or before each forward, as their paper's
    reference code does. With ``learnable=False`` the value is a buffer.
    """

    def __init__(
        self,
        init: float,
        min_temperature: float | None = None,
        max_temperature: float | None = None,
        learnable: bool = True,
    ) -> None:
        super().__init__()
        if init <= 0:
            raise ValueError(f"temperature must be positive, got {init}")
        value = torch.tensor(math.log(1.0 / init), dtype=torch.float32)
        if learnable:
            self.log_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_scale", value)
        self.min_temperature = min_temperature
        self.max_temperature = max_temperature

    @property
    def temperature(self) -> float:
        return float(torch.exp(-self.log_scale.detach()))

    def logit_scale(self) -> torch.Tensor:
        """``1/τ`` as a differentiable scalar tensor."""
        return self.log_scale.exp()

    @torch.no_grad()
    def clamp(self) -> None:
        # τ ∈ [lo, hi]  ⇔  log(1/τ) ∈ [log(1/hi), log(1/lo)]
        low = math.log(1.0 / self.max_temperature) if self.max_temperature else None
        high = math.log(1.0 / self.min_temperature) if self.min_temperature else None
        self.log_scale.clamp_(min=low, max=high)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature:.4g}, "
            f"range=[{self.min_temperature}, {self.max_temperature}]"
        )


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_rows( -Σ_b targets_ab · log softmax(logits)_ab )`` for dense (row-stochastic) targets."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def same_id_targets(row_ids: torch.Tensor, col_ids: torch.Tensor) -> torch.Tensor:
    """Row-normalised multi-positive targets ``P_ab = [id_a == id_b] / Σ_b [id_a == id_b]``.

    A row without any match (cannot happen for a correctly gathered batch) raises.
    """
    match = (row_ids[:, None] == col_ids[None, :]).float()
    counts = match.sum(dim=1, keepdim=True)
    if bool((counts == 0).any()):
        raise ValueError("image_ids: some row has no positive among the columns")
    return match / counts

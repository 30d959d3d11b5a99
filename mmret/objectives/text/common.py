"""Shape checks and similarity helpers shared by the sentence-embedding objectives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: clamp for ``arccos``: keeps θ and its gradient finite at s = ±1
ACOS_EPS = 1e-6


def check_views(
    name: str,
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None = None,
    min_rows: int = 2,
) -> None:
    """Raise ``ValueError`` unless anchor/positive are (N, d) alike and negative is (M, d)."""
    if anchor.dim() != 2 or positive.shape != anchor.shape:
        raise ValueError(
            f"{name}: anchor_features {tuple(anchor.shape)} and positive_features "
            f"{tuple(positive.shape)} must both be (N, d) with the same shape"
        )
    if anchor.shape[0] < min_rows:
        raise ValueError(
            f"{name}: needs at least {min_rows} rows in anchor_features (in-batch negatives), "
            f"got {anchor.shape[0]}"
        )
    if negative is not None and (negative.dim() != 2 or negative.shape[1] != anchor.shape[1]):
        raise ValueError(
            f"{name}: negative_features {tuple(negative.shape)} must be (M, d) with "
            f"d = {anchor.shape[1]}"
        )


def candidate_similarity(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor | None = None
) -> torch.Tensor:
    """Cosine matrix ``S`` (N, N+M) of normalised anchors against [positives; negatives].

    ``S_ii`` is anchor i's positive; every other column is one of its negatives.
    """
    h = F.normalize(anchor, dim=-1)
    columns = positive if negative is None else torch.cat([positive, negative])
    return h @ F.normalize(columns, dim=-1).T


def positive_mask(sim: torch.Tensor) -> torch.Tensor:
    """Boolean (N, M) mask, True at the positives ``(i, i)``."""
    n, m = sim.shape
    return torch.eye(n, m, dtype=torch.bool, device=sim.device)


def hardest(values: torch.Tensor, largest: bool) -> torch.Tensor:
    """Per row, the max (``largest``) or min over the negative columns ``j ≠ i``."""
    fill = float("-inf") if largest else float("inf")
    masked = values.masked_fill(positive_mask(values), fill)
    return masked.amax(dim=1) if largest else masked.amin(dim=1)

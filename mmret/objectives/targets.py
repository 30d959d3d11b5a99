"""Target and pairing helpers shared by the contrastive objectives.

Soft-target cross-entropy, multi-positive targets from ids, and the expansion of N images
with K·N captions into one row per (image, caption) pair. Temperatures live in
:mod:`mmret.objectives.temperature`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def expand_to_pairs(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    image_ids: torch.Tensor | None,
    text_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Pair N images with K·N texts (image i's captions at rows K·i … K·i+K−1).

    Returns ``(image_features, text_features, image_ids)`` with one row per text: image
    rows repeated K times and ``image_ids`` (default ``arange(N)``) with them, so that a
    multi-positive objective treats an image's K captions as its positives. Rows whose
    ``text_mask`` is False (missing captions) are dropped. With K = 1 and no mask the
    inputs are returned unchanged.
    """
    n, m = image_features.shape[0], text_features.shape[0]
    if m == n and (text_mask is None or bool(text_mask.all())):
        return image_features, text_features, image_ids
    if n == 0 or m % n:
        raise ValueError(
            f"text_features has {m} rows for {n} images: expected K·N rows (image-major)"
        )
    k = m // n
    ids = image_ids if image_ids is not None else torch.arange(n, device=image_features.device)
    images = image_features.repeat_interleave(k, dim=0)
    ids = ids.repeat_interleave(k)
    if text_mask is not None and not bool(text_mask.all()):
        from mmret.distributed import get_world_size

        if get_world_size() > 1:
            raise ValueError("missing captions (text_mask) are not supported under torchrun "
                             "for paired objectives: ranks would gather unequal rows")
        images, text_features, ids = images[text_mask], text_features[text_mask], ids[text_mask]
    return images, text_features, ids

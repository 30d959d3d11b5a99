"""Composed image retrieval evaluation on features (docs/methods.md §7).

- :func:`cirr_evaluation`: R@{1,5,10,50}, R_subset@{1,2,3}, Avg (via :mod:`.cirr`);
- :func:`fashioniq_evaluation`: per-category R@10/R@50, averages, Avg (via :mod:`.fashioniq`);
- :func:`evaluate_composed_split`: either one, chosen by the split's name;

Pure tensor maths: encoding the queries and the gallery, and the picture of queries with
their top-k, are in :mod:`mmret.evaluation.cir_queries`.

Gallery features may be raw; every score here normalises both sides first (cosine).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmret.metrics.cirr import cirr_metrics
from mmret.metrics.fashioniq import FASHIONIQ_PROTOCOL, combine_fashioniq_metrics, fashioniq_metrics
from mmret.metrics.ranking import DEFAULT_CHUNK_SIZE

__all__ = [
    "cirr_evaluation",
    "evaluate_composed_split",
    "fashioniq_evaluation",
    "members_to_subset_indices",
    "unit",
]


def members_to_subset_indices(members: Sequence[Sequence[int]] | Tensor) -> Tensor:
    """CIRR ``img_set`` members (lists of gallery indices) -> LongTensor[Q, S], -1 padded."""
    if isinstance(members, Tensor):
        return members.long()
    width = max((len(m) for m in members), default=0)
    out = torch.full((len(members), width), -1, dtype=torch.long)
    for q, row in enumerate(members):
        out[q, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return out


def unit(x: Tensor) -> Tensor:
    return F.normalize(x.float(), dim=-1)


def cirr_evaluation(
    query_features: Tensor,
    gallery_features: Tensor,
    reference_index: Sequence[int] | Tensor,
    target_index: Sequence[int] | Tensor,
    members: Sequence[Sequence[int]] | Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float]:
    """CIRR recalls in percent (``R@K``, ``R_subset@K``, ``avg = (R@5 + R_subset@1) / 2``)
    with the reference removed from the gallery of every image of the split, and the
    subset ranking over ``members`` (img_set, reference dropped)."""
    return cirr_metrics(unit(query_features), unit(gallery_features),
                        torch.as_tensor(reference_index), torch.as_tensor(target_index),
                        members_to_subset_indices(members), chunk_size)


def fashioniq_evaluation(
    per_category: Mapping[str, tuple[Tensor, Tensor, Sequence[int] | Tensor]],
    *,
    protocol: str = FASHIONIQ_PROTOCOL,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float | str]:
    """FashionIQ: ``{category: (query_features, gallery_features, target_index)}`` ->
    per-category ``R@10``/``R@50``, ``avg/R@10``, ``avg/R@50``, ``avg`` and ``protocol``
    (gallery = every image of the category's split)."""
    results = [
        fashioniq_metrics(unit(q), unit(g), torch.as_tensor(t), category, protocol=protocol,
                          chunk_size=chunk_size)
        for category, (q, g, t) in per_category.items()
    ]
    return combine_fashioniq_metrics(results, categories=tuple(per_category))


def evaluate_composed_split(
    split: Any, query_features: Tensor, gallery_features: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, Any]:
    """Metrics of one split by its protocol: CIRR (``cirr/...`` names) or one FashionIQ
    category (``fashioniq/<category>/...``: ``<category>/R@10``, ``<category>/R@50``)."""
    if not split.has_targets:
        raise ValueError(f"{split.name}: hidden targets; write a submission instead "
                         "(mmret.metrics.write_cirr_submission)")
    if split.name.split(":")[-1].startswith("cirr"):
        return cirr_evaluation(query_features, gallery_features, split.reference_index,
                               split.target_index, split.members, chunk_size)
    parts = split.name.split(":")[-1].split("/")
    if parts[0] == "fashioniq" and len(parts) >= 2:
        return fashioniq_metrics(unit(query_features), unit(gallery_features),
                                 split.target_tensor(), parts[1], chunk_size=chunk_size)
    raise ValueError(f"split.name: expected 'cirr/...' or 'fashioniq/<category>/...', got "
                     f"{split.name!r}")

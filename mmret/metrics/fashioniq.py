"""FashionIQ composed image retrieval metrics (docs/methods.md §7).

Per category (dress, shirt, toptee): R@10 and R@50 of the target image, with the gallery
= all images of that category's split (``protocol`` "gallery=category_split_all_images").
The combined result holds the per-category numbers, their averages over categories and
``avg = (avg R@10 + avg R@50) / 2``. Joining the two relative captions into one query
text happens in the data loaders, not here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor

from mmret.metrics._checks import as_features, as_index
from mmret.metrics.image_text import recall_at_k
from mmret.metrics.ranking import DEFAULT_CHUNK_SIZE, gold_ranks

#: FashionIQ's three categories
FASHIONIQ_CATEGORIES: tuple[str, ...] = ("dress", "shirt", "toptee")

__all__ = [
    "FASHIONIQ_CATEGORIES",
    "FASHIONIQ_KS",
    "FASHIONIQ_PROTOCOL",
    "fashioniq_metrics",
    "combine_fashioniq_metrics",
]

FASHIONIQ_KS: tuple[int, ...] = (10, 50)
#: Gallery protocol of the reference evaluation: every image of the category's split.
FASHIONIQ_PROTOCOL = "gallery=category_split_all_images"
#: Suffix added to the protocol when the reference image is removed from the gallery.
REFERENCE_REMOVED = "+reference_removed"


def fashioniq_metrics(
    query_features: Tensor,
    gallery_features: Tensor,
    target_index: Tensor,
    category: str,
    *,
    reference_index: Tensor | None = None,
    protocol: str = FASHIONIQ_PROTOCOL,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float | str]:
    """R@10 / R@50 (percent) of one FashionIQ category.

    Args:
        query_features: FloatTensor[Q, d] (fused reference image + joined captions).
        gallery_features: FloatTensor[G, d], the category split's images.
        target_index: LongTensor[Q], the target's gallery index.
        category: category name, used as key prefix (``dress/R@10``).
        reference_index: optional LongTensor[Q]; when given the reference image is
            removed from each query's gallery and the protocol says so.
        protocol: gallery protocol recorded in the result.

    Returns:
        ``{category}/R@10``, ``{category}/R@50`` and ``protocol``.
    """
    if not isinstance(category, str) or not category or "/" in category or category == "avg":
        raise ValueError(f"category: expected a name such as 'dress', got {category!r}")
    q = as_features(query_features, "query_features")
    x = as_features(gallery_features, "gallery_features")
    target = as_index(target_index, "target_index", length=q.shape[0], upper=x.shape[0],
                      device=q.device)
    exclude = None
    if reference_index is not None:
        exclude = as_index(reference_index, "reference_index", length=q.shape[0],
                           upper=x.shape[0], device=q.device)
        protocol = protocol + REFERENCE_REMOVED
    ranks = gold_ranks(q, x, target, chunk_size=chunk_size, exclude=exclude)
    out: dict[str, float | str] = {f"{category}/R@{k}": recall_at_k(ranks, k)
                                   for k in FASHIONIQ_KS}
    out["protocol"] = protocol
    return out


def combine_fashioniq_metrics(
    per_category: Iterable[Mapping[str, float | str]],
    categories: tuple[str, ...] = FASHIONIQ_CATEGORIES,
) -> dict[str, float | str]:
    """Merge :func:`fashioniq_metrics` results of all categories.

    Returns the per-category keys, ``avg/R@10`` and ``avg/R@50`` (means over
    ``categories``), ``avg = (avg/R@10 + avg/R@50) / 2`` and the shared ``protocol``.
    Every category must be present exactly once and all must share one protocol.
    """
    merged: dict[str, float | str] = {}
    protocols = set()
    for result in per_category:
        protocols.add(result.get("protocol"))
        for key, value in result.items():
            if key == "protocol":
                continue
            if key in merged:
                raise ValueError(f"per_category: {key!r} appears in more than one result")
            merged[key] = float(value)
    if len(protocols) != 1 or None in protocols:
        raise ValueError(f"per_category: results must share one protocol, got {protocols}")
    for category in categories:
        for k in FASHIONIQ_KS:
            if f"{category}/R@{k}" not in merged:
                raise ValueError(f"per_category: missing {category}/R@{k}")
    for k in FASHIONIQ_KS:
        values = [float(merged[f"{c}/R@{k}"]) for c in categories]
        merged[f"avg/R@{k}"] = sum(values) / len(values)
    merged["avg"] = (float(merged["avg/R@10"]) + float(merged["avg/R@50"])) / 2
    merged["protocol"] = protocols.pop()
    return merged

"""Image–text retrieval metrics (COCO, Flickr30K, Multi30K, ...; docs/methods.md §7)."""

from __future__ import annotations

from torch import Tensor

from mmret.metrics.ranking import DEFAULT_CHUNK_SIZE, image_text_ranks

__all__ = [
    "RECALL_KS",
    "recall_at_k",
    "mean_rank",
    "median_rank",
    "summarize_ranks",
    "image_text_retrieval",
    "metric_keys",
]

#: Cut-offs reported for image–text retrieval.
RECALL_KS: tuple[int, ...] = (1, 5, 10)

DIRECTIONS = ("image_to_text", "text_to_image")


def recall_at_k(ranks: Tensor, k: int) -> float:
    """Percentage of 0-based ``ranks`` below ``k``: ``100 · mean(rank < k)``."""
    if ranks.numel() == 0:
        raise ValueError("ranks: empty, recall is undefined")
    return 100.0 * float((ranks < k).sum()) / ranks.numel()


def mean_rank(ranks: Tensor) -> float:
    """1-based mean rank: ``1 + mean(ranks)`` (ranks are 0-based)."""
    return 1.0 + float(ranks.double().mean())


def median_rank(ranks: Tensor) -> float:
    """1-based median rank: ``1 + floor(median(ranks))``.

    ``median`` is numpy's: the middle value for an odd count, the mean of the two middle
    values for an even count (so ``[0, 1]`` has median 0.5 and median rank 1).
    """
    if ranks.numel() == 0:
        raise ValueError("ranks: empty, median is undefined")
    ordered = ranks.long().flatten().sort().values
    n = ordered.numel()
    if n % 2:
        middle = int(ordered[n // 2])
    else:  # floor((a + b) / 2) for non-negative integers
        middle = (int(ordered[n // 2 - 1]) + int(ordered[n // 2])) // 2
    return float(1 + middle)


def summarize_ranks(ranks: Tensor, prefix: str, ks: tuple[int, ...] = RECALL_KS
                    ) -> dict[str, float]:
    """``{prefix}_R@k`` for each k, ``{prefix}_mean_rank`` and ``{prefix}_median_rank``."""
    out = {f"{prefix}_R@{k}": recall_at_k(ranks, k) for k in ks}
    out[f"{prefix}_mean_rank"] = mean_rank(ranks)
    out[f"{prefix}_median_rank"] = median_rank(ranks)
    return out


def image_text_retrieval(
    image_features: Tensor,
    text_features: Tensor,
    text_to_image: Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    return_ranks: bool = False,
) -> dict[str, float | Tensor]:
    """Exact image→text and text→image retrieval metrics.

    Args:
        image_features: FloatTensor[N, d]; text_features: FloatTensor[M, d] (scores are
            plain dot products in fp32, so pass L2-normalised features for cosine).
        text_to_image: LongTensor[M]; ``text_to_image[j]`` is the index of caption j's
            image. Images may have any number (>= 1) of captions.
        chunk_size: image rows scored at once (memory: ``chunk_size × M`` scores plus an
            equally sized fp32 work buffer).
        return_ranks: also return the 0-based rank tensors.

    Returns:
        A flat dict: ``image_to_text_R@{1,5,10}`` (fraction of images with at least one
        of their captions in the top K — rank = best caption), ``text_to_image_R@{1,5,10}``
        (fraction of captions whose image is in the top K), in percent;
        ``{direction}_mean_rank`` (1 + mean 0-based rank), ``{direction}_median_rank``
        (1 + floor(numpy median)); ``mean_recall`` (mean of the six recalls) and
        ``rsum`` (their sum). With ``return_ranks``: ``image_to_text_ranks`` LongTensor[N]
        and ``text_to_image_ranks`` LongTensor[M].
    """
    i2t, t2i = image_text_ranks(image_features, text_features, text_to_image,
                                chunk_size=chunk_size)
    metrics: dict[str, float | Tensor] = {}
    metrics.update(summarize_ranks(i2t, "image_to_text"))
    metrics.update(summarize_ranks(t2i, "text_to_image"))
    recalls = [float(metrics[f"{d}_R@{k}"]) for d in DIRECTIONS for k in RECALL_KS]
    metrics["mean_recall"] = sum(recalls) / len(recalls)
    metrics["rsum"] = sum(recalls)
    if return_ranks:
        metrics["image_to_text_ranks"] = i2t
        metrics["text_to_image_ranks"] = t2i
    return metrics


def metric_keys() -> list[str]:
    """Metric names returned by :func:`image_text_retrieval` (without ranks)."""
    keys = []
    for direction in DIRECTIONS:
        keys += [f"{direction}_R@{k}" for k in RECALL_KS]
        keys += [f"{direction}_mean_rank", f"{direction}_median_rank"]
    return keys + ["mean_recall", "rsum"]

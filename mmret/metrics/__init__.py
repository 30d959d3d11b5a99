"""Exact chunked retrieval metrics (docs/methods.md §4 and §7).

Every metric is built on one rank engine (:mod:`mmret.metrics.ranking`): exact 0-based
ranks with the stable tie rule, fp32 scores computed ``chunk_size`` query rows at a time,
on the inputs' device.
"""

from mmret.metrics.cirr import cirr_metrics, cirr_ranks, write_cirr_submission
from mmret.metrics.cross_lingual import cross_lingual_retrieval, mean_rank_variance, rank_spread
from mmret.metrics.embedding import alignment, collect_rfd, uniformity
from mmret.metrics.fashioniq import (
    FASHIONIQ_CATEGORIES,
    FASHIONIQ_PROTOCOL,
    combine_fashioniq_metrics,
    fashioniq_metrics,
)
from mmret.metrics.image_text import (
    image_text_retrieval,
    mean_rank,
    median_rank,
    recall_at_k,
)
from mmret.metrics.ir import DEFAULT_IR_METRICS, ir_metrics, ir_per_query
from mmret.metrics.ranking import (
    DEFAULT_CHUNK_SIZE,
    GoldSets,
    chunked_topk,
    gold_ranks,
    image_text_ranks,
)
from mmret.metrics.sts import senteval_aggregate, sts_correlations
from mmret.metrics.unimodal import (
    image_to_image_retrieval,
    text_to_text_retrieval,
    unimodal_retrieval,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_IR_METRICS",
    "FASHIONIQ_CATEGORIES",
    "FASHIONIQ_PROTOCOL",
    "GoldSets",
    "alignment",
    "chunked_topk",
    "cirr_metrics",
    "cirr_ranks",
    "collect_rfd",
    "combine_fashioniq_metrics",
    "cross_lingual_retrieval",
    "fashioniq_metrics",
    "gold_ranks",
    "image_text_ranks",
    "image_text_retrieval",
    "image_to_image_retrieval",
    "ir_metrics",
    "ir_per_query",
    "mean_rank",
    "mean_rank_variance",
    "median_rank",
    "rank_spread",
    "recall_at_k",
    "senteval_aggregate",
    "sts_correlations",
    "text_to_text_retrieval",
    "uniformity",
    "unimodal_retrieval",
    "write_cirr_submission",
]

"""STS metrics: cosine Spearman / Pearson ×100 and SentEval's aggregation
(docs/methods.md §11), on similarities and embeddings (pure maths; the encoding side is
:func:`mmret.evaluation.sts.sts_spearman` / :func:`~mmret.evaluation.sts.sts_all`).

:func:`sts_correlations` correlates pair similarities with the gold scores. For the
SemEval years (STS12–16) :func:`senteval_aggregate` reports, like SentEval in the SimCSE version,
per subset and ``all`` = ``{"all": correlation of the concatenated scores of every
subset, "mean": mean over subsets, "wmean": mean weighted by subset size}``; the SimCSE
convention (and the reference's) is ``all["spearman"]["all"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy's ``method="average"``)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def pearson(x: Any, y: Any) -> float:
    """Pearson correlation (float64); NaN when either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"pearson: need two 1-D arrays of equal length >= 2, got {x.shape}, {y.shape}")
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / denom) if denom > 0 else float("nan")


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation: Pearson of the average ranks."""
    return pearson(rankdata(x), rankdata(y))


def cosine_pairs(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Row-wise cosine of two (n, d) matrices, computed in float64."""
    a, b = a.double(), b.double()
    num = (a * b).sum(1)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.nan_to_num(num / den).numpy()


def sts_correlations(sims: Any, gold: Any) -> dict[str, float]:
    """``{"spearman", "pearson"}`` ×100 of pair similarities against gold scores, plus
    ``n``."""
    sims = np.asarray(sims, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if sims.shape != gold.shape or len(gold) < 2:
        raise ValueError(f"sts: {sims.shape} similarities and {gold.shape} scores (need equal, "
                         ">= 2)")
    return {"spearman": 100 * spearman(sims, gold), "pearson": 100 * pearson(sims, gold),
            "n": len(gold)}


def senteval_aggregate(subsets: Mapping[str, tuple[Any, Any]]) -> dict[str, Any]:
    """SentEval aggregation for one SemEval year from ``{subset: (similarities, gold)}``:
    ``{subset: {"spearman", "pearson", "n"}, "all": {"spearman": {"all", "mean", "wmean"},
    "pearson": {…}}}``, all ×100 (``all``: the pooled pairs, the SimCSE convention)."""
    if not subsets:
        raise ValueError("sts_all: no subsets")
    results: dict[str, Any] = {}
    all_sims, all_gold = [], []
    for name, (sims, gold) in subsets.items():
        results[name] = sts_correlations(sims, gold)
        all_sims.append(np.asarray(sims, dtype=np.float64))
        all_gold.append(np.asarray(gold, dtype=np.float64))
    sims, gold = np.concatenate(all_sims), np.concatenate(all_gold)
    weights = np.array([results[k]["n"] for k in subsets], dtype=np.float64)
    summary = {}
    for metric, fn in (("spearman", spearman), ("pearson", pearson)):
        per = np.array([results[k][metric] for k in subsets])
        summary[metric] = {"all": 100 * fn(sims, gold), "mean": float(per.mean()),
                           "wmean": float((per * weights).sum() / weights.sum())}
    results["all"] = summary
    return results

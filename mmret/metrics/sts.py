"""STS evaluation: cosine Spearman / Pearson ×100 and SentEval's aggregation
(docs/methods.md §11).

``sts_spearman`` encodes the sentences of the pairs (each distinct sentence once, in
batches), scores each pair by cosine, and correlates with the gold scores. For the
SemEval years (STS12–16) :func:`sts_all` reports, like SentEval in the SimCSE version,
per subset and ``all`` = ``{"all": correlation of the concatenated scores of every
subset, "mean": mean over subsets, "wmean": mean weighted by subset size}``; the SimCSE
convention (and the reference's) is ``all["spearman"]["all"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmret.data.sts import STSPairs

EncodeFn = Callable[[list[str]], Any]


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


def encode_unique(encode_fn: EncodeFn, sentences: Sequence[str], batch_size: int) -> tuple[torch.Tensor, list[int]]:
    """Embeddings of the distinct sentences (first-appearance order) and, per input
    sentence, its row in them."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    index: dict[str, int] = {}
    for s in sentences:
        index.setdefault(s, len(index))
    unique = list(index)
    parts = []
    for i in range(0, len(unique), batch_size):
        out = encode_fn(unique[i : i + batch_size])
        parts.append(torch.as_tensor(out if isinstance(out, torch.Tensor) else np.asarray(out)))
    emb = torch.cat(parts).detach().cpu() if parts else torch.empty(0, 0)
    if emb.dim() != 2 or emb.shape[0] != len(unique):
        raise ValueError(f"encode_fn returned {tuple(emb.shape)} for {len(unique)} sentences; expected (n, d)")
    return emb, [index[s] for s in sentences]


def cosine_pairs(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Row-wise cosine of two (n, d) matrices, computed in float64."""
    a, b = a.double(), b.double()
    num = (a * b).sum(1)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.nan_to_num(num / den).numpy()


def pair_scores(
    encode_fn: EncodeFn, pairs: Sequence[tuple[str, str]] | STSPairs, batch_size: int = 64
) -> np.ndarray:
    """Cosine similarity of each pair's embeddings (n,)."""
    if isinstance(pairs, STSPairs):
        left, right = pairs.sentences1, pairs.sentences2
    else:
        left, right = [a for a, _ in pairs], [b for _, b in pairs]
    emb, rows = encode_unique(encode_fn, list(left) + list(right), batch_size)
    n = len(left)
    return cosine_pairs(emb[rows[:n]], emb[rows[n:]])


def sts_spearman(
    encode_fn: EncodeFn,
    pairs: Sequence[tuple[str, str]] | STSPairs,
    scores: Sequence[float] | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """``{"spearman", "pearson"}`` ×100 of pair cosines against gold ``scores``, plus ``n``.

    ``pairs`` is a list of ``(sentence1, sentence2)`` or an :class:`STSPairs` (whose
    scores are used when ``scores`` is None). ``encode_fn(list[str]) -> (n, d)``.
    """
    if scores is None:
        if not isinstance(pairs, STSPairs):
            raise ValueError("sts_spearman: scores is required when pairs is a plain list")
        scores = pairs.scores
    if len(scores) != len(pairs) or len(pairs) < 2:
        raise ValueError(f"sts_spearman: {len(pairs)} pairs and {len(scores)} scores (need equal, >= 2)")
    sims = pair_scores(encode_fn, pairs, batch_size)
    gold = np.asarray(scores, dtype=np.float64)
    return {"spearman": 100 * spearman(sims, gold), "pearson": 100 * pearson(sims, gold), "n": len(gold)}


def sts_all(
    encode_fn: EncodeFn, subsets: Mapping[str, STSPairs], batch_size: int = 64
) -> dict[str, Any]:
    """SentEval aggregation for one SemEval year: ``{subset: {"spearman", "pearson", "n"},
    "all": {"spearman": {"all", "mean", "wmean"}, "pearson": {…}}}``, all ×100."""
    if not subsets:
        raise ValueError("sts_all: no subsets")
    results: dict[str, Any] = {}
    all_sims, all_gold = [], []
    for name, data in subsets.items():
        sims = pair_scores(encode_fn, data, batch_size)
        gold = np.asarray(data.scores, dtype=np.float64)
        results[name] = {"spearman": 100 * spearman(sims, gold), "pearson": 100 * pearson(sims, gold),
                         "n": len(gold)}
        all_sims.append(sims)
        all_gold.append(gold)
    sims, gold = np.concatenate(all_sims), np.concatenate(all_gold)
    weights = np.array([results[k]["n"] for k in subsets], dtype=np.float64)
    summary = {}
    for metric, fn in (("spearman", spearman), ("pearson", pearson)):
        per = np.array([results[k][metric] for k in subsets])
        summary[metric] = {"all": 100 * fn(sims, gold), "mean": float(per.mean()),
                           "wmean": float((per * weights).sum() / weights.sum())}
    results["all"] = summary
    return results

"""IR metrics over ranked runs and graded qrels: nDCG@k, MRR@k, Recall@k, MAP(@k), P@k.

Pure numpy (docs/methods.md, "IR metrics"). A *run* is anything with the fields of
:class:`mmret.retrieval.Run` (``query_ids``, ``doc_ids``, ``(Q, K)`` ``indices`` into
``doc_ids`` padded with ``-1``, ``(Q, K)`` ``scores``), or a ``{query_id: {doc_id: score}}``
dict; *qrels* are ``{query_id: {doc_id: grade}}`` with integer grades ``>= 0``.

Definitions (trec_eval's, which ``ranx`` and ``pytrec_eval`` share; position ``i`` is 0-based,
``g_i`` the grade of the document at ``i`` (0 if unjudged), ``rel_i = g_i >= relevance_level``,
``R`` the number of judged documents with ``g >= relevance_level``):

* ``ndcg@k``: ``DCG@k / IDCG@k`` with **linear gain** ``DCG@k = sum_{i<k} g_i / log2(i + 2)``
  (trec_eval ``ndcg_cut``, ranx ``ndcg``; not Burges' ``2^g - 1``); ``IDCG@k`` is the DCG of
  *all* judged relevant documents sorted by grade (not only the retrieved ones); a query with
  ``IDCG = 0`` scores 0.
* ``mrr@k``: ``1 / (1 + first i < k with rel_i)``, 0 when none.
* ``recall@k``: ``sum_{i<k} rel_i / R``.
* ``precision@k`` (``p@k``): ``sum_{i<k} rel_i / k`` (divided by ``k`` even if fewer hits).
* ``map@k``: ``sum_{i<k, rel_i} P@(i+1) / R`` (trec_eval ``map_cut``); ``map`` is ``k = ∞``.

A metric without ``@k`` uses the whole run (for ``precision`` the query's own number of hits).

Which queries count: the mean is over the queries of ``qrels``. A qrels query with no
relevant document scores 0 on every metric and counts (trec_eval, ranx); a qrels query the
run lacks scores 0 and counts (trec_eval ``-c``, ranx ``make_comparable=True``; plain
``pytrec_eval`` leaves it out); run queries absent from the qrels are ignored (all three).

Ties: by default the run's own order is used (mmret's contract: score descending, then
document id ascending). ``ties="trec_eval"`` re-ranks equal scores by document id
*descending*, as trec_eval (and so pytrec_eval) does; ranx's order of tied scores is numpy's
unstable argsort, so it agrees with either rule only on untied runs.

>>> run = {"q1": {"a": 0.9, "b": 0.5, "c": 0.1}}
>>> qrels = {"q1": {"b": 1, "z": 2}}
>>> r = ir_metrics(run, qrels, ["mrr@10", "recall@2", "precision@2"])
>>> r["mrr@10"], r["recall@2"], r["precision@2"]
(0.5, 0.5, 0.5)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_IR_METRICS",
    "IRMetric",
    "ir_metrics",
    "ir_per_query",
    "parse_ir_metric",
    "qrels_gains",
    "run_arrays",
]

#: what reports show by default (headline first)
DEFAULT_IR_METRICS: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@10", "recall@100",
                                       "map", "precision@10")

_ALIASES = {"ndcg": "ndcg", "mrr": "mrr", "rr": "mrr", "recip_rank": "mrr", "recall": "recall",
            "r": "recall", "map": "map", "ap": "map", "precision": "precision", "p": "precision"}
_NAME = re.compile(r"^([a-z_]+)(?:@(\d+))?$")
#: up to this many relevant documents per query, gains are found by one (Q, K) compare per
#: relevant column; beyond, by a sorted-key search
_COLUMN_LOOP = 32


@dataclass(frozen=True)
class IRMetric:
    """One parsed metric name: ``kind`` (ndcg, mrr, recall, map, precision) and cutoff ``k``
    (``None``: the whole run). ``name`` is the canonical ``kind@k`` spelling."""

    kind: str
    k: int | None

    @property
    def name(self) -> str:
        return self.kind if self.k is None else f"{self.kind}@{self.k}"


def parse_ir_metric(name: str) -> IRMetric:
    """``"nDCG@10"`` → ``IRMetric("ndcg", 10)``; aliases ``p``, ``r``, ``rr``, ``ap``."""
    match = _NAME.match(name.strip().lower())
    if not match or match.group(1) not in _ALIASES:
        raise ValueError(f"unknown IR metric {name!r}: expected one of ndcg@k, mrr@k, "
                         "recall@k, map, map@k, precision@k (p@k)")
    k = None if match.group(2) is None else int(match.group(2))
    if k is not None and k < 1:
        raise ValueError(f"IR metric {name!r}: the cutoff must be >= 1")
    return IRMetric(_ALIASES[match.group(1)], k)


def run_arrays(run: Any) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """``(query_ids, doc_ids, indices, scores)`` of a Run-like object or of a
    ``{query_id: {doc_id: score}}`` dict (ordered by score descending, then doc id
    ascending)."""
    if not isinstance(run, Mapping):
        return (tuple(run.query_ids), np.asarray(run.doc_ids, dtype=object),
                np.asarray(run.indices, dtype=np.int64), np.asarray(run.scores, dtype=np.float64))
    vocab: dict[str, int] = {}
    depth = max((len(v) for v in run.values()), default=0)
    indices = np.full((len(run), depth), -1, dtype=np.int64)
    scores = np.full((len(run), depth), -np.inf)
    for i, hits in enumerate(run.values()):
        ordered = sorted(hits.items(), key=lambda h: (-float(h[1]), str(h[0])))
        for j, (doc, score) in enumerate(ordered):
            indices[i, j] = vocab.setdefault(str(doc), len(vocab))
            scores[i, j] = float(score)
    return (tuple(str(q) for q in run), np.array(list(vocab), dtype=object), indices, scores)


def _trec_eval_order(doc_ids: np.ndarray, indices: np.ndarray,
                     scores: np.ndarray) -> np.ndarray:
    """``indices`` re-ranked by score descending, then doc id descending (trec_eval)."""
    if doc_ids.size == 0:
        return indices
    id_rank = np.empty(len(doc_ids), dtype=np.int64)
    id_rank[np.argsort(doc_ids.astype(str), kind="stable")] = np.arange(len(doc_ids))
    ranks = np.where(indices >= 0, id_rank[np.maximum(indices, 0)], -1)
    order = np.lexsort((-ranks, -np.nan_to_num(scores, neginf=-np.finfo(float).max)), axis=-1)
    return np.take_along_axis(indices, order, axis=1)


def qrels_gains(query_ids: Sequence[str], doc_ids: np.ndarray, indices: np.ndarray,
                qrels: Mapping[str, Mapping[str, int]], relevance_level: int = 1
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query of ``qrels`` (in qrels order): the ``(Q, K)`` grades of its retrieved
    documents (0 unjudged, below ``relevance_level`` or padding), the ``(Q, R)`` ideal grades
    sorted descending (0-padded), and the number of relevant documents ``R_q``.

    Grades below ``relevance_level`` give no gain (ranx's ``rel_lvl``; trec_eval's default
    level 1 makes that the same for integer grades)."""
    row_of = {q: i for i, q in enumerate(query_ids)}
    vocab = {str(d): i for i, d in enumerate(doc_ids)}
    n = len(qrels)
    rel_lists: list[list[tuple[int, int]]] = []
    ideal_lists: list[list[int]] = []
    for q, judged in qrels.items():
        rels, ideal = [], []
        for doc, grade in judged.items():
            g = int(grade)
            if g != grade or g < 0:
                raise ValueError(f"qrels: query {q!r}, document {doc!r}: grade {grade!r}, "
                                 "expected an integer >= 0")
            if g >= relevance_level:
                ideal.append(g)
                if doc in vocab:
                    rels.append((vocab[doc], g))
        rel_lists.append(rels)
        ideal_lists.append(sorted(ideal, reverse=True))
    width = max((len(r) for r in rel_lists), default=0)
    rel_idx = np.full((n, max(width, 1)), -2, dtype=np.int64)
    rel_grade = np.zeros((n, max(width, 1)), dtype=np.float64)
    for i, rels in enumerate(rel_lists):
        if rels:
            rel_idx[i, :len(rels)] = [d for d, _ in rels]
            rel_grade[i, :len(rels)] = [g for _, g in rels]
    n_rel = np.array([len(x) for x in ideal_lists], dtype=np.int64)
    ideal = np.zeros((n, int(n_rel.max(initial=0))), dtype=np.float64)
    for i, grades in enumerate(ideal_lists):
        ideal[i, :len(grades)] = grades
    depth = indices.shape[1]
    rows = np.array([row_of.get(q, -1) for q in qrels], dtype=np.int64)
    run_idx = np.full((n, depth), -1, dtype=np.int64)
    present = rows >= 0
    run_idx[present] = indices[rows[present]]
    gains = np.zeros((n, depth), dtype=np.float64)
    if rel_idx.shape[1] <= _COLUMN_LOOP:
        # gain = grade of the relevant document equal to the hit: one (Q, K) compare per
        # relevant-document column (few: qrels are sparse)
        for j in range(rel_idx.shape[1]):
            np.copyto(gains, rel_grade[:, j:j + 1], where=run_idx == rel_idx[:, j:j + 1])
    else:  # many relevant documents for some query: sorted (row, doc) keys
        width_v = np.int64(max(len(doc_ids), 1) + 1)
        keep = rel_idx >= 0
        keys = (np.nonzero(keep)[0] * width_v + rel_idx[keep]).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        keys, grades = keys[order], rel_grade[keep][order]
        probe = np.arange(n, dtype=np.int64)[:, None] * width_v + run_idx
        pos = np.minimum(np.searchsorted(keys, probe), max(len(keys) - 1, 0))
        if len(keys):
            hit = (keys[pos] == probe) & (run_idx >= 0)
            gains[hit] = grades[pos[hit]]
    return gains, ideal, n_rel


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(n, dtype=np.float64) + 2.0)


def _metric_values(metric: IRMetric, gains: np.ndarray, ideal: np.ndarray, n_rel: np.ndarray,
                   n_hits: np.ndarray, relevance_level: int) -> np.ndarray:
    depth = gains.shape[1]
    k = depth if metric.k is None else min(metric.k, depth)
    g = gains[:, :k]
    rel = g >= relevance_level
    has_rel = n_rel > 0
    safe_rel = np.maximum(n_rel, 1)
    if metric.kind == "ndcg":
        dcg = g @ _discounts(k)
        kk = ideal.shape[1] if metric.k is None else min(metric.k, ideal.shape[1])
        idcg = ideal[:, :kk] @ _discounts(kk)
        return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 0.0)
    if metric.kind == "mrr":
        first = np.argmax(rel, axis=1) if k else np.zeros(len(g), dtype=np.int64)
        found = rel.any(axis=1) if k else np.zeros(len(g), dtype=bool)
        return np.where(found, 1.0 / (first + 1.0), 0.0)
    hits = rel.sum(axis=1).astype(np.float64)
    if metric.kind == "recall":
        return np.where(has_rel, hits / safe_rel, 0.0)
    if metric.kind == "precision":
        denom = np.minimum(n_hits, depth) if metric.k is None else np.full(len(g), metric.k)
        return np.where(denom > 0, hits / np.maximum(denom, 1), 0.0)
    # map: sum of precision at each relevant position, over all relevant documents
    prec = np.cumsum(rel, axis=1) / np.arange(1, k + 1, dtype=np.float64)
    return np.where(has_rel, (prec * rel).sum(axis=1) / safe_rel, 0.0)


def ir_per_query(run: Any, qrels: Mapping[str, Mapping[str, int]],
                 metrics: Sequence[str] = DEFAULT_IR_METRICS, *, relevance_level: int = 1,
                 ties: str = "run") -> tuple[list[str], dict[str, np.ndarray]]:
    """Per-query values: ``(query_ids of qrels, {metric name: (Q,) float64})``.

    Args:
        run: a Run-like object or ``{query_id: {doc_id: score}}``.
        qrels: ``{query_id: {doc_id: grade}}``, integer grades ``>= 0``.
        metrics: names such as ``ndcg@10``, ``mrr@10``, ``recall@100``, ``map``, ``p@10``.
        relevance_level: the least grade that counts as relevant (trec_eval's ``-l``).
        ties: ``"run"`` (the run's order) or ``"trec_eval"`` (equal scores by doc id
            descending).
    """
    parsed = [parse_ir_metric(m) for m in metrics]
    query_ids, doc_ids, indices, scores = run_arrays(run)
    if ties == "trec_eval":
        indices = _trec_eval_order(doc_ids, indices, scores)
    elif ties != "run":
        raise ValueError(f"ties={ties!r}: expected 'run' or 'trec_eval'")
    gains, ideal, n_rel = qrels_gains(query_ids, doc_ids, indices, qrels, relevance_level)
    row_of = {q: i for i, q in enumerate(query_ids)}
    counts = (indices >= 0).sum(axis=1)
    n_hits = np.array([counts[row_of[q]] if q in row_of else 0 for q in qrels], dtype=np.int64)
    values = {m.name: _metric_values(m, gains, ideal, n_rel, n_hits, relevance_level)
              for m in parsed}
    return [str(q) for q in qrels], values


def ir_metrics(run: Any, qrels: Mapping[str, Mapping[str, int]],
               metrics: Sequence[str] = DEFAULT_IR_METRICS, *, relevance_level: int = 1,
               ties: str = "run") -> dict[str, float]:
    """Mean of each metric over the queries of ``qrels`` (see the module docstring for the
    definitions and which queries count); arguments as :func:`ir_per_query`."""
    if not qrels:
        raise ValueError("qrels: no queries, the IR metrics are undefined")
    _, values = ir_per_query(run, qrels, metrics, relevance_level=relevance_level, ties=ties)
    return {name: float(v.mean()) for name, v in values.items()}

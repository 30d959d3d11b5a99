"""Fusion of runs, by name: each a function ``(runs, **params) -> Run``, vectorised over the
padded ``(Q, K)`` arrays (no per-query Python loop).

- ``rrf`` (Cormack et al., SIGIR 2009): ``score(d) = Σ_r 1 / (k + rank_r(d))``, ranks from
  1 in each run's order (the contract's: score descending, ties by id), ``k = 60``; a
  document absent from a run gets nothing from it. Equals ``ranx.fuse(method="rrf")``.
- ``wsum``: ``score(d) = Σ_r w_r · norm_r(s_r(d))`` with ``norm="min-max"``
  (``(s - min) / max(max - min, 1e-9)``), ``"zmuv"`` (``(s - mean) / max(std, 1e-9)``,
  population std) or ``None``, computed per query over the documents the run returned; a
  document absent from a run scores 0 there (ranx's convention — under ``zmuv`` 0 is that
  run's *mean*, not its worst). ``weights`` default to ``1 / len(runs)`` each. Equals
  ``ranx.fuse(method="wsum", norm=..., params={"weights": ...})``. ``wsum_minmax`` and
  ``wsum_zmuv`` name the two normalisations.
- ``concat_dedup`` (EasyRAG's ``HybridRetriever.fusion``, METHODS-TEXT §4.3): concatenate
  the runs in order (run 1's hits, best first, then run 2's ...), drop every hit whose
  *content* was already seen (the first occurrence wins: run order, then rank; its score
  is kept, even if a later run scored that content higher), sort by the **raw** scores (the
  routes' scales are not made comparable — EasyRAG's choice) and keep the top ``k`` (256).
  ``content`` maps document id -> text (default: the id itself, i.e. dedup by id).

Ties in every fused run: score descending, then document id ascending (the contract).
ranx orders ties by numpy's argsort instead, so the two agree exactly on untied scores.
EasyRAG's Python ``sorted(..., reverse=True)`` keeps ties in concatenation order; mmret's
``concat_dedup`` uses the contract's rule.

>>> from mmret.retrieval.types import Run
>>> a = Run.from_lists(["q"], [[("d1", 3.0), ("d2", 2.0)]])
>>> b = Run.from_lists(["q"], [[("d2", 0.9), ("d3", 0.5)]])
>>> [d for d, _ in fuse([a, b], "rrf").hits(0)]
['d2', 'd1', 'd3']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mmret.registry import Registry
from mmret.retrieval.types import Run

__all__ = ["FUSIONS", "align_runs", "concat_dedup", "fuse", "normalize_scores", "rrf", "wsum"]

#: fusion name -> ``(runs, **params) -> Run``
FUSIONS: Registry[Callable[..., Run]] = Registry("fusion")

NORMS = ("min-max", "zmuv", None)


# --------------------------------------------------------------------------- alignment
def align_runs(runs: Sequence[Run]) -> tuple[tuple[str, ...], np.ndarray, list[np.ndarray],
                                             list[np.ndarray]]:
    """``(query_ids, doc_ids, indices, scores)``: every run's rows in the first run's query
    order and its indices over one **sorted** id vocabulary (so index order is id order).
    Runs over different query sets raise, naming a query that is missing."""
    if not runs:
        raise ValueError("fusion: no runs to fuse")
    query_ids = runs[0].query_ids
    rows_of: list[np.ndarray | None] = []
    for r in runs:
        if r.query_ids == query_ids:
            rows_of.append(None)
            continue
        where = {q: i for i, q in enumerate(r.query_ids)}
        missing = [q for q in query_ids if q not in where] or \
            [q for q in r.query_ids if q not in set(query_ids)]
        if missing or len(where) != len(query_ids):
            raise ValueError(f"fusion: run {r.name!r} and run {runs[0].name!r} have different "
                             f"queries (e.g. {missing[0]!r} is in only one)" if missing else
                             f"fusion: run {r.name!r} has duplicate query ids")
        rows_of.append(np.array([where[q] for q in query_ids], dtype=np.int64))
    vocab = runs[0].doc_ids
    shared = all(r.doc_ids is vocab for r in runs) and _is_sorted(vocab)
    if not shared:
        vocab = np.unique(np.concatenate([np.asarray(r.doc_ids, dtype=object) for r in runs]))
    indices, scores = [], []
    for r, rows in zip(runs, rows_of, strict=True):
        idx, val = r.indices, r.scores
        if rows is not None:
            idx, val = idx[rows], val[rows]
        if not shared and len(r.doc_ids):
            remap = np.searchsorted(vocab, np.asarray(r.doc_ids, dtype=object)).astype(np.int64)
            idx = np.where(idx >= 0, remap[np.maximum(idx, 0)], -1)
        indices.append(idx)
        scores.append(val)
    return query_ids, vocab, indices, scores


_SORTED_CACHE: dict[int, tuple[np.ndarray, bool]] = {}


def _is_sorted(ids: np.ndarray) -> bool:
    hit = _SORTED_CACHE.get(id(ids))
    if hit is not None and hit[0] is ids:
        return hit[1]
    ok = bool(len(ids) < 2 or np.all(ids[1:] > ids[:-1]))
    _SORTED_CACHE.clear()
    _SORTED_CACHE[id(ids)] = (ids, ok)
    return ok


# --------------------------------------------------------------------------- core
def _rank_rows(doc: np.ndarray, score: np.ndarray, vocab: np.ndarray, query_ids: tuple,
               name: str, k: int | None, doc_sorted: bool = False) -> Run:
    """Order each row by score descending, then doc index (= id) ascending; ``doc`` -1
    and ``score`` -inf are padding. ``doc_sorted``: each row's valid entries already come
    in ascending doc order (then one stable sort by score suffices)."""
    pad = doc < 0
    score = np.where(pad, -np.inf, score)
    if not doc_sorted:
        by_doc = np.argsort(np.where(pad, np.iinfo(np.int64).max, doc), axis=1, kind="stable")
        doc = np.take_along_axis(doc, by_doc, axis=1)
        score = np.take_along_axis(score, by_doc, axis=1)
    order = np.argsort(-score, axis=1, kind="stable")
    doc = np.take_along_axis(doc, order, axis=1)
    score = np.take_along_axis(score, order, axis=1)
    doc[~np.isfinite(score)] = -1
    depth = int((doc >= 0).sum(axis=1).max(initial=0))
    if k is not None:
        depth = min(depth, int(k))
    return Run(query_ids, vocab, np.ascontiguousarray(doc[:, :depth]),
               np.ascontiguousarray(score[:, :depth]), name)


def _sum_by_doc(indices: list[np.ndarray], values: list[np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the sum of ``values`` of equal document indices over all runs (run order
    within a document). Returns padded ``(Q, M)`` doc indices (-1) and sums (-inf)."""
    doc = np.concatenate(indices, axis=1)
    val = np.concatenate([np.where(i >= 0, v, 0.0) for i, v in zip(indices, values,
                                                                  strict=True)], axis=1)
    q, m = doc.shape
    if m == 0:
        return doc, val
    # key = doc * m + column: unique per row, so an unstable (faster) sort keeps the run
    # order within a document; padding sorts last
    col = np.arange(m, dtype=np.int64)
    pad_key = (int(doc.max(initial=0)) + 1) * m
    key = np.where(doc >= 0, doc * m + col, pad_key + col)
    order = np.argsort(key, axis=1)
    key = np.take_along_axis(key, order, axis=1) // m
    val = np.take_along_axis(val, order, axis=1)
    big = pad_key // m
    first = np.ones_like(key, dtype=bool)
    first[:, 1:] = key[:, 1:] != key[:, :-1]
    flat_first = np.flatnonzero(first.ravel())
    sums = np.add.reduceat(val.ravel(), flat_first)
    out_doc = np.full(q * m, -1, dtype=np.int64)
    out_val = np.full(q * m, -np.inf, dtype=np.float64)
    seg_doc = key.ravel()[flat_first]
    keep = seg_doc != big
    out_doc[flat_first[keep]] = seg_doc[keep]
    out_val[flat_first[keep]] = sums[keep]
    return out_doc.reshape(q, m), out_val.reshape(q, m)


def normalize_scores(indices: np.ndarray, scores: np.ndarray, norm: str | None) -> np.ndarray:
    """Row-wise ``norm`` (``"min-max"``, ``"zmuv"`` or ``None``) of the valid entries
    (``indices >= 0``); padding stays 0."""
    if norm not in NORMS:
        raise ValueError(f"fusion: norm must be one of {NORMS}, got {norm!r}")
    valid = indices >= 0
    s = np.where(valid, scores, 0.0).astype(np.float64)
    if norm is None or s.size == 0:
        return s
    if norm == "min-max":
        lo = np.where(valid, s, np.inf).min(axis=1, keepdims=True)
        hi = np.where(valid, s, -np.inf).max(axis=1, keepdims=True)
        out = (s - lo) / np.maximum(hi - lo, 1e-9)
    else:
        count = np.maximum(valid.sum(axis=1, keepdims=True), 1)
        mean = s.sum(axis=1, keepdims=True) / count
        var = (np.where(valid, s - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count
        out = (s - mean) / np.maximum(np.sqrt(var), 1e-9)
    return np.where(valid, out, 0.0)


def _name(prefix: str, runs: Sequence[Run], name: str | None) -> str:
    return name or f"{prefix}({','.join(r.name for r in runs)})"


# --------------------------------------------------------------------------- fusions
@FUSIONS.register("rrf")
def rrf(runs: Sequence[Run], k: int = 60, depth: int | None = None, name: str | None = None,
        ) -> Run:
    """Reciprocal rank fusion: ``Σ_r 1 / (k + rank)``, ranks from 1; top ``depth``."""
    if k < 0:
        raise ValueError(f"rrf: k must be >= 0, got {k!r}")
    query_ids, vocab, indices, _ = align_runs(runs)
    values = [np.broadcast_to(1.0 / (k + np.arange(1, i.shape[1] + 1, dtype=np.float64)),
                              i.shape) for i in indices]
    doc, score = _sum_by_doc(indices, values)
    return _rank_rows(doc, score, vocab, query_ids, _name("rrf", runs, name), depth, True)


@FUSIONS.register("wsum")
def wsum(runs: Sequence[Run], norm: str | None = "min-max",
         weights: Sequence[float] | None = None, depth: int | None = None,
         name: str | None = None) -> Run:
    """Weighted sum of per-run normalised scores (missing documents score 0)."""
    if weights is None:
        weights = [1.0 / len(runs)] * len(runs)
    if len(weights) != len(runs):
        raise ValueError(f"wsum: {len(weights)} weights for {len(runs)} runs")
    query_ids, vocab, indices, scores = align_runs(runs)
    values = [float(w) * normalize_scores(i, s, norm)
              for w, i, s in zip(weights, indices, scores, strict=True)]
    doc, score = _sum_by_doc(indices, values)
    label = f"wsum[{norm}]" if norm else "wsum"
    return _rank_rows(doc, score, vocab, query_ids, _name(label, runs, name), depth, True)


@FUSIONS.register("wsum_minmax")
def wsum_minmax(runs: Sequence[Run], **params: Any) -> Run:
    """:func:`wsum` with ``norm="min-max"``."""
    return wsum(runs, norm="min-max", **params)


@FUSIONS.register("wsum_zmuv")
def wsum_zmuv(runs: Sequence[Run], **params: Any) -> Run:
    """:func:`wsum` with ``norm="zmuv"`` (z-score)."""
    return wsum(runs, norm="zmuv", **params)


@FUSIONS.register("concat_dedup")
def concat_dedup(runs: Sequence[Run], content: Mapping[str, str] | Callable[[str], str] | None
                 = None, depth: int | None = 256, name: str | None = None) -> Run:
    """EasyRAG's fusion: concatenate, dedup by content (first wins), sort by raw score,
    keep ``depth`` (256)."""
    query_ids, vocab, indices, scores = align_runs(runs)
    if content is None:
        group = np.arange(len(vocab), dtype=np.int64)
    else:
        get = content.__getitem__ if isinstance(content, Mapping) else content
        try:
            texts = np.asarray([get(str(d)) for d in vocab], dtype=object)
        except KeyError as exc:
            raise KeyError(f"concat_dedup: no content for document {exc.args[0]!r}") from None
        _, group = np.unique(texts, return_inverse=True)
        group = group.astype(np.int64).ravel()
    doc = np.concatenate(indices, axis=1)
    val = np.concatenate(scores, axis=1).astype(np.float64)
    q, m = doc.shape
    if m:
        # key = content group * m + column: unique, so the sort keeps concatenation order
        col = np.arange(m, dtype=np.int64)
        pad_key = (int(group.max(initial=0)) + 1) * m
        key = np.where(doc >= 0, group[np.maximum(doc, 0)] * m + col, pad_key + col)
        order = np.argsort(key, axis=1)
        skey = np.take_along_axis(key, order, axis=1) // m
        dup_sorted = np.zeros_like(skey, dtype=bool)
        dup_sorted[:, 1:] = skey[:, 1:] == skey[:, :-1]
        dup = np.zeros_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        doc = np.where(dup, -1, doc)
        val = np.where(doc >= 0, val, -np.inf)
    return _rank_rows(doc, val, vocab, query_ids, _name("concat_dedup", runs, name), depth)


def fuse(runs: Sequence[Run], method: str = "rrf", **params: Any) -> Run:
    """The fusion registered as ``method`` applied to ``runs`` with ``params``."""
    return FUSIONS.get(method)(list(runs), **params)

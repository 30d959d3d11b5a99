"""Array helpers every route shares: a corpus's sorted id vocabulary, top-k of score rows,
and turning ``(Q, k)`` corpus positions + scores into a :class:`Run` with the contract's
tie rule (score descending, then document id ascending).

Routes store their runs over the corpus's ids **sorted** (:class:`CorpusIds`), so a
column index order is the id order and ties are broken by comparing integers.

>>> ids = CorpusIds(["b", "a", "c"])
>>> run = ranked_run(["q"], np.array([[0, 1, 2]]), np.array([[1.0, 1.0, 0.0]]), ids,
...                  drop_nonpositive=True)
>>> run.hits(0)
[('a', 1.0), ('b', 1.0)]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmret.retrieval.types import Run

__all__ = ["CorpusIds", "boundary_ties", "ranked_run", "topk_rows"]


class CorpusIds:
    """A corpus's ids in corpus order and sorted: ``doc_ids`` (sorted, the run vocabulary)
    and ``column`` (corpus position -> index into ``doc_ids``)."""

    def __init__(self, ids: Sequence[str]) -> None:
        order = np.argsort(np.asarray(list(ids), dtype=object), kind="stable")
        self.doc_ids = np.asarray(list(ids), dtype=object)[order]
        self.column = np.empty(len(order), dtype=np.int64)
        self.column[order] = np.arange(len(order), dtype=np.int64)
        self.position = order.astype(np.int64)  # column -> corpus position

    def __len__(self) -> int:
        return len(self.column)


def topk_rows(scores: np.ndarray, k: int, column: np.ndarray | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, scores)`` of the ``k`` largest entries of each row of ``scores``
    ``(Q, N)`` (unordered within the row; :func:`ranked_run` orders them). With
    ``column`` (position -> id rank, :attr:`CorpusIds.column`), a tie at the cut is
    resolved by the contract's rule: the lower id rank is kept."""
    scores = np.asarray(scores)
    n = scores.shape[1]
    k = min(int(k), n)
    if k <= 0:
        return (np.empty((scores.shape[0], 0), np.int64), np.empty((scores.shape[0], 0)))
    if k == n:
        pos = np.broadcast_to(np.arange(n), scores.shape).copy()
        return pos.astype(np.int64), scores.copy()
    pos = np.argpartition(-scores, k - 1, axis=1)[:, :k].astype(np.int64)
    top = np.take_along_axis(scores, pos, axis=1)
    if column is not None:
        kth = top.min(axis=1)
        finite = np.isfinite(kth)
        over = ((scores >= kth[:, None]).sum(axis=1) > k) & finite
        for row in np.flatnonzero(over):
            pos[row] = _exact_row(scores[row], k, column)
        top = np.take_along_axis(scores, pos, axis=1)
    return pos, top


def _exact_row(scores: np.ndarray, k: int, column: np.ndarray) -> np.ndarray:
    """Positions of the ``k`` best of one row, ties by the lower ``column``."""
    kth = np.partition(-scores, k - 1)[k - 1] * -1
    above = np.flatnonzero(scores > kth)
    tied = np.flatnonzero(scores == kth)
    tied = tied[np.argsort(column[tied], kind="stable")][: k - above.size]
    return np.concatenate([above, tied]).astype(np.int64)


def boundary_ties(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of ``scores`` ``(Q, k + 1)`` (each row's ``k + 1`` best, any order) whose
    ``k``-th and ``(k + 1)``-th best are tied: the engine's cut may have broken that tie
    against the contract's rule, so those rows need an exact re-ranking."""
    if scores.shape[1] <= k:
        return np.empty(0, dtype=np.int64)
    s = -np.sort(-scores, axis=1)
    return np.flatnonzero((s[:, k - 1] == s[:, k]) & np.isfinite(s[:, k]))


def ranked_run(query_ids: Sequence[str], positions: np.ndarray, scores: np.ndarray,
               ids: CorpusIds, name: str = "run", drop_nonpositive: bool = False,
               k: int | None = None) -> Run:
    """A :class:`Run` from corpus ``positions`` ``(Q, m)`` (``-1`` = none) and their
    ``scores``: invalid entries (position -1, NaN, -inf, and scores <= 0 with
    ``drop_nonpositive``) are removed, rows ordered by score descending then id ascending,
    cut to ``k`` columns, the depth trimmed to the longest row."""
    positions = np.asarray(positions, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64).copy()
    bad = (positions < 0) | ~np.isfinite(s)
    if drop_nonpositive:
        bad |= s <= 0
    cols = np.where(bad, 0, ids.column[np.where(positions < 0, 0, positions)])
    s[bad] = -np.inf
    order = np.lexsort((cols, -s), axis=1) if s.size else np.zeros(s.shape, np.int64)
    cols = np.take_along_axis(cols, order, axis=1)
    s = np.take_along_axis(s, order, axis=1)
    cols[~np.isfinite(s)] = -1
    depth = int((cols >= 0).sum(axis=1).max(initial=0))
    if k is not None:
        depth = min(depth, int(k))
    return Run(tuple(str(q) for q in query_ids), ids.doc_ids, cols[:, :depth].copy(),
               s[:, :depth].copy(), name)

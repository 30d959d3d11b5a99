"""The retrieval contract's data: documents, queries and runs.

A :class:`Run` is what every route, fusion and reranker returns: for each query, the
retrieved document ids and their scores, best first. It is stored padded (``Q × K`` index
and score matrices over one shared id vocabulary) so that fusion, reranking and the IR
metrics are array operations, not dict walks; :meth:`Run.to_dict` gives the
``{query_id: {doc_id: score}}`` form that ``ranx`` and ``pytrec_eval`` use.

Ties: within a query, documents are ordered by score descending, then by document id
ascending (the rule ``ranx`` and ``trec_eval`` apply), so a run's order is fully defined
by its scores. :meth:`Run.from_lists` and every route apply it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Document", "Query", "Run", "as_queries"]


@dataclass(frozen=True)
class Document:
    """One retrievable unit (a passage, a chunk, an image's caption).

    ``title`` is the document's metadata path (EasyRAG's knowledge path, BEIR's title);
    ``meta`` carries anything a filter may test (``{"product": "x"}``)."""

    id: str
    text: str
    title: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Query:
    """One query; ``meta`` is what a route's metadata filter compares with documents'."""

    id: str
    text: str
    meta: Mapping[str, Any] = field(default_factory=dict)


def as_queries(queries: Iterable[Query | str] | Mapping[str, str]) -> list[Query]:
    """Queries from :class:`Query` objects, plain strings (ids ``"0"``, ``"1"``, ...) or a
    ``{id: text}`` mapping."""
    if isinstance(queries, Mapping):
        return [Query(str(k), str(v)) for k, v in queries.items()]
    out: list[Query] = []
    for i, q in enumerate(queries):
        if isinstance(q, Query):
            out.append(q)
        elif isinstance(q, str):
            out.append(Query(str(i), q))
        else:
            raise TypeError(f"query {i}: expected a Query or a str, got {type(q).__name__}")
    return out


@dataclass(frozen=True)
class Run:
    """Ranked results of one retriever for a list of queries.

    Attributes:
        query_ids: ``Q`` query ids, in the order the queries were given.
        doc_ids: the id vocabulary; ``indices`` point into it.
        indices: ``(Q, K)`` int64, row ``i`` the ranked documents of query ``i``; ``-1`` pads
            rows with fewer than ``K`` hits.
        scores: ``(Q, K)`` float64, descending within a row; ``-inf`` where ``indices == -1``.
        name: the route or pipeline that made it (a report's row label).
    """

    query_ids: tuple[str, ...]
    doc_ids: np.ndarray
    indices: np.ndarray
    scores: np.ndarray
    name: str = "run"

    def __post_init__(self) -> None:
        if self.indices.shape != self.scores.shape or self.indices.ndim != 2:
            raise ValueError(
                f"Run {self.name!r}: indices {self.indices.shape} and scores "
                f"{self.scores.shape} must be one (Q, K) shape")
        if self.indices.shape[0] != len(self.query_ids):
            raise ValueError(
                f"Run {self.name!r}: {len(self.query_ids)} query ids for "
                f"{self.indices.shape[0]} rows")

    def __len__(self) -> int:
        return len(self.query_ids)

    @property
    def depth(self) -> int:
        """``K``: the most hits any query has."""
        return int(self.indices.shape[1])

    def hits(self, row: int) -> list[tuple[str, float]]:
        """Query ``row``'s ``(doc_id, score)`` pairs, best first."""
        keep = self.indices[row] >= 0
        return [(str(self.doc_ids[j]), float(s))
                for j, s in zip(self.indices[row][keep], self.scores[row][keep], strict=True)]

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{query_id: {doc_id: score}}`` (ranx's ``Run``, pytrec_eval's run)."""
        return {q: dict(self.hits(i)) for i, q in enumerate(self.query_ids)}

    def top(self, k: int) -> Run:
        """The first ``k`` hits of each query."""
        return Run(self.query_ids, self.doc_ids, self.indices[:, :k].copy(),
                   self.scores[:, :k].copy(), self.name)

    @classmethod
    def from_lists(cls, query_ids: Sequence[str],
                   hits: Sequence[Sequence[tuple[str, float]]], name: str = "run") -> Run:
        """A run from per-query ``(doc_id, score)`` lists (any order: sorted here by score
        descending, ties by doc id ascending). A doc id twice in one query is an error."""
        vocab: dict[str, int] = {}
        depth = max((len(h) for h in hits), default=0)
        indices = np.full((len(hits), depth), -1, dtype=np.int64)
        scores = np.full((len(hits), depth), -np.inf, dtype=np.float64)
        for i, row in enumerate(hits):
            seen: set[str] = set()
            for doc, _ in row:
                if doc in seen:
                    raise ValueError(
                        f"Run {name!r}: document {doc!r} twice for query {query_ids[i]!r}")
                seen.add(doc)
            ordered = sorted(row, key=lambda h: (-float(h[1]), str(h[0])))
            for j, (doc, score) in enumerate(ordered):
                indices[i, j] = vocab.setdefault(str(doc), len(vocab))
                scores[i, j] = float(score)
        doc_ids = np.array(list(vocab), dtype=object)
        return cls(tuple(str(q) for q in query_ids), doc_ids, indices, scores, name)

    @classmethod
    def from_dict(cls, run: Mapping[str, Mapping[str, float]], name: str = "run") -> Run:
        """The inverse of :meth:`to_dict`."""
        return cls.from_lists(list(run), [list(v.items()) for v in run.values()], name)

"""Retrieval pipelines: lexical, dense and learned-sparse routes behind one contract
(:class:`Retriever`: ``search(queries, k) -> Run``), fusion and reranking.

>>> from mmret.retrieval import Run
>>> run = Run.from_lists(["q1"], [[("d2", 0.5), ("d1", 0.9)]])
>>> run.hits(0)
[('d1', 0.9), ('d2', 0.5)]
"""

from mmret.retrieval.base import ROUTES, Retriever, SparseEncoder, build_route, register_route
from mmret.retrieval.types import Document, Query, Run, as_queries

__all__ = [
    "ROUTES",
    "Document",
    "Query",
    "Retriever",
    "Run",
    "SparseEncoder",
    "as_queries",
    "build_route",
    "register_route",
]

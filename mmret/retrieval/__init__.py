"""Retrieval pipelines: lexical, dense and learned-sparse routes behind one contract
(:class:`Retriever`: ``search(queries, k) -> Run``), fusion and reranking.

>>> from mmret.retrieval import Run
>>> run = Run.from_lists(["q1"], [[("d2", 0.5), ("d1", 0.9)]])
>>> run.hits(0)
[('d1', 0.9), ('d2', 0.5)]
"""

# the built-in routes register themselves on import (optional packages load at use)
from mmret.retrieval import bm25 as _bm25  # noqa: F401  (route "bm25")
from mmret.retrieval import dense as _dense  # noqa: F401  (route "dense")
from mmret.retrieval import sparse as _sparse  # noqa: F401  (route "aligned_tokens")
from mmret.retrieval.base import ROUTES, Retriever, SparseEncoder, build_route, register_route
from mmret.retrieval.fusion import FUSIONS, fuse
from mmret.retrieval.pipeline import Pipeline, build_pipeline, easyrag_config
from mmret.retrieval.types import Document, Query, Run, as_queries

__all__ = [
    "FUSIONS",
    "ROUTES",
    "Document",
    "Pipeline",
    "Query",
    "Retriever",
    "Run",
    "SparseEncoder",
    "as_queries",
    "build_pipeline",
    "build_route",
    "easyrag_config",
    "fuse",
    "register_route",
]

"""The one retriever contract and the route registry.

Every route (BM25, dense, learned sparse over a vocabulary), every fusion of routes and
every reranked pipeline is a :class:`Retriever`: ``search(queries, k) -> Run``. A new route
is a new file that registers a factory with :func:`register_route`; ``conf/retrieval/``
names it by ``kind``, and a plugin (``imports: [...]``) can add one without editing mmret.

A learned-sparse route fits without change: it encodes documents into rows of a
``scipy.sparse`` matrix over a vocabulary (:class:`SparseEncoder`), and queries into the
same space (or into their own token ids); :class:`Retriever` does not care how scores are
made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from mmret.registry import Registry
from mmret.retrieval.types import Document, Query, Run

__all__ = ["ROUTES", "Retriever", "SparseEncoder", "build_route", "register_route"]


@runtime_checkable
class Retriever(Protocol):
    """Anything that ranks a corpus for queries.

    ``name`` labels its runs in reports; ``search`` returns, per query, at most ``k`` hits
    ranked by score (ties by document id). Routes are built over a corpus by their factory
    (``build_route(kind, documents, **settings)``), so ``search`` takes only queries."""

    name: str

    def search(self, queries: Sequence[Query], k: int) -> Run: ...


@runtime_checkable
class SparseEncoder(Protocol):
    """Texts to non-negative weights over a vocabulary of ``vocab_size`` terms
    (a ``scipy.sparse.csr_matrix`` of shape ``(len(texts), vocab_size)``)."""

    vocab_size: int

    def encode_documents(self, texts: Sequence[str]) -> Any: ...

    def encode_queries(self, texts: Sequence[str]) -> Any: ...


#: route kind -> factory ``(documents: Sequence[Document], **settings) -> Retriever``
ROUTES: Registry = Registry("retrieval route")
register_route = ROUTES.register


def build_route(kind: str, documents: Sequence[Document], **settings: Any) -> Retriever:
    """Build the route registered as ``kind`` over ``documents``."""
    return ROUTES.get(kind)(documents, **settings)

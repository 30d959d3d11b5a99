"""Input checks shared by routes: documents and queries, with errors that name the id.

- documents: an empty corpus, a non-:class:`Document`, an empty or non-string id, a
  duplicate id (both positions named), an empty text: :class:`ValueError`; with
  ``on_empty="skip"`` documents with empty text are left out, counted and logged.
- queries: an empty text raises naming the query id; with ``on_empty="skip"`` such a query
  gets no hits (counted, logged). Duplicate query ids raise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mmret.retrieval.types import Document, Query

__all__ = ["check_documents", "check_queries"]

logger = logging.getLogger(__name__)

ON_EMPTY = ("raise", "skip")


def check_documents(documents: Sequence[Document], on_empty: str = "raise",
                    where: str = "corpus") -> list[Document]:
    """``documents`` checked (see the module docstring); returns the kept documents."""
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty: expected one of {ON_EMPTY}, got {on_empty!r}")
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"{where}: expected a sequence of Document, got {type(documents).__name__}")
    if len(documents) == 0:
        raise ValueError(f"{where}: no documents (an empty corpus cannot be indexed)")
    seen: dict[str, int] = {}
    kept: list[Document] = []
    skipped: list[str] = []
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise TypeError(f"{where}: document {i} is a {type(doc).__name__}, expected a Document")
        if not isinstance(doc.id, str) or not doc.id:
            raise ValueError(f"{where}: document {i} has id {doc.id!r}; expected a non-empty string")
        if doc.id in seen:
            raise ValueError(f"{where}: duplicate document id {doc.id!r} "
                             f"(positions {seen[doc.id]} and {i})")
        seen[doc.id] = i
        if not isinstance(doc.text, str) or not doc.text.strip():
            if on_empty == "raise":
                raise ValueError(f"{where}: document {doc.id!r} (position {i}) has an empty "
                                 "text (on_empty='skip' leaves such documents out, counted)")
            skipped.append(doc.id)
            continue
        kept.append(doc)
    if skipped:
        logger.warning("%s: skipped %d document(s) with empty text (first: %s)", where,
                       len(skipped), ", ".join(repr(s) for s in skipped[:5]))
    if not kept:
        raise ValueError(f"{where}: every document has an empty text")
    return kept


def check_queries(queries: Sequence[Query], on_empty: str = "raise",
                  where: str = "queries") -> list[int]:
    """Check ``queries``; returns the positions of queries with empty text (only with
    ``on_empty="skip"``; they get no hits, and are logged)."""
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty: expected one of {ON_EMPTY}, got {on_empty!r}")
    seen: dict[str, int] = {}
    empty: list[int] = []
    for i, q in enumerate(queries):
        if not isinstance(q, Query):
            raise TypeError(f"{where}: query {i} is a {type(q).__name__}, expected a Query")
        if q.id in seen:
            raise ValueError(f"{where}: duplicate query id {q.id!r} (positions {seen[q.id]} and {i})")
        seen[q.id] = i
        if not isinstance(q.text, str) or not q.text.strip():
            if on_empty == "raise":
                raise ValueError(f"{where}: query {q.id!r} (position {i}) has an empty text "
                                 "(on_empty_query='skip' gives it no hits, counted)")
            empty.append(i)
    if empty:
        logger.warning("%s: %d query(ies) with empty text get no hits (first: %s)", where,
                       len(empty), ", ".join(repr(queries[i].id) for i in empty[:5]))
    return empty

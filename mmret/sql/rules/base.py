"""The detector's contract: a rule is a function ``(RuleContext) -> list[Finding]``
registered by name in :data:`RULES` (a user adds one with ``@register_rule("name")``).

A :class:`Finding` points at a character span of the query, says what is wrong in one
sentence and, where the rule can, carries a ``fix``: the whole corrected query.

:class:`RuleContext` gives every rule the same parsed tree, schema, resolver, extracted
conditions and (optionally) the read-only database, so rules that need data (ties, NULLs,
duplicated rows) can confirm a suspicion with a query instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from mmret.registry import Registry
from mmret.sql.conditions import Condition, Resolver, extract_conditions
from mmret.sql.database import Database, parse_one
from mmret.sql.schema import Schema

__all__ = ["RULES", "Finding", "RuleContext", "node_span", "register_rule"]


@dataclass(frozen=True)
class Finding:
    """One detected problem: ``rule`` name, ``severity`` (``error``: the result is wrong
    for this data; ``warning``: it may be), ``message``, the span ``[start, end)``, and
    ``fix`` (the corrected query) with ``fix_note`` when the rule has one."""

    rule: str
    severity: str
    message: str
    start: int
    end: int
    fix: str | None = None
    fix_note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity, "message": self.message,
                "span": [self.start, self.end], "fix": self.fix, "fix_note": self.fix_note,
                **({"detail": self.detail} if self.detail else {})}


#: rule name -> ``(RuleContext) -> list[Finding]``
RULES: Registry[Callable[[Any], list[Finding]]] = Registry("sql rule")
register_rule = RULES.register


def node_span(node: Any, sql: str) -> tuple[int, int]:
    """``[start, end)`` of a sqlglot node in ``sql`` from its tokens' positions (leading
    function names and a closing parenthesis included when present)."""
    starts, ends = [], []
    for n in node.walk():
        meta = getattr(n, "meta", None) or {}
        if "start" in meta:
            starts.append(meta["start"])
            ends.append(meta["end"] + 1)
    if not starts:
        return (-1, -1)
    s, e = min(starts), max(ends)
    if s > 0 and sql[s - 1] == "'":
        s -= 1
    # a function node: widen to its "NAME(" and the matching ")"
    name = type(node).__name__
    if name in ("Column", "Literal", "Identifier"):
        return s, e
    k = s
    while k < len(sql) and (sql[k].isalnum() or sql[k] == "_"):
        k += 1
    if k == s or sql[k:k + 1] != "(":
        k = sql.rfind("(", 0, s)
        if k < 0 or sql[k + 1:s].strip().upper() not in ("", "DISTINCT"):
            return s, e
        j = k
        while j > 0 and (sql[j - 1].isalnum() or sql[j - 1] == "_"):
            j -= 1
        if j == k:
            return s, e
        s = j
    depth, quote = 0, False
    for i in range(k, len(sql)):
        ch = sql[i]
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
            if depth == 0:
                return s, max(e, i + 1)
    return s, e


class RuleContext:
    """What every rule reads: ``sql``, its parsed ``tree``, the ``schema``, the optional
    ``database`` and, computed once, ``conditions`` and ``resolver``."""

    def __init__(self, sql: str, schema: Schema | None = None,
                 database: Database | None = None, tree: Any = None) -> None:
        self.sql = sql
        self.tree = tree if tree is not None else parse_one(sql)
        self.database = database
        self.schema = schema if schema is not None else (
            database.schema if database is not None else None)

    @cached_property
    def resolver(self) -> Resolver:
        return Resolver(self.tree, self.schema)

    @cached_property
    def conditions(self) -> list[Condition]:
        return extract_conditions(self.sql, self.schema, tree=self.tree)

    def column(self, table: str | None, name: str) -> Any:
        """The schema's column (or None when unknown)."""
        if self.schema is None or table is None or not self.schema.has_table(table):
            return None
        return self.schema.table(table).column(name)

    def run(self, sql: str) -> list[tuple[Any, ...]] | None:
        """Rows of a read-only probe query, or None without a database / on error."""
        if self.database is None:
            return None
        try:
            return self.database.query(sql).rows
        except Exception:  # noqa: BLE001 - a failed probe only means "cannot confirm"
            return None

    def span(self, node: Any) -> tuple[int, int]:
        return node_span(node, self.sql)

    def to_sql(self, tree: Any) -> str:
        return tree.sql(dialect="sqlite")

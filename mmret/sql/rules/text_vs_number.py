"""Rule ``text_vs_number``: text compared or ordered as if it were a number.

- ``<``, ``<=``, ``>``, ``>=``, ``BETWEEN`` between a **text** column and a number
  literal: SQLite gives the number the column's text affinity and compares strings, so
  ``'9' > '100'``; fix: ``CAST(column AS REAL)``.
- ``ORDER BY``, ``MAX``, ``MIN`` over a text column whose stored values are all numbers
  (sampled with the database when given): the order is lexicographic; fix: ``CAST``.
"""

from __future__ import annotations

from mmret.extras import require
from mmret.sql.conditions import rewrite
from mmret.sql.database import quote_identifier
from mmret.sql.rules.base import Finding, RuleContext, register_rule

NAME = "text_vs_number"
_ORDERING = ("<", "<=", ">", ">=", "BETWEEN", "NOT BETWEEN")


def _numeric_text(ctx: RuleContext, table: str, column: str) -> bool:
    rows = ctx.run(f"SELECT {quote_identifier(column)} FROM {quote_identifier(table)} "
                   f"WHERE {quote_identifier(column)} IS NOT NULL LIMIT 200")
    if not rows:
        return False
    try:
        for (v,) in rows:
            float(v)
    except (TypeError, ValueError):
        return False
    return True


@register_rule(NAME)
def text_vs_number(ctx: RuleContext) -> list[Finding]:
    exp = require("sqlglot.expressions", "sql")
    out, seen = [], set()
    for c in ctx.conditions:
        col = ctx.column(c.table, c.column)
        if col is None or c.function or col.kind != "text" or c.is_string:
            continue
        if c.operator in _ORDERING and (c.column_start, c.column_end) not in seen:
            seen.add((c.column_start, c.column_end))
            col_text = ctx.sql[c.column_start:c.column_end]
            fix = rewrite(ctx.sql, [((c.column_start, c.column_end),
                                     f"CAST({col_text} AS REAL)")], raw=True)
            out.append(Finding(NAME, "error",
                               f"{c.target} is text: {c.operator} {c.literal} compares strings "
                               f"('9' > '100'), not numbers", c.column_start, c.end, fix,
                               "compare CAST(... AS REAL)"))
    # ORDER BY / MAX / MIN over text columns that store numbers
    targets = []
    for order in ctx.tree.find_all(exp.Ordered):
        if isinstance(order.this, exp.Column):
            targets.append((order.this, "ORDER BY"))
    for agg in ctx.tree.find_all(exp.Max, exp.Min):
        if isinstance(agg.this, exp.Column):
            targets.append((agg.this, type(agg).__name__.upper()))
    for node, what in targets:
        ref = ctx.resolver.resolve(node)
        col = ctx.column(ref.table, ref.column)
        if col is None or col.kind != "text" or not _numeric_text(ctx, col.table, col.name):
            continue
        s, e = ctx.span(node)
        if (s, e) in seen or s < 0:
            continue
        seen.add((s, e))
        fix = rewrite(ctx.sql, [((s, e), f"CAST({ctx.sql[s:e]} AS REAL)")], raw=True)
        out.append(Finding(NAME, "error",
                           f"{what} {col.table}.{col.name}: the column is text holding numbers, "
                           f"so it orders as strings ('9' after '100')", s, e, fix,
                           "order by CAST(... AS REAL)"))
    return out

"""Rule ``count_distinct``: ``COUNT(t.x)`` without ``DISTINCT`` over a join that repeats
rows of ``t``.

A join from a table's unique key to another table's non-unique column (one customer, many
orders) repeats the one-side rows, so ``COUNT(customer.id)`` counts orders, not
customers. The rule fires when ``x``'s table is joined on its unique column to a
non-unique one; with a database it first confirms that ``COUNT(DISTINCT x)`` gives a
different result. ``COUNT(*)`` is left alone (it usually means "rows of the join"). Fix:
``COUNT(DISTINCT x)``.
"""

from __future__ import annotations

from mmret.extras import require
from mmret.sql.conditions import column_pairs
from mmret.sql.rules.base import Finding, RuleContext, register_rule

NAME = "count_distinct"


def _duplicating(ctx: RuleContext, table: str) -> bool:
    if ctx.schema is None:
        return False
    for left, right, _, _ in column_pairs(ctx.tree, ctx.schema):
        for a, b in ((left, right), (right, left)):
            if not a.table or not b.table or a.table.lower() != table.lower():
                continue
            if a.table.lower() == b.table.lower():
                continue
            ca, cb = ctx.column(a.table, a.column), ctx.column(b.table, b.column)
            if ca is None or cb is None:
                continue
            if ca.unique and not cb.unique:
                return True
    return False


@register_rule(NAME)
def count_distinct(ctx: RuleContext) -> list[Finding]:
    exp = require("sqlglot.expressions", "sql")
    out = []
    for count in list(ctx.tree.find_all(exp.Count)):
        arg = count.this
        if not isinstance(arg, exp.Column):
            continue
        select = count.find_ancestor(exp.Select)
        if select is None or not select.args.get("joins"):
            continue
        ref = ctx.resolver.resolve(arg)
        if not ref.table or not _duplicating(ctx, ref.table):
            continue
        fixed = ctx.tree.copy()
        target = next(c for c in fixed.find_all(exp.Count) if c == count)
        target.set("this", exp.Distinct(expressions=[arg.copy()]))
        fix = ctx.to_sql(fixed)
        if ctx.database is not None:
            before, after = ctx.run(ctx.sql), ctx.run(fix)
            if before is None or after is None or sorted(map(repr, before)) == sorted(
                    map(repr, after)):
                continue
        s, e = ctx.span(count)
        out.append(Finding(NAME, "error",
                           f"COUNT({arg.sql()}) counts {ref.table} once per joined row: the "
                           f"join repeats {ref.table} rows", s, e, fix,
                           f"COUNT(DISTINCT {arg.sql()})"))
    return out

"""Rule ``aggregate_group_by``: an aggregate beside plain columns without the GROUP BY
they need.

SQLite accepts ``SELECT country, COUNT(*) FROM singer`` and returns **one** row with an
arbitrary country; the question almost always wanted one row per country. Also fires when
a GROUP BY exists but a selected plain column is neither grouped nor determined by a
grouped primary key. Fix: group by the plain columns (sqlglot re-prints the query).
"""

from __future__ import annotations

from mmret.extras import require
from mmret.sql.rules.base import Finding, RuleContext, register_rule

NAME = "aggregate_group_by"


def _in_own_select(node, select, exp) -> bool:
    cur = node.parent
    while cur is not None and cur is not select:
        if isinstance(cur, (exp.Select, exp.Subquery)):
            return False
        cur = cur.parent
    return cur is select


@register_rule(NAME)
def aggregate_group_by(ctx: RuleContext) -> list[Finding]:
    exp = require("sqlglot.expressions", "sql")
    out = []
    for select in list(ctx.tree.find_all(exp.Select)):
        projections = select.expressions
        has_agg = any(any(_in_own_select(a, select, exp) for a in p.find_all(exp.AggFunc))
                      or isinstance(p.unalias(), exp.AggFunc) for p in projections)
        if not has_agg:
            continue
        plain = []
        for p in projections:
            inner = p.unalias()
            if isinstance(inner, exp.Column):
                plain.append(inner)
        if not plain:
            continue
        group = select.args.get("group")
        if group is None:
            missing = plain
        else:
            grouped = {g.sql().lower() for g in group.expressions}
            grouped_names = {g.name.lower() for g in group.expressions if isinstance(g, exp.Column)}
            missing = []
            for col in plain:
                if col.sql().lower() in grouped or col.name.lower() in grouped_names:
                    continue
                ref = ctx.resolver.resolve(col)
                pk_grouped = False
                if ctx.schema is not None and ref.table and ctx.schema.has_table(ref.table):
                    for g in group.expressions:
                        if isinstance(g, exp.Column):
                            gref = ctx.resolver.resolve(g)
                            if (gref.table or "").lower() == ref.table.lower() and \
                                    ctx.schema.is_unique(gref.table, gref.column):
                                pk_grouped = True
                if not pk_grouped:
                    missing.append(col)
        if not missing:
            continue
        fixed = ctx.tree.copy()
        target = next(s for s in fixed.find_all(exp.Select) if s == select)
        target.group_by(*[m.copy() for m in missing], copy=False)
        starts = [ctx.span(m) for m in missing]
        s = min(x[0] for x in starts)
        e = max(x[1] for x in starts)
        names = ", ".join(m.sql() for m in missing)
        what = "no GROUP BY" if group is None else "a GROUP BY that does not include them"
        out.append(Finding(NAME, "error",
                           f"aggregate selected beside {names} with {what}: SQLite returns one "
                           f"arbitrary value per group instead of one row per {names}",
                           s, e, ctx.to_sql(fixed), f"GROUP BY {names}"))
    return out

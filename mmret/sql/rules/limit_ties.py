"""Rule ``limit_ties``: ``ORDER BY x [DESC] LIMIT 1`` used as an arg-max while several
rows share the best ``x``.

The query returns one of the tied rows, arbitrarily. With a database the rule confirms
the tie with a probe (the same query selecting ``x`` with ``LIMIT 2``); without one it
fires as a warning only when ``x`` is an aggregate or a non-unique column. Fix: keep every
row whose ``x`` equals the extreme::

    ... WHERE x = (SELECT MAX(x) FROM <same FROM/WHERE>)            -- plain x
    ... HAVING agg = (SELECT MAX(_v) FROM (SELECT agg AS _v ...))     -- aggregate x
"""

from __future__ import annotations

from mmret.extras import require
from mmret.sql.rules.base import Finding, RuleContext, register_rule

NAME = "limit_ties"


def _limit_one(select, exp) -> bool:
    limit = select.args.get("limit")
    if limit is None or select.args.get("offset") is not None:
        return False
    value = limit.expression if hasattr(limit, "expression") else None
    return isinstance(value, exp.Literal) and str(value.this) == "1"


@register_rule(NAME)
def limit_ties(ctx: RuleContext) -> list[Finding]:
    exp = require("sqlglot.expressions", "sql")
    out = []
    for select in list(ctx.tree.find_all(exp.Select)):
        order = select.args.get("order")
        if order is None or len(order.expressions) != 1 or not _limit_one(select, exp):
            continue
        ordered = order.expressions[0]
        key = ordered.this
        if isinstance(key, exp.Column) and not key.table:  # ORDER BY a projection alias
            alias = next((p for p in select.expressions if isinstance(p, exp.Alias)
                          and p.alias.lower() == key.name.lower()), None)
            if alias is not None:
                key = alias.this
        desc = bool(ordered.args.get("desc"))
        is_agg = isinstance(key, exp.AggFunc)
        probe = select.copy()
        probe.set("expressions", [key.copy()])
        probe.set("limit", exp.Limit(expression=exp.Literal.number(2)))
        rows = ctx.run(probe.sql(dialect="sqlite"))
        if rows is not None:
            if len(rows) < 2 or rows[0][0] != rows[1][0] or rows[0][0] is None:
                continue
            severity, why = "error", f"two rows share the best value {rows[0][0]!r}"
        else:
            if isinstance(key, exp.Column):
                ref = ctx.resolver.resolve(key)
                col = ctx.column(ref.table, ref.column)
                if col is None or col.unique:
                    continue
            elif not is_agg:
                continue
            severity, why = "warning", "the ordering value may be shared by several rows"
        extreme = "MAX" if desc else "MIN"
        fixed = select.copy()
        fixed.set("order", None)
        fixed.set("limit", None)
        if is_agg:
            inner = select.copy()
            inner.set("order", None)
            inner.set("limit", None)
            inner.set("expressions", [exp.alias_(key.copy(), "_v")])
            cond = f"{key.sql(dialect='sqlite')} = (SELECT {extreme}(_v) FROM " \
                   f"({inner.sql(dialect='sqlite')}) AS _t)"
            fixed = fixed.having(cond, dialect="sqlite")
        else:
            inner = select.copy()
            inner.set("order", None)
            inner.set("limit", None)
            inner.set("group", None)
            inner.set("expressions", [exp.func(extreme, key.copy())])
            cond = f"{key.sql(dialect='sqlite')} = ({inner.sql(dialect='sqlite')})"
            fixed = fixed.where(cond, dialect="sqlite")
        whole = ctx.tree.copy()
        if select is ctx.tree:
            fix = fixed.sql(dialect="sqlite")
        else:
            target = next(s for s in whole.find_all(exp.Select) if s == select)
            target.replace(fixed)
            fix = whole.sql(dialect="sqlite")
        s, e = ctx.span(order)
        lim = ctx.span(select.args["limit"])
        out.append(Finding(NAME, severity,
                           f"ORDER BY {key.sql()} {'DESC ' if desc else ''}LIMIT 1 picks one row "
                           f"arbitrarily when several tie ({why})",
                           s, max(e, lim[1]), fix, f"keep every row where {key.sql()} is the "
                           f"{extreme.lower()}"))
    return out

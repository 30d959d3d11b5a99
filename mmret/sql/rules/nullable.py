"""Rule ``nullable_condition``: a negative condition (``!=``, ``<>``, ``NOT IN``,
``NOT LIKE``) on a nullable column that holds NULLs.

``x != 'a'`` is NULL — not true — where ``x`` is NULL, so those rows silently drop out of
"everything except a". Fires when the schema says the column is nullable (or does not
say) and, with a database, the column really holds NULLs; a condition already paired with
``OR x IS NULL`` is left alone. Fix: ``(x != 'a' OR x IS NULL)``.
"""

from __future__ import annotations

from mmret.extras import require
from mmret.sql.rules.base import Finding, RuleContext, register_rule

NAME = "nullable_condition"


def _column_of(node, exp):
    if isinstance(node, exp.NEQ):
        for side in (node.this, node.expression):
            if isinstance(side, exp.Column):
                other = node.expression if side is node.this else node.this
                if not isinstance(other, exp.Column):
                    return side
        return None
    if isinstance(node, exp.Not) and isinstance(node.this, (exp.In, exp.Like)):
        return node.this.this if isinstance(node.this.this, exp.Column) else None
    if isinstance(node, exp.Like) and node.args.get("negate"):
        return node.this if isinstance(node.this, exp.Column) else None
    return None


def _guarded(node, col, exp) -> bool:
    cur = node
    while cur.parent is not None and isinstance(cur.parent, (exp.Or, exp.Paren)):
        parent = cur.parent
        if isinstance(parent, exp.Or):
            other = parent.expression if parent.this is cur else parent.this
            for isnode in other.find_all(exp.Is):
                if isinstance(isnode.this, exp.Column) and isnode.this.name.lower() == \
                        col.name.lower() and isinstance(isnode.expression, exp.Null):
                    return True
        cur = parent
    return False


@register_rule(NAME)
def nullable_condition(ctx: RuleContext) -> list[Finding]:
    exp = require("sqlglot.expressions", "sql")
    out = []
    for node in list(ctx.tree.walk()):
        col = _column_of(node, exp)
        if col is None or _guarded(node, col, exp):
            continue
        if not (node.find_ancestor(exp.Where) or node.find_ancestor(exp.Having)):
            continue
        ref = ctx.resolver.resolve(col)
        c = ctx.column(ref.table, ref.column)
        if c is None or c.nullable is False or c.primary_key:
            continue
        if ctx.database is not None and not ctx.database.has_null(c.table, c.name):
            continue
        fixed = ctx.tree.copy()
        target = next(n for n in fixed.walk() if n == node and type(n) is type(node))
        guard = exp.Paren(this=exp.Or(this=target.copy(), expression=exp.Is(
            this=col.copy(), expression=exp.Null())))
        target.replace(guard)
        s, e = ctx.span(node)
        out.append(Finding(NAME, "warning",
                           f"{c.table}.{c.name} holds NULLs: {node.sql()} drops those rows "
                           f"(NULL is neither equal nor unequal)", s, e, ctx.to_sql(fixed),
                           f"add OR {col.sql()} IS NULL if they should count"))
    return out

"""Rule ``join_not_fk``: a join equality ``a.x = b.y`` between two tables that is not a
declared foreign key (Tool-SQL's first error-detector check, ``METHODS-TEXT.md`` §5b).

Fires only when the schema declares at least one foreign key (a schema without any says
nothing about joins). When exactly one declared key links the two tables, the fix
rewrites the equality onto it, keeping the query's qualifiers.
"""

from __future__ import annotations

from mmret.sql.conditions import column_pairs
from mmret.sql.conditions import rewrite as rewrite_spans
from mmret.sql.rules.base import Finding, RuleContext, register_rule

NAME = "join_not_fk"


@register_rule(NAME)
def join_not_fk(ctx: RuleContext) -> list[Finding]:
    schema = ctx.schema
    if schema is None or not schema.foreign_keys:
        return []
    out = []
    for left, right, node, _clause in column_pairs(ctx.tree, schema):
        if not left.table or not right.table or left.table.lower() == right.table.lower():
            continue
        if schema.is_foreign_key(left.table, left.column, right.table, right.column):
            continue
        keys = [fk for fk in schema.foreign_keys
                if {fk.table.lower(), fk.ref_table.lower()}
                == {left.table.lower(), right.table.lower()}]
        start, end = ctx.span(node)
        fix = note = None
        if len(keys) == 1 and start >= 0:
            fk = keys[0]
            lq = left.qualifier or left.table
            rq = right.qualifier or right.table
            if fk.table.lower() == left.table.lower():
                text = f"{lq}.{fk.column} = {rq}.{fk.ref_column}"
            else:
                text = f"{lq}.{fk.ref_column} = {rq}.{fk.column}"
            fix = rewrite_spans(ctx.sql, [((start, end), text)], raw=True)
            note = f"join on the declared key {fk.table}.{fk.column} -> " \
                   f"{fk.ref_table}.{fk.ref_column}"
        declared = "; ".join(f"{k.table}.{k.column} -> {k.ref_table}.{k.ref_column}"
                             for k in keys) or "none"
        out.append(Finding(
            NAME, "error",
            f"{left.table}.{left.column} = {right.table}.{right.column} is not a declared "
            f"foreign key (declared between these tables: {declared})",
            start, end, fix, note or ""))
    return out

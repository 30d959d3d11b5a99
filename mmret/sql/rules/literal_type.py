"""Rule ``literal_type``: a literal whose type cannot match its column.

- a number/boolean column compared (``=``, ``!=``, ``IN``) with a string that is not a
  number (``age = 'thirty'`` is never true);
- a text column compared with a bare number (``code = 7`` where codes are text; fix:
  quote it);
- a time column compared (any operator) with a date string not in ISO ``YYYY-MM-DD``
  form, when the column's stored values are ISO (``'15.03.2021'``, ``'March 15, 2021'``):
  SQLite compares the text, so the condition is silently false or mis-ordered; the fix
  writes the ISO date when the string parses in exactly one way.

Accepted date forms (``strptime``): ``%d/%m/%Y``, ``%m/%d/%Y``, ``%d.%m.%Y``,
``%Y/%m/%d``, ``%B %d, %Y``, ``%b %d, %Y``, ``%d %B %Y``, ``%d %b %Y``, ``%Y%m%d``.
"""

from __future__ import annotations

import re
from datetime import datetime

from mmret.sql.conditions import rewrite, sql_literal
from mmret.sql.database import quote_identifier
from mmret.sql.rules.base import Finding, RuleContext, register_rule

NAME = "literal_type"
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?$")
DATE_FORMATS = ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%B %d, %Y", "%b %d, %Y",
                "%d %B %Y", "%d %b %Y", "%Y%m%d")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def parse_date(text: str) -> list[str]:
    """Every distinct ISO date ``text`` parses to under :data:`DATE_FORMATS`."""
    out: list[str] = []
    for fmt in DATE_FORMATS:
        try:
            iso = datetime.strptime(text.strip(), fmt).date().isoformat()
        except ValueError:
            continue
        if iso not in out:
            out.append(iso)
    return out


def _iso_column(ctx: RuleContext, table: str, column: str) -> bool:
    rows = ctx.run(f"SELECT {quote_identifier(column)} FROM {quote_identifier(table)} "
                   f"WHERE {quote_identifier(column)} IS NOT NULL LIMIT 50")
    if rows is None:
        return True  # no data: assume ISO, SQLite's documented date format
    return bool(rows) and all(isinstance(r[0], str) and ISO.match(r[0]) for r in rows)


@register_rule(NAME)
def literal_type(ctx: RuleContext) -> list[Finding]:
    out = []
    for c in ctx.conditions:
        col = ctx.column(c.table, c.column)
        if col is None or c.function:
            continue
        kind = col.kind
        if kind in ("number", "boolean") and c.is_string and c.operator in (
                "=", "!=", "IN", "NOT IN") and not _is_number(str(c.value)):
            out.append(Finding(NAME, "error",
                               f"{c.target} holds {kind}s but is compared with the text "
                               f"{c.literal}, which is not a number", c.start, c.end))
        elif kind == "text" and not c.is_string and c.operator in ("=", "!=", "IN", "NOT IN"):
            out.append(Finding(NAME, "warning",
                               f"{c.target} holds text but is compared with the number "
                               f"{c.literal}", c.start, c.end,
                               rewrite(ctx.sql, [(c, str(c.value))]),
                               "quote the literal"))
        elif kind == "time" and c.is_string and c.operator not in ("LIKE", "NOT LIKE", "GLOB") \
                and not ISO.match(str(c.value)):
            dates = parse_date(str(c.value))
            if not dates or not _iso_column(ctx, col.table, col.name):
                continue
            fix = rewrite(ctx.sql, [(c, dates[0])]) if len(dates) == 1 else None
            how = (f"write it as {sql_literal(dates[0])}" if len(dates) == 1 else
                   f"it is ambiguous ({', '.join(dates)})")
            out.append(Finding(NAME, "error",
                               f"{c.target} stores ISO dates (YYYY-MM-DD) but {c.literal} is "
                               f"another format; {how}", c.start, c.end, fix,
                               "ISO date" if fix else ""))
    return out

"""The mismatch detector: rules over the sqlglot AST and the schema, registered by name.

Built-in rules (one module each): ``join_not_fk``, ``literal_type``, ``text_vs_number``,
``aggregate_group_by``, ``limit_ties``, ``count_distinct``, ``nullable_condition``.
A user adds one with::

    from mmret.sql.rules import Finding, register_rule

    @register_rule("no_select_star")
    def no_select_star(ctx):
        return [Finding("no_select_star", "warning", "SELECT * ...", 0, len(ctx.sql))
                for _ in ctx.tree.find_all(exp.Star)]

:func:`detect` runs every registered rule (or the named ones) and returns the findings
ordered by position.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmret.sql.database import Database
from mmret.sql.rules import (  # noqa: F401  (registers the built-in rules)
    count_distinct,
    group_by,
    join_fk,
    limit_ties,
    literal_type,
    nullable,
    text_vs_number,
)
from mmret.sql.rules.base import RULES, Finding, RuleContext, node_span, register_rule
from mmret.sql.schema import Schema

__all__ = ["BUILTIN_RULES", "RULES", "Finding", "RuleContext", "detect", "node_span",
           "register_rule"]

BUILTIN_RULES = ("join_not_fk", "literal_type", "text_vs_number", "aggregate_group_by",
                 "limit_ties", "count_distinct", "nullable_condition")


def detect(sql: str, schema: Schema | None = None, database: Database | None = None,
           rules: Sequence[str] | None = None) -> list[Finding]:
    """Findings of the ``rules`` (default: every registered rule) on ``sql``; raises
    :class:`~mmret.sql.errors.SQLParseError` when it does not parse."""
    ctx = RuleContext(sql, schema, database)
    names = list(rules) if rules is not None else RULES.names()
    out: list[Finding] = []
    for name in names:
        out.extend(RULES.get(name)(ctx))
    return sorted(out, key=lambda f: (f.start, f.rule))

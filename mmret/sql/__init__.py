"""Retrieval for text-to-SQL (Tool-SQL, ``METHODS-TEXT.md`` §5b): a database value
retriever for conditions that match no cell, and a detector of silent constraint errors.

- :mod:`mmret.sql.conditions` — ``(table, column, operator, literal)`` with positions.
- :mod:`mmret.sql.database` — read-only, time-limited, one-statement SQLite access.
- :mod:`mmret.sql.schema` — schemas from Spider's ``tables.json`` or SQLite's catalogue.
- :mod:`mmret.sql.values` — the value retriever (any :mod:`mmret.retrieval` route).
- :mod:`mmret.sql.rules` — mismatch detector rules, registered by name.
- :mod:`mmret.sql.refine` — the refinement loop (rule-based or LLM refiner).
- :mod:`mmret.sql.spider` — Spider-format data; :mod:`mmret.sql.benchmark` — the
  embedded benchmark generator.

Needs the ``sql`` extra (``pip install 'mmret[sql]'``: sqlglot, rapidfuzz).
"""

from mmret.sql.conditions import Condition, extract_conditions, rewrite
from mmret.sql.database import Database, check_read_only
from mmret.sql.errors import (
    DatabaseError,
    SchemaError,
    SQLError,
    SQLParseError,
    UnsafeSQLError,
)
from mmret.sql.refine import LLMRefiner, RuleRefiner, refine
from mmret.sql.rules import Finding, detect, register_rule
from mmret.sql.schema import Schema
from mmret.sql.values import ValueRetriever

__all__ = [
    "Condition",
    "Database",
    "DatabaseError",
    "Finding",
    "LLMRefiner",
    "RuleRefiner",
    "SQLError",
    "SQLParseError",
    "Schema",
    "SchemaError",
    "UnsafeSQLError",
    "ValueRetriever",
    "check_read_only",
    "detect",
    "extract_conditions",
    "refine",
    "register_rule",
    "rewrite",
]

"""Errors of :mod:`mmret.sql`: one class per kind of bad input, each message self-contained.

- :class:`SQLParseError`: the SQL does not parse (the message quotes it).
- :class:`UnsafeSQLError`: several statements, or a statement that could write (``DROP``,
  ``UPDATE``, ``ATTACH``, a ``PRAGMA`` assignment, ...): refused before anything runs.
- :class:`SchemaError`: a table or column the schema does not have.
- :class:`DatabaseError`: the database path (outside the root, missing) or a failed or
  timed-out query (the message quotes the query).
"""

from __future__ import annotations

__all__ = ["DatabaseError", "SQLError", "SQLParseError", "SchemaError", "UnsafeSQLError",
           "quote_query"]


def quote_query(sql: str, limit: int = 300) -> str:
    """``sql`` on one line, cut to ``limit`` characters, in double quotes (for messages)."""
    one = " ".join(str(sql).split())
    return '"' + (one if len(one) <= limit else one[:limit - 3] + "...") + '"'


class SQLError(ValueError):
    """Base of every :mod:`mmret.sql` input error; ``query`` is the offending SQL (or None)."""

    def __init__(self, message: str, query: str | None = None) -> None:
        self.query = query
        super().__init__(message if query is None else f"{message} in {quote_query(query)}")


class SQLParseError(SQLError):
    """The SQL does not parse in the SQLite dialect."""


class UnsafeSQLError(SQLError):
    """Several statements, or one that is not a read-only query."""


class SchemaError(SQLError):
    """A table or column that the schema does not have."""


class DatabaseError(SQLError):
    """The database file cannot be used, or a query failed / ran out of time."""

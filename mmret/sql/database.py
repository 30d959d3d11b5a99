"""Read-only SQLite access for the value retriever, the detector and execution accuracy.

Safety, in layers (each alone would refuse a write):

1. **The statement gate** (:func:`check_read_only`): the SQL must parse (sqlglot, SQLite
   dialect) into exactly **one** statement that is a query (``SELECT``, ``WITH ... SELECT``,
   ``UNION``/``INTERSECT``/``EXCEPT``) and contains no DML/DDL/``ATTACH``/``PRAGMA``/raw
   command node anywhere. Anything else raises before a connection is touched.
2. **The connection**: opened as ``file:<path>?mode=ro`` (``uri=True``), so SQLite itself
   refuses writes (and never creates a missing file), plus ``PRAGMA query_only = ON``.
3. **An authorizer** (``sqlite3.Connection.set_authorizer``) that allows only reads,
   selects, functions and recursive CTEs, and denies everything else (``ATTACH``, writes,
   ``PRAGMA`` assignments).
4. **A time limit**: a progress handler interrupts a query running past ``timeout_s``.

Values always travel as parameters (``?``); identifiers come only from the schema and are
double-quoted. A path outside ``root`` (after resolving symlinks) is refused. Every error
is a :class:`~mmret.sql.errors.SQLError` subclass that quotes the query.

>>> import sqlite3, tempfile, os
>>> d = tempfile.mkdtemp(); p = os.path.join(d, "x.sqlite")
>>> c = sqlite3.connect(p); _ = c.execute("CREATE TABLE t (a TEXT)"); c.commit(); c.close()
>>> with Database(p, root=d) as db:
...     db.query("SELECT count(*) FROM t").rows
[(0,)]
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmret.extras import require
from mmret.sql.errors import DatabaseError, SQLParseError, UnsafeSQLError
from mmret.sql.schema import Schema

__all__ = ["Database", "QueryResult", "check_read_only", "parse_one", "quote_identifier"]

_SQLITE_HEADER = b"SQLite format 3\x00"
_QUERY_TYPES = ("Select", "Union", "Intersect", "Except")
_FORBIDDEN = ("Insert", "Update", "Delete", "Drop", "Create", "Alter", "Attach", "Detach",
              "Pragma", "Command", "Merge", "Transaction", "Commit", "Rollback", "Set",
              "TruncateTable", "LoadData", "Use", "Copy", "Analyze")


def parse_one(sql: str) -> Any:
    """Parse ``sql`` (SQLite dialect) into one sqlglot expression; raise
    :class:`SQLParseError` when it does not parse and :class:`UnsafeSQLError` when it holds
    several statements."""
    sqlglot = require("sqlglot", "sql")
    if not isinstance(sql, str) or not sql.strip():
        raise SQLParseError("empty SQL", query=str(sql))
    try:
        statements = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
    except sqlglot.errors.ParseError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise SQLParseError(f"SQL does not parse ({first})", query=sql) from None
    except sqlglot.errors.TokenError as exc:
        raise SQLParseError(f"SQL does not tokenise ({exc})", query=sql) from None
    if len(statements) != 1:
        raise UnsafeSQLError(f"expected one statement, got {len(statements)}", query=sql)
    return statements[0]


def check_read_only(sql: str) -> Any:
    """The parsed statement if ``sql`` is exactly one read-only query, else raise
    (:class:`SQLParseError` / :class:`UnsafeSQLError`) naming what was refused."""
    tree = parse_one(sql)
    kind = type(tree).__name__
    if kind not in _QUERY_TYPES:
        raise UnsafeSQLError(f"only read-only queries are allowed, got a {kind.upper()} "
                             f"statement", query=sql)
    for node in tree.walk():
        name = type(node).__name__
        if name in _FORBIDDEN:
            raise UnsafeSQLError(f"a {name.upper()} inside the query is not allowed", query=sql)
        if name == "Anonymous" and str(node.name).lower() == "load_extension":
            raise UnsafeSQLError("load_extension() is not allowed", query=sql)
    return tree


def quote_identifier(name: str) -> str:
    """SQLite double-quoted identifier (``"`` doubled)."""
    return '"' + str(name).replace('"', '""') + '"'


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of one query."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def _authorizer(action: int, arg1: Any, arg2: Any, db: Any, trigger: Any) -> int:
    allowed = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
               getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
    if action in allowed:
        if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() == "load_extension":
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg2 is None:  # reading a pragma, not setting it
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


class Database:
    """One SQLite file opened read-only (module docstring).

    Args:
        path: the ``.sqlite`` file; must exist and be a SQLite database.
        root: when given, ``path`` must lie inside it (symlinks resolved).
        timeout_s: wall-clock limit of each query.
        schema: the schema to use (e.g. from Spider's ``tables.json``); default: read from
            the database's own catalogue.
    """

    def __init__(self, path: str | os.PathLike, root: str | os.PathLike | None = None,
                 timeout_s: float = 5.0, schema: Schema | None = None) -> None:
        raw = Path(path)
        resolved = raw.resolve()
        if root is not None:
            root_resolved = Path(root).resolve()
            if not resolved.is_relative_to(root_resolved):
                raise DatabaseError(f"database {str(raw)!r} is outside the allowed root "
                                    f"{str(root_resolved)!r}")
        if not resolved.is_file():
            raise DatabaseError(f"database {str(raw)!r} does not exist (or is not a file)")
        with open(resolved, "rb") as fh:
            if fh.read(16) != _SQLITE_HEADER:
                raise DatabaseError(f"{str(raw)!r} is not a SQLite 3 database")
        if float(timeout_s) <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.path = resolved
        self.timeout_s = float(timeout_s)
        self._conn = sqlite3.connect(resolved.as_uri() + "?mode=ro", uri=True,
                                     check_same_thread=False)
        self._conn.execute("PRAGMA query_only = ON")
        self._schema = schema
        self._schema = schema if schema is not None else Schema.from_sqlite(
            self._conn, db_id=resolved.stem)
        self._conn.set_authorizer(_authorizer)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def schema(self) -> Schema:
        return self._schema

    def stamp(self) -> tuple[int, int]:
        """``(mtime_ns, size)`` of the file: caches compare it to notice a change."""
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size)

    # ------------------------------------------------------------------ running
    def _run(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        deadline = time.monotonic() + self.timeout_s

        def progress() -> int:
            return 1 if time.monotonic() > deadline else 0

        self._conn.set_progress_handler(progress, 2000)
        try:
            cur = self._conn.execute(sql, tuple(params))
            rows = cur.fetchall()
            cols = tuple(d[0] for d in cur.description or ())
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise DatabaseError(f"query ran past its time limit of {self.timeout_s:g} s",
                                    query=sql) from None
            raise DatabaseError(f"query failed: {exc}", query=sql) from None
        except (sqlite3.DatabaseError, sqlite3.Warning, sqlite3.ProgrammingError) as exc:
            raise DatabaseError(f"query failed: {exc}", query=sql) from None
        finally:
            self._conn.set_progress_handler(None, 0)
        return QueryResult(cols, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        """Run one read-only query (checked by :func:`check_read_only`) with ``params``
        bound to its ``?`` placeholders."""
        check_read_only(sql)
        return self._run(sql, params)

    def _ident(self, table: str, column: str | None = None) -> tuple[str, str | None]:
        t = self.schema.table(table)
        c = self.schema.column(t.name, column).name if column is not None else None
        return quote_identifier(t.name), (quote_identifier(c) if c is not None else None)

    def distinct_values(self, table: str, column: str) -> list[Any]:
        """Every distinct non-NULL value of ``table.column`` (sorted by SQLite's order)."""
        t, c = self._ident(table, column)
        sql = f"SELECT DISTINCT {c} FROM {t} WHERE {c} IS NOT NULL ORDER BY {c}"
        return [r[0] for r in self._run(sql).rows]

    def count_distinct(self, table: str, column: str) -> int:
        t, c = self._ident(table, column)
        return int(self._run(f"SELECT COUNT(DISTINCT {c}) FROM {t}").rows[0][0])

    def matches(self, table: str, column: str, operator: str, value: Any) -> bool:
        """Does at least one row satisfy ``table.column <operator> value``? ``operator`` is
        one of ``= != <> < <= > >= LIKE GLOB``; ``value`` is bound as a parameter."""
        op = operator.upper()
        if op not in {"=", "==", "!=", "<>", "<", "<=", ">", ">=", "LIKE", "GLOB"}:
            raise ValueError(f"matches: unsupported operator {operator!r}")
        t, c = self._ident(table, column)
        rows = self._run(f"SELECT 1 FROM {t} WHERE {c} {op} ? LIMIT 1", (value,)).rows
        return bool(rows)

    def has_null(self, table: str, column: str) -> bool:
        t, c = self._ident(table, column)
        return bool(self._run(f"SELECT 1 FROM {t} WHERE {c} IS NULL LIMIT 1").rows)

"""A database schema for the detector and the value retriever: tables, typed columns,
primary keys, uniqueness, nullability and foreign keys.

Two sources:

- :meth:`Schema.from_spider` — one entry of Spider's ``tables.json`` (``db_id``,
  ``table_names_original``, ``column_names_original`` as ``[table_index, name]`` with
  ``[-1, "*"]`` first, ``column_types``, ``primary_keys`` and ``foreign_keys`` as column
  indices). Spider records no nullability: ``nullable`` is ``None`` (unknown).
- :meth:`Schema.from_sqlite` — SQLite's own catalogue (``PRAGMA table_info``,
  ``foreign_key_list``, ``index_list``/``index_info``), read through a read-only
  connection.

Column kinds follow Spider's ``column_types`` (``text``, ``number``, ``time``,
``boolean``, ``others``); a declared SQLite type maps by SQLite's affinity rules (§3.1 of
https://sqlite.org/datatype3.html: ``INT`` → number, ``CHAR``/``CLOB``/``TEXT`` → text,
``REAL``/``FLOA``/``DOUB`` → number, ``BLOB`` or none → others), with ``DATE``/``TIME``
→ time and ``BOOL`` → boolean checked first. Names are matched case-insensitively, as
SQLite does.

>>> s = Schema.from_dict({"singer": {"columns": {"id": "integer", "country": "text"}}})
>>> s.column("SINGER", "Country").kind
'text'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmret.sql.errors import SchemaError

__all__ = ["Column", "ForeignKey", "Schema", "Table", "affinity_kind", "load_spider_schemas"]


def affinity_kind(declared: str | None) -> str:
    """Spider-style kind of a declared SQLite column type (module docstring)."""
    t = (declared or "").upper()
    if "BOOL" in t:
        return "boolean"
    if "DATE" in t or "TIME" in t:
        return "time"
    if "INT" in t:
        return "number"
    if any(x in t for x in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if any(x in t for x in ("REAL", "FLOA", "DOUB", "NUM", "DEC")):
        return "number"
    return "others"


@dataclass(frozen=True)
class Column:
    """One column: ``kind`` (text/number/time/boolean/others), ``nullable`` (None:
    unknown), ``primary_key`` and ``unique`` (a one-column PK or UNIQUE index)."""

    table: str
    name: str
    kind: str
    declared: str = ""
    nullable: bool | None = None
    primary_key: bool = False
    unique: bool = False


@dataclass(frozen=True)
class ForeignKey:
    """``table.column`` references ``ref_table.ref_column``."""

    table: str
    column: str
    ref_table: str
    ref_column: str


@dataclass
class Table:
    """A table's columns in declaration order (looked up case-insensitively)."""

    name: str
    columns: list[Column] = field(default_factory=list)

    def column(self, name: str) -> Column | None:
        low = name.lower()
        return next((c for c in self.columns if c.name.lower() == low), None)


@dataclass
class Schema:
    """Tables and foreign keys of one database (``db_id`` its name)."""

    tables: dict[str, Table]
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    db_id: str = ""

    # ------------------------------------------------------------------ lookup
    def table(self, name: str) -> Table:
        """The table ``name`` (case-insensitive); :class:`SchemaError` names the known ones."""
        t = self.tables.get(name.lower())
        if t is None:
            raise SchemaError(f"no table {name!r} in database {self.db_id or '?'!r} "
                              f"(tables: {', '.join(t.name for t in self.tables.values())})")
        return t

    def has_table(self, name: str) -> bool:
        return name.lower() in self.tables

    def column(self, table: str, name: str) -> Column:
        """Column ``table.name``; :class:`SchemaError` names the table's columns."""
        t = self.table(table)
        c = t.column(name)
        if c is None:
            raise SchemaError(f"no column {name!r} in table {t.name!r} "
                              f"(columns: {', '.join(c.name for c in t.columns)})")
        return c

    def tables_with(self, column: str, among: Iterable[str]) -> list[str]:
        """Which of the tables ``among`` have a column ``column``."""
        return [t for t in among if self.has_table(t) and self.table(t).column(column)]

    def is_foreign_key(self, t1: str, c1: str, t2: str, c2: str) -> bool:
        """Is ``t1.c1 = t2.c2`` a declared foreign key (either direction)?"""
        a, b = (t1.lower(), c1.lower()), (t2.lower(), c2.lower())
        for fk in self.foreign_keys:
            x = (fk.table.lower(), fk.column.lower())
            y = (fk.ref_table.lower(), fk.ref_column.lower())
            if (x, y) in ((a, b), (b, a)):
                return True
        return False

    def is_unique(self, table: str, column: str) -> bool:
        c = self.column(table, column)
        return c.primary_key or c.unique

    # ------------------------------------------------------------------ sources
    @classmethod
    def from_dict(cls, tables: Mapping[str, Mapping[str, Any]],
                  foreign_keys: Iterable[tuple[str, str, str, str]] = (), db_id: str = "",
                  ) -> Schema:
        """A schema from ``{table: {"columns": {name: declared_type}, "primary_key":
        [..], "not_null": [..]}}`` (tests and small hand-written schemas)."""
        out: dict[str, Table] = {}
        for tname, spec in tables.items():
            pk = {p.lower() for p in spec.get("primary_key", [])}
            notnull = {p.lower() for p in spec.get("not_null", [])}
            cols = [Column(tname, c, affinity_kind(d), d,
                           nullable=(c.lower() not in notnull and c.lower() not in pk)
                           if "not_null" in spec else None,
                           primary_key=c.lower() in pk, unique=c.lower() in pk and len(pk) == 1)
                    for c, d in spec["columns"].items()]
            out[tname.lower()] = Table(tname, cols)
        return cls(out, [ForeignKey(*fk) for fk in foreign_keys], db_id)

    @classmethod
    def from_spider(cls, entry: Mapping[str, Any]) -> Schema:
        """One ``tables.json`` entry (module docstring); a malformed entry raises
        :class:`SchemaError` naming the field."""
        db = str(entry.get("db_id", "?"))
        try:
            tnames = list(entry["table_names_original"])
            cols = list(entry["column_names_original"])
            types = list(entry["column_types"])
            pks_raw = entry.get("primary_keys", [])
            fks_raw = entry.get("foreign_keys", [])
        except KeyError as exc:
            raise SchemaError(f"tables.json entry {db!r}: missing field {exc.args[0]!r}") from None
        if len(types) != len(cols):
            raise SchemaError(f"tables.json entry {db!r}: {len(cols)} column_names_original "
                              f"but {len(types)} column_types")
        pk_groups = [p if isinstance(p, list) else [p] for p in pks_raw]
        pk_cols = {i for g in pk_groups for i in g}
        single_pk = {g[0] for g in pk_groups if len(g) == 1}
        tables: dict[str, Table] = {}
        for t in tnames:
            tables[t.lower()] = Table(t)
        for i, (ti, name) in enumerate(cols):
            if ti < 0:
                continue
            if not 0 <= ti < len(tnames):
                raise SchemaError(f"tables.json entry {db!r}: column {i} {name!r} names table "
                                  f"index {ti}, only {len(tnames)} tables")
            t = tnames[ti]
            tables[t.lower()].columns.append(Column(
                t, name, str(types[i]), str(types[i]), None, i in pk_cols, i in single_pk))
        fks = []
        for pair in fks_raw:
            a, b = int(pair[0]), int(pair[1])
            ta, ca = cols[a]
            tb, cb = cols[b]
            fks.append(ForeignKey(tnames[ta], ca, tnames[tb], cb))
        return cls(tables, fks, db)

    @classmethod
    def from_sqlite(cls, conn: Any, db_id: str = "") -> Schema:
        """Read the catalogue of an open ``sqlite3`` connection (read-only pragmas)."""
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        tables: dict[str, Table] = {}
        fks: list[ForeignKey] = []
        for t in names:
            info = conn.execute("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?)",
                                (t,)).fetchall()
            pk = [r[0] for r in info if r[3]]
            unique = {pk[0].lower()} if len(pk) == 1 else set()
            for idx in conn.execute("SELECT name, \"unique\" FROM pragma_index_list(?)",
                                    (t,)).fetchall():
                if idx[1]:
                    members = [r[0] for r in conn.execute(
                        "SELECT name FROM pragma_index_info(?)", (idx[0],))]
                    if len(members) == 1 and members[0] is not None:
                        unique.add(members[0].lower())
            cols = [Column(t, r[0], affinity_kind(r[1]), r[1] or "",
                           nullable=not (r[2] or r[3]),
                           primary_key=bool(r[3]), unique=r[0].lower() in unique)
                    for r in info]
            tables[t.lower()] = Table(t, cols)
            for r in conn.execute("SELECT \"from\", \"table\", \"to\" FROM "
                                  "pragma_foreign_key_list(?)", (t,)).fetchall():
                ref_col = r[2]
                if ref_col is None:  # references the parent's primary key
                    parent = conn.execute("SELECT name FROM pragma_table_info(?) WHERE pk = 1",
                                          (r[1],)).fetchone()
                    ref_col = parent[0] if parent else r[0]
                fks.append(ForeignKey(t, r[0], r[1], ref_col))
        return cls(tables, fks, db_id)


def load_spider_schemas(path: str | Path) -> dict[str, Schema]:
    """``{db_id: Schema}`` of a Spider ``tables.json`` file."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path}: cannot read tables.json ({exc})") from None
    if not isinstance(entries, list):
        raise SchemaError(f"{path}: expected a JSON list of database entries")
    return {str(e.get("db_id")): Schema.from_spider(e) for e in entries}

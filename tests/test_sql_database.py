"""Read-only SQLite access: nothing that could change the file runs (hash before/after),
bad input is a clear error, schemas from the catalogue and from tables.json agree."""

import hashlib
import json
import sqlite3

import pytest

pytest.importorskip("sqlglot")

from mmret.sql.database import Database, check_read_only  # noqa: E402
from mmret.sql.errors import DatabaseError, SchemaError, SQLParseError, UnsafeSQLError  # noqa: E402
from mmret.sql.schema import Schema  # noqa: E402
from mmret.sql.spider import schema_to_spider  # noqa: E402


@pytest.fixture()
def db_path(tmp_path):
    root = tmp_path / "dbs"
    root.mkdir()
    path = root / "x.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE city (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, pop TEXT);
        CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                             city_id INTEGER REFERENCES city(id), born DATE);
        INSERT INTO city VALUES (1, 'Paris', '2,102,650'), (2, 'Rome', NULL);
        INSERT INTO person VALUES (1, 'Ann', 1, '2000-01-02'), (2, 'Bob', 2, NULL);
    """)
    conn.commit()
    conn.close()
    return path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


BAD = [
    ("SELEC name FROM city", SQLParseError, "does not parse"),
    ("SELECT 1; SELECT 2", UnsafeSQLError, "one statement, got 2"),
    ("SELECT 1; DROP TABLE city", UnsafeSQLError, "one statement, got 2"),
    ("DROP TABLE city", UnsafeSQLError, "DROP statement"),
    ("UPDATE city SET name = 'x'", UnsafeSQLError, "UPDATE statement"),
    ("DELETE FROM city", UnsafeSQLError, "DELETE statement"),
    ("INSERT INTO city VALUES (3, 'x', '1')", UnsafeSQLError, "INSERT statement"),
    ("ATTACH DATABASE 'other.db' AS o", UnsafeSQLError, "ATTACH statement"),
    ("PRAGMA user_version = 7", UnsafeSQLError, "PRAGMA statement"),
    ("PRAGMA journal_mode = WAL", UnsafeSQLError, "PRAGMA statement"),
    ("CREATE TABLE t (a)", UnsafeSQLError, "CREATE statement"),
    ("VACUUM", UnsafeSQLError, "COMMAND statement"),
    ("REPLACE INTO city VALUES (1, 'x', '1')", UnsafeSQLError, "statement"),
    ("", SQLParseError, "empty SQL"),
]


@pytest.mark.parametrize(("sql", "error", "message"), BAD)
def test_unsafe_or_bad_sql_is_refused_and_the_file_is_unchanged(db_path, sql, error, message):
    before = _sha(db_path)
    with Database(db_path, root=db_path.parent) as db:
        with pytest.raises(error, match=message) as info:
            db.query(sql)
        if sql:
            assert sql[:12] in str(info.value)  # the message quotes the query
    assert _sha(db_path) == before


def test_layers_below_the_gate_refuse_writes_too(db_path):
    """Even a write that reached the connection (bypassing the statement gate) fails:
    the authorizer and mode=ro refuse it; the file is unchanged."""
    before = _sha(db_path)
    with Database(db_path) as db:
        for sql in ("DELETE FROM city", "UPDATE city SET name = 'x'", "DROP TABLE person",
                    "ATTACH DATABASE ':memory:' AS m", "PRAGMA user_version = 3",
                    "CREATE TABLE t (a)"):
            with pytest.raises(DatabaseError, match="query failed"):
                db._run(sql)
        assert db.query("SELECT COUNT(*) FROM city").rows == [(2,)]
    assert _sha(db_path) == before


def test_paths_and_files(db_path, tmp_path):
    with pytest.raises(DatabaseError, match="outside the allowed root"):
        Database(db_path, root=tmp_path / "elsewhere")
    link_root = tmp_path / "jail"
    link_root.mkdir()
    (link_root / "escape.sqlite").symlink_to(db_path)  # a symlink out of the root
    with pytest.raises(DatabaseError, match="outside the allowed root"):
        Database(link_root / "escape.sqlite", root=link_root)
    with pytest.raises(DatabaseError, match="does not exist"):
        Database(db_path.parent / "missing.sqlite", root=db_path.parent)
    assert not (db_path.parent / "missing.sqlite").exists()  # never created
    text = db_path.parent / "notes.sqlite"
    text.write_text("hello")
    with pytest.raises(DatabaseError, match="not a SQLite 3 database"):
        Database(text)


def test_time_limit_interrupts_a_runaway_query(db_path):
    with Database(db_path, timeout_s=0.2) as db:
        with pytest.raises(DatabaseError, match="time limit of 0.2 s.*WITH RECURSIVE"):
            db.query("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
                     "SELECT COUNT(*) FROM r")
        assert db.query("SELECT 1").rows == [(1,)]  # the connection is still usable


def test_missing_table_or_column_and_parameters(db_path):
    with Database(db_path) as db:
        with pytest.raises(SchemaError, match="no table 'nope'.*city, person"):
            db.distinct_values("nope", "x")
        with pytest.raises(SchemaError, match="no column 'nope' in table 'city'"):
            db.matches("city", "nope", "=", "x")
        with pytest.raises(DatabaseError, match="no such column: nope"):
            db.query("SELECT nope FROM city")
        # a value is a parameter, never SQL
        assert not db.matches("city", "name", "=", "x' OR '1'='1")
        assert db.matches("city", "name", "=", "Paris")
        assert db.query("SELECT name FROM city WHERE id = ?", (2,)).rows == [("Rome",)]
        assert db.distinct_values("city", "pop") == ["2,102,650"]
        assert db.has_null("city", "pop") and not db.has_null("city", "name")


def test_schema_from_catalogue_and_tables_json_round_trip(db_path):
    with Database(db_path) as db:
        s = db.schema
    assert [c.kind for c in s.table("person").columns] == ["number", "text", "number", "time"]
    assert s.column("city", "name").unique and not s.column("city", "pop").unique
    assert s.column("city", "pop").nullable and not s.column("city", "name").nullable
    assert s.is_foreign_key("person", "city_id", "city", "id")
    assert s.is_foreign_key("city", "id", "person", "city_id")  # either direction
    assert not s.is_foreign_key("person", "id", "city", "id")
    entry = json.loads(json.dumps(schema_to_spider(s)))
    back = Schema.from_spider(entry)
    assert {t: [(c.name, c.kind, c.primary_key) for c in v.columns]
            for t, v in back.tables.items()} == \
        {t: [(c.name, c.kind, c.primary_key) for c in v.columns] for t, v in s.tables.items()}
    assert [(f.table, f.column, f.ref_table, f.ref_column) for f in back.foreign_keys] == \
        [("person", "city_id", "city", "id")]
    with pytest.raises(SchemaError, match="missing field 'column_types'"):
        Schema.from_spider({k: v for k, v in entry.items() if k != "column_types"})


def test_check_read_only_accepts_queries():
    for sql in ("SELECT 1", "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
                "SELECT 1 UNION SELECT 2", "SELECT 1 EXCEPT SELECT 2"):
        assert check_read_only(sql) is not None

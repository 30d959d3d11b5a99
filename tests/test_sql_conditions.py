"""Condition extraction (mmret.sql.conditions): tables through aliases, joins, derived
tables, CTEs, sub-queries; IN / LIKE / BETWEEN / HAVING; spans that rewrite exactly."""

import pytest

pytest.importorskip("sqlglot")

from mmret.sql.conditions import column_pairs, extract_conditions, rewrite, sql_literal  # noqa: E402
from mmret.sql.database import parse_one  # noqa: E402
from mmret.sql.errors import SQLParseError, UnsafeSQLError  # noqa: E402
from mmret.sql.schema import Schema  # noqa: E402

SCHEMA = Schema.from_dict({
    "singer": {"columns": {"id": "INTEGER", "name": "TEXT", "country": "TEXT", "age": "INTEGER"}},
    "concert": {"columns": {"id": "INTEGER", "singer_id": "INTEGER", "year": "INTEGER",
                            "venue": "TEXT"}},
    "nation": {"columns": {"id": "INTEGER", "country": "TEXT"}},
}, foreign_keys=[("concert", "singer_id", "singer", "id")])

SQL = ("WITH c AS (SELECT id AS cid, venue FROM concert) "
       "SELECT s.name FROM singer AS s JOIN (SELECT id, country AS ctry FROM nation) AS n "
       "ON s.id = n.id AND n.id > 4 "
       "WHERE n.ctry = 'x' AND s.id IN (SELECT singer_id FROM concert WHERE year = 2000) "
       "AND s.name NOT LIKE 'a%' AND NOT s.country IN ('q', 'r''s') "
       "AND s.age NOT BETWEEN 1 AND -2 AND 5 < s.age AND country = 'France' "
       "GROUP BY s.name HAVING COUNT(*) > 3 "
       "UNION SELECT venue FROM c WHERE cid = 3 AND LOWER(venue) = 'bob'")


def test_every_condition_resolved_with_exact_spans():
    conds = extract_conditions(SQL, SCHEMA)
    got = [(c.target, c.operator, c.value, c.clause, c.function, c.role, c.depth) for c in conds]
    assert got == [
        ("nation.id", ">", 4, "join", None, None, 0),
        ("nation.country", "=", "x", "where", None, None, 0),
        ("concert.year", "=", 2000, "where", None, None, 1),
        ("singer.name", "NOT LIKE", "a%", "where", None, None, 0),
        ("singer.country", "NOT IN", "q", "where", None, None, 0),
        ("singer.country", "NOT IN", "r's", "where", None, None, 0),
        ("singer.age", "NOT BETWEEN", 1, "where", None, "low", 0),
        ("singer.age", "NOT BETWEEN", -2, "where", None, "high", 0),
        ("singer.age", ">", 5, "where", None, None, 0),       # 5 < s.age flipped
        ("singer.country", "=", "France", "where", None, None, 0),
        ("?.*", ">", 3, "having", "COUNT", None, 0),
        ("concert.id", "=", 3, "where", None, None, 0),       # cid -> CTE -> concert.id
        ("concert.venue", "=", "bob", "where", "LOWER", None, 0),
    ]
    for c in conds:  # the span holds exactly the literal: it re-reads as the value
        assert SQL[c.start:c.end] == sql_literal(c.value) == c.literal
        if c.column_start >= 0:
            assert SQL[c.column_start:c.column_end].split(".")[-1] in (c.column, "ctry", "cid",
                                                                        "venue")
    assert [SQL[c.start:c.end] for c in conds if c.role] == ["1", "-2"]


def test_unqualified_column_is_ambiguous_without_a_unique_owner():
    sql = "SELECT * FROM singer JOIN nation ON singer.id = nation.id WHERE country = 'x'"
    assert extract_conditions(sql, SCHEMA)[0].table is None      # both tables have it
    assert extract_conditions("SELECT * FROM singer WHERE country = 'x'")[0].table == "singer"


def test_rewrite_replaces_only_the_literals():
    sql = "SELECT name FROM singer AS s WHERE s.country = 'usa' OR s.name IN ('A', 'b')"
    conds = extract_conditions(sql, SCHEMA)
    new = rewrite(sql, [(conds[0], "United States"), (conds[2], "O'Neil")])
    assert new == ("SELECT name FROM singer AS s WHERE s.country = 'United States' "
                   "OR s.name IN ('A', 'O''Neil')")
    assert [c.value for c in extract_conditions(new, SCHEMA)] == ["United States", "A", "O'Neil"]
    with pytest.raises(ValueError, match="overlap"):
        rewrite(sql, [((10, 20), "x"), ((15, 25), "y")])
    assert sql_literal(3) == "3" and sql_literal("a'b") == "'a''b'" and sql_literal(None) == "NULL"


def test_column_pairs_are_the_join_equalities():
    tree = parse_one("SELECT * FROM singer AS s JOIN concert AS c ON c.singer_id = s.id "
                     "WHERE c.year = 2000")
    pairs = [(a.table, a.column, b.table, b.column, clause)
             for a, b, _, clause in column_pairs(tree, SCHEMA)]
    assert pairs == [("concert", "singer_id", "singer", "id", "join")]


def test_bad_sql_is_a_clear_error():
    with pytest.raises(SQLParseError, match="does not parse.*SELECT FROM WHERE"):
        extract_conditions("SELECT FROM WHERE (")
    with pytest.raises(UnsafeSQLError, match="one statement, got 2"):
        extract_conditions("SELECT 1; SELECT 2")

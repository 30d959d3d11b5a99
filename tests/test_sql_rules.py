"""Mismatch detector rules: each fires on its error (with span and a fix that gives the
right result) and stays silent on the correct query; users add rules by name."""

import sqlite3

import pytest

pytest.importorskip("sqlglot")

from mmret.metrics.sql import results_match  # noqa: E402
from mmret.sql.database import Database  # noqa: E402
from mmret.sql.rules import BUILTIN_RULES, RULES, Finding, detect, register_rule  # noqa: E402


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("rules") / "r.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
    CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT,
                           born DATE NOT NULL, pop TEXT NOT NULL, room TEXT NOT NULL);
    CREATE TABLE orders (id INTEGER PRIMARY KEY,
                         customer_id INTEGER NOT NULL REFERENCES customer(id),
                         amount REAL NOT NULL, qty INTEGER NOT NULL);
    INSERT INTO customer VALUES (1, 'Ann', 'Paris', '2000-01-05', '9', '0107'),
                                (2, 'Bob', NULL, '1990-03-15', '100', '0212'),
                                (3, 'Cy', 'Rome', '1990-03-15', '25', '0107');
    INSERT INTO orders VALUES (1, 1, 10, 1), (2, 1, 20, 2), (3, 2, 30, 3), (4, 3, 30, 3);
    """)
    conn.commit()
    conn.close()
    with Database(path) as d:
        yield d


CASES = [  # rule, wrong query, the correct query its fix must equal in results
    ("join_not_fk", "SELECT c.name FROM customer AS c JOIN orders AS o ON c.id = o.id",
     "SELECT c.name FROM customer AS c JOIN orders AS o ON c.id = o.customer_id"),
    ("literal_type", "SELECT name FROM customer WHERE born = 'March 15, 1990'",
     "SELECT name FROM customer WHERE born = '1990-03-15'"),
    ("literal_type", "SELECT name FROM customer WHERE born = '15.03.1990'",
     "SELECT name FROM customer WHERE born = '1990-03-15'"),
    ("text_vs_number", "SELECT name FROM customer WHERE pop > 50",
     "SELECT name FROM customer WHERE CAST(pop AS REAL) > 50"),
    ("text_vs_number", "SELECT name FROM customer ORDER BY pop DESC LIMIT 2",
     "SELECT name FROM customer ORDER BY CAST(pop AS REAL) DESC LIMIT 2"),
    ("aggregate_group_by", "SELECT city, COUNT(*) FROM customer",
     "SELECT city, COUNT(*) FROM customer GROUP BY city"),
    ("limit_ties", "SELECT id FROM orders ORDER BY amount DESC LIMIT 1",
     "SELECT id FROM orders WHERE amount = (SELECT MAX(amount) FROM orders)"),
    ("limit_ties", "SELECT amount FROM orders GROUP BY amount ORDER BY COUNT(*) ASC LIMIT 1",
     "SELECT amount FROM orders GROUP BY amount HAVING COUNT(*) = 1"),
    ("limit_ties", "SELECT amount, COUNT(*) AS n FROM orders GROUP BY amount ORDER BY n LIMIT 1",
     "SELECT amount, COUNT(*) AS n FROM orders GROUP BY amount HAVING COUNT(*) = 1"),
    ("count_distinct", "SELECT COUNT(c.id) FROM customer AS c JOIN orders AS o "
                       "ON o.customer_id = c.id WHERE o.amount > 5",
     "SELECT COUNT(DISTINCT c.id) FROM customer AS c JOIN orders AS o "
     "ON o.customer_id = c.id WHERE o.amount > 5"),
    ("nullable_condition", "SELECT name FROM customer WHERE city != 'Paris'",
     "SELECT name FROM customer WHERE city != 'Paris' OR city IS NULL"),
]


@pytest.mark.parametrize(("rule", "wrong", "right"), CASES)
def test_rule_fires_with_span_and_a_fix_that_gives_the_right_result(db, rule, wrong, right):
    found = detect(wrong, database=db)
    assert [f.rule for f in found] == [rule]
    f = found[0]
    assert 0 <= f.start < f.end <= len(wrong) and f.message
    assert f.fix is not None
    gold = db.query(right).rows
    assert not results_match(gold, db.query(wrong).rows, "order by" in right.lower())
    assert results_match(gold, db.query(f.fix).rows, "order by" in right.lower())
    assert detect(right, database=db) == []  # the correct query is clean


def test_spans_point_at_the_offending_text(db):
    sql = "SELECT c.name FROM customer AS c JOIN orders AS o ON c.id = o.id"
    f = detect(sql, database=db)[0]
    assert sql[f.start:f.end] == "c.id = o.id"
    sql = "SELECT COUNT(c.id) FROM customer AS c JOIN orders AS o ON o.customer_id = c.id"
    f = detect(sql, database=db, rules=["count_distinct"])[0]
    assert sql[f.start:f.end] == "COUNT(c.id)"
    sql = "SELECT name FROM customer WHERE born = '15.03.1990'"
    assert sql[slice(*detect(sql, database=db)[0].to_dict()["span"])] == "'15.03.1990'"


def test_data_aware_rules_stay_silent_when_the_data_has_no_problem(db):
    # the maximum is unique: LIMIT 1 is a correct arg-max
    assert detect("SELECT name FROM customer ORDER BY id DESC LIMIT 1", database=db) == []
    # no NULL in name: != drops nothing
    assert detect("SELECT id FROM customer WHERE name != 'Ann'", database=db) == []
    # already guarded
    assert detect("SELECT id FROM customer WHERE (city <> 'Rome' OR city IS NULL)",
                  database=db) == []
    # without a database the tie rule can only warn on a non-unique key
    warn = detect("SELECT id FROM orders ORDER BY amount DESC LIMIT 1", schema=db.schema)
    assert [(f.rule, f.severity) for f in warn] == [("limit_ties", "warning")]


def test_literal_type_on_numbers_and_text_codes(db):
    f = detect("SELECT id FROM orders WHERE qty = 'three'", database=db)
    assert [(x.rule, x.severity, x.fix) for x in f] == [("literal_type", "error", None)]
    f = detect("SELECT name FROM customer WHERE room = 107", database=db)
    assert [(x.rule, x.fix) for x in f] == [
        ("literal_type", "SELECT name FROM customer WHERE room = '107'")]
    assert detect("SELECT id FROM orders WHERE qty = '3'", database=db) == []  # affinity


def test_user_rule_registered_by_name(db):
    name = "test_no_select_star"
    if name not in RULES:
        @register_rule(name)
        def no_star(ctx):
            return [Finding(name, "warning", "SELECT * hides the columns", 7, 8)
                    for _ in [ctx.sql.find("*")] if _ >= 0]
    assert "test_no_select_star" in RULES.names()
    assert [f.rule for f in detect("SELECT * FROM orders", database=db,
                                   rules=["test_no_select_star"])] == [name]
    assert set(BUILTIN_RULES) <= set(RULES.names())
    with pytest.raises(KeyError, match="nope"):
        detect("SELECT 1", database=db, rules=["nope"])

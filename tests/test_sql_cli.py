"""mmret-sql-check and mmret-sql-eval end to end on a small generated benchmark."""

import hashlib
import json

import pytest

pytest.importorskip("sqlglot")
pytest.importorskip("rapidfuzz")

from mmret.sql.benchmark import generate_benchmark  # noqa: E402
from mmret.sql.cli import check_main, eval_main  # noqa: E402


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("sqlcli") / "bench"
    generate_benchmark(root, seed=0, scale=0.3, per_template=2)
    return root


def test_check_json_and_text(bench, capsys):
    db = bench / "database" / "shop" / "shop.sqlite"
    sql = ("SELECT COUNT(c.id) FROM customer AS c JOIN orders AS o ON o.customer_id = c.id "
           "WHERE c.state = 'Calif.'")
    assert check_main(["--db", str(db), "--sql", sql, "--json", "--refine"]) == 0
    res = json.loads(capsys.readouterr().out)
    cond = res["conditions"][0]
    assert cond["target"] == "customer.state" and not cond["matched"]
    assert cond["suggestion"] == "California" and sql[slice(*cond["span"])] == "'Calif.'"
    assert res["refined"]["sql"].startswith("SELECT COUNT(DISTINCT c.id)")
    assert "'California'" in res["refined"]["sql"]
    assert check_main(["--spider", str(bench), "--db-id", "shop", "--sql", sql]) == 0
    text = capsys.readouterr().out
    assert "customer.state = 'Calif.': NO MATCH" in text and "suggestion: 'California'" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--sql", "DROP TABLE orders"], "only read-only queries are allowed, got a DROP"),
    (["--sql", "SELECT 1; DELETE FROM orders"], "expected one statement, got 2"),
    (["--sql", "UPDATE orders SET quantity = 0"], "got a UPDATE statement"),
    (["--sql", "ATTACH DATABASE 'x.db' AS x"], "got a ATTACH statement"),
    (["--sql", "SELECT * FROM orders WHERE"], "does not parse"),
    (["--sql", "SELECT nope FROM orders WHERE nope = 1"], "no column 'nope' in table 'orders'"),
    (["--sql", "SELECT * FROM nope WHERE x = 1"], "no table 'nope' in database 'shop' (tables: customer, orders, product)"),
    (["--sql", "SELECT 1", "--root", "ROOT/elsewhere"], "outside the allowed root"),
])
def test_check_errors_are_one_line_and_change_nothing(bench, capsys, args, message):
    db = bench / "database" / "shop" / "shop.sqlite"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    args = [a.replace("ROOT", str(bench)) for a in args]
    assert check_main(["--db", str(db), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmret-sql-check: error: ") and message in err and "\n" not in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_eval_writes_json_markdown_and_plot(bench, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "eval"
    assert eval_main(["--benchmark", str(bench), "--routes", "fuzzy", "--limit-per-kind", "3",
                      "--out", str(out)]) == 0
    res = json.loads((out / "sql_eval.json").read_text())
    assert set(res["retrieval"]["fuzzy"]) >= {"case", "typo"}
    assert res["retrieval"]["fuzzy"]["case"]["recall@1"] == 1.0
    assert all(v == 0.0 for v in res["ex_before"].values())
    assert res["ex_after"]["fuzzy"]["case"] == 1.0
    assert "| case |" in (out / "sql_eval.md").read_text()
    assert (out / "sql_eval.png").stat().st_size > 1000
    assert eval_main(["--benchmark", str(tmp_path / "none")]) == 1
    assert "variants.json not found" in capsys.readouterr().err

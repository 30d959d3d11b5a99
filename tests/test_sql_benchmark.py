"""The embedded benchmark: deterministic, realistic (FKs, thousands of rows), every variant
really fails and is labelled; the Spider loader reads it; refinement repairs it."""

import hashlib
import json
import sqlite3

import pytest

pytest.importorskip("sqlglot")
pytest.importorskip("rapidfuzz")

from mmret.sql.benchmark import CONSTRAINT_KINDS, VALUE_KINDS, generate_benchmark  # noqa: E402
from mmret.sql.evaluation import execution_match  # noqa: E402
from mmret.sql.refine import LLMRefiner, RuleRefiner, feedback_prompt, refine  # noqa: E402
from mmret.sql.spider import load_examples, load_spider  # noqa: E402
from mmret.sql.values import ValueRetriever  # noqa: E402


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("sqlbench") / "b"
    manifest = generate_benchmark(root, seed=0, scale=1.0, per_template=4)
    return root, manifest


def test_generation_is_deterministic(tmp_path):
    a = generate_benchmark(tmp_path / "a", seed=3, scale=0.1, per_template=2)
    b = generate_benchmark(tmp_path / "b", seed=3, scale=0.1, per_template=2)
    c = generate_benchmark(tmp_path / "c", seed=4, scale=0.1, per_template=2)
    assert a["files"] == b["files"]
    assert a["files"]["variants.json"] != c["files"]["variants.json"]


def test_databases_are_realistic(bench):
    root, manifest = bench
    for name, big in (("music", "artist"), ("shop", "orders"), ("clinic", "visit")):
        path = root / "database" / name / f"{name}.sqlite"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        assert conn.execute(f"SELECT COUNT(*) FROM {big}").fetchone()[0] >= 2000
        fks = [r for t in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
               for r in conn.execute(f"PRAGMA foreign_key_list({t[0]})")]
        assert len(fks) >= 2
        # every FK value exists in its parent table
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.close()
    for f, digest in manifest["files"].items():
        assert hashlib.sha256((root / f).read_bytes()).hexdigest() == digest


def test_every_variant_fails_and_is_labelled(bench):
    root, manifest = bench
    data = load_spider(root, "dev")
    variants = json.loads((root / "variants.json").read_text())
    kinds = {v["kind"] for v in variants}
    assert kinds == set(VALUE_KINDS) | set(CONSTRAINT_KINDS)
    assert manifest["variants"] == len(variants) and manifest["gold"] == len(data.examples)
    gold_ids = {e.extra["id"] for e in data.examples}
    dbs = {n: data.database(n) for n in data.schemas}
    for v in variants:
        assert v["gold_id"] in gold_ids
        db = dbs[v["db_id"]]
        assert not execution_match(db, v["gold_query"], v["query"]), v["id"]
        if v["family"] == "value":
            assert v["literal"] not in {str(x) for x in db.distinct_values(v["table"], v["column"])}
            assert v["gold_value"] in db.distinct_values(v["table"], v["column"])
            assert repr(v["literal"])[1:-1] in v["query"] or v["literal"].replace("'", "''") in v["query"]


def test_rule_refinement_repairs_most_variants(bench):
    root, _ = bench
    data = load_spider(root, "dev")
    variants = json.loads((root / "variants.json").read_text())
    dbs = {n: data.database(n) for n in data.schemas}
    vrs = {n: ValueRetriever(db, "fuzzy") for n, db in dbs.items()}
    fixed = {}
    for v in variants:
        if v["kind"] in ("case", "typo", "date_format", "join_not_fk", "limit_ties",
                         "count_distinct", "nullable_condition", "aggregate_group_by"):
            res = refine(v["query"], dbs[v["db_id"]], vrs[v["db_id"]], RuleRefiner(min_score=50),
                         max_rounds=3)
            assert res.rounds <= 3
            fixed.setdefault(v["kind"], []).append(
                execution_match(dbs[v["db_id"]], v["gold_query"], res.sql))
    for kind, ok in fixed.items():
        assert sum(ok) / len(ok) >= 0.9, (kind, sum(ok), len(ok))


def test_llm_hook_gets_the_documented_prompt_and_rounds_are_bounded(bench):
    root, _ = bench
    data = load_spider(root, "dev")
    db = data.database("music")
    vr = ValueRetriever(db, "fuzzy", k=3)
    sql = "SELECT COUNT(*) FROM artist WHERE country = 'Untied States'"
    seen = []

    def fake_llm(prompt):
        seen.append(prompt)
        return "Here you go:\n```sql\nSELECT COUNT(*) FROM artist WHERE country = 'United States'\n```"

    res = refine(sql, db, vr, LLMRefiner(fake_llm), question="How many American artists?")
    assert res.converged and res.rounds == 1 and "'United States'" in res.sql
    assert "How many American artists?" in seen[0] and "'United States'" in seen[0]
    assert "artist(id number, name text, country text" in seen[0]
    # a refiner that never fixes anything: the loop stops at max_rounds
    flip = iter([f"SELECT COUNT(*) FROM artist WHERE country = 'X{i}'" for i in range(10)])
    res = refine(sql, db, vr, lambda fb: next(flip), max_rounds=2)
    assert res.rounds == 2 and not res.converged and res.stopped == "max_rounds"
    # an unsafe reply stops the loop without running it
    res = refine(sql, db, vr, LLMRefiner(lambda p: "DROP TABLE artist"))
    assert res.sql == sql and "unusable SQL" in res.stopped
    assert "Error detector" in feedback_prompt(res_feedback(sql, db, vr))


def res_feedback(sql, db, vr):
    from mmret.sql.refine import Feedback

    return Feedback(sql, "", [c for c in vr.check_sql(sql) if c.failed], [], 0, db)


def test_spider_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="tables.json: not found"):
        load_spider(tmp_path)
    bad = tmp_path / "dev.json"
    bad.write_text(json.dumps([{"db_id": "x", "question": "q"}]))
    with pytest.raises(ValueError, match="entry 0: field 'query' must be a string"):
        load_examples(bad)

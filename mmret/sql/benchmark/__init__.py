"""The embedded text-to-SQL mismatch benchmark, generated deterministically from a seed.

:func:`generate_benchmark` writes a Spider-format folder::

    <out>/tables.json                       schemas (from the SQLite catalogues)
    <out>/database/<db>/<db>.sqlite         music, shop, clinic (declared foreign keys)
    <out>/dev.json                          gold question/SQL pairs (Spider fields + "id",
                                            "template", "table", "column", "value")
    <out>/variants.json                     mismatched variants, each labelled:
        {"id", "db_id", "family": "value" | "constraint", "kind", "question",
         "query" (the mismatched SQL), "gold_query", "gold_id",
         value family: "table", "column", "gold_value", "literal"}
    <out>/manifest.json                     seed, scale, counts per kind, sha256 of files

See :mod:`mmret.sql.benchmark.queries` for the kinds and
:mod:`mmret.sql.benchmark.databases` for the data.

>>> info = generate_benchmark("outputs/sql_bench", seed=0)           # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

from mmret.metrics.sql import results_match
from mmret.sql.benchmark.databases import DATABASES, build_database
from mmret.sql.benchmark.queries import (
    CONSTRAINT_KINDS,
    VALUE_KINDS,
    VALUE_TEMPLATES,
    constraint_items,
    make_variant,
)
from mmret.sql.conditions import sql_literal
from mmret.sql.database import Database
from mmret.sql.spider import schema_to_spider

__all__ = ["CONSTRAINT_KINDS", "VALUE_KINDS", "generate_benchmark", "order_matters"]


def order_matters(sql: str) -> bool:
    """Spider's rule: order matters when the (gold) query has an ORDER BY."""
    return "order by" in " ".join(sql.lower().split())


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate_benchmark(out: str | os.PathLike, seed: int = 0, scale: float = 1.0,
                       per_template: int = 4) -> dict[str, Any]:
    """Generate the benchmark into folder ``out`` (module docstring); returns the manifest.

    Args:
        seed: every random choice (data, chosen values, variant forms) follows from it.
        scale: multiplies every table's row count (1.0: thousands of rows per table).
        per_template: gold values drawn per value template.
    """
    if scale <= 0 or per_template < 1:
        raise ValueError(f"generate_benchmark: scale must be > 0 and per_template >= 1, got "
                         f"{scale!r}, {per_template!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables, gold, variants = [], [], []
    for name in DATABASES:
        path = build_database(name, out / "database" / name / f"{name}.sqlite", seed, scale)
        with Database(path, root=out / "database") as db:
            tables.append(schema_to_spider(db.schema))
            rng = random.Random(f"{seed}:{name}:queries")
            for tpl in (t for t in VALUE_TEMPLATES if t.db == name):
                column_values = db.distinct_values(tpl.table, tpl.column)
                present = {str(v) for v in column_values}
                lowered = {str(v).lower() for v in column_values}
                pool = [v for v in column_values if not tpl.forms or v in tpl.forms]
                rng.shuffle(pool)
                chosen = 0
                for value in pool:
                    if chosen >= per_template:
                        break
                    sql = tpl.sql.format(v=sql_literal(value))
                    if not db.query(sql).rows or db.query(sql).rows == [(0,)] or \
                            db.query(sql).rows == [(None,)]:
                        continue
                    gid = f"{name}.{tpl.id}.{chosen}"
                    chosen += 1
                    gold.append({"id": gid, "db_id": name, "question": tpl.question.format(v=value),
                                 "query": sql, "template": tpl.id, "table": tpl.table,
                                 "column": tpl.column, "value": value})
                    forms = (tpl.forms or {}).get(value)
                    for kind in tpl.kinds:
                        literal = make_variant(kind, str(value), rng, forms)
                        if literal is None or literal in present:
                            continue
                        if kind == "typo" and literal.lower() in lowered:
                            continue
                        variants.append({
                            "id": f"{gid}.{kind}", "db_id": name, "family": "value",
                            "kind": kind, "question": tpl.question.format(v=literal),
                            "query": tpl.sql.format(v=sql_literal(literal)),
                            "gold_query": sql, "gold_id": gid, "table": tpl.table,
                            "column": tpl.column, "gold_value": value, "literal": literal})
            crng = random.Random(f"{seed}:{name}:constraints")
            counts: Counter[str] = Counter()
            for item in constraint_items(name, db, crng):
                g = db.query(item["gold"]).rows
                b = db.query(item["query"]).rows
                if not g or results_match(g, b, order_matters(item["gold"])):
                    continue  # the error must change the result on this data
                gid = f"{name}.{item['kind']}.{counts[item['kind']]}"
                counts[item["kind"]] += 1
                gold.append({"id": gid, "db_id": name, "question": item["question"],
                             "query": item["gold"], "template": item["kind"]})
                variants.append({"id": f"{gid}.bad", "db_id": name, "family": "constraint",
                                 "kind": item["kind"], "question": item["question"],
                                 "query": item["query"], "gold_query": item["gold"],
                                 "gold_id": gid})
    _write_json(out / "tables.json", tables)
    _write_json(out / "dev.json", gold)
    _write_json(out / "variants.json", variants)
    manifest = {
        "format": "mmret-sql-benchmark/1", "seed": seed, "scale": scale,
        "per_template": per_template, "gold": len(gold), "variants": len(variants),
        "kinds": dict(sorted(Counter(v["kind"] for v in variants).items())),
        "files": {str(p.relative_to(out)): _sha(p) for p in sorted(out.rglob("*"))
                  if p.is_file() and p.name != "manifest.json" and not p.name.endswith(".tmp")},
    }
    _write_json(out / "manifest.json", manifest)
    return manifest

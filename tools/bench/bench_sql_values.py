"""Benchmark the value retriever on one column of 1M distinct values: a failed condition's
lookup through the n-gram candidate index against the full rapidfuzz scan, same run.

Data (seeded): a SQLite table ``address(id, street)`` with ``--n`` distinct street
addresses such as ``"742 Lopez Boulevard, Rome"`` (number 1–1999, a street word, a
suffix, a city). Queries: ``--queries`` cells with one typo each (the benchmark's typo
generator), so every condition ``street = '<typo>'`` matches no row.

Measured per route (``fuzzy``, WRatio):

- build: the column's distinct values read once (SELECT DISTINCT) and the route built
  (the index: one array pass; the scan: nothing to build);
- lookup: :meth:`ValueRetriever.check` of one failed condition (existence check against
  the cached values + top-5 search), median and p90 over the queries (the scan over the
  first ``--scan-queries`` of them: each takes seconds), after one warm-up;
- recall@1 / recall@5 of the original cell.

    python tools/bench/bench_sql_values.py              # 1M values
    python tools/bench/bench_sql_values.py --n 100000   # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from doc_sections import write_section  # noqa: E402  (tools/bench is on sys.path)

from mmret.sql.benchmark import vocab  # noqa: E402
from mmret.sql.benchmark.queries import make_variant  # noqa: E402
from mmret.sql.conditions import extract_conditions, sql_literal  # noqa: E402
from mmret.sql.database import Database  # noqa: E402
from mmret.sql.values import ValueRetriever  # noqa: E402

SUFFIXES = ["Street", "Avenue", "Road", "Lane", "Boulevard", "Drive", "Court", "Way"]


def addresses(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    streets = vocab.LAST_NAMES + vocab.BAND_WORDS + vocab.FIRST_NAMES
    cities = list(vocab.CITIES)
    out: set[str] = set()
    while len(out) < n:
        out.add(f"{rng.randrange(1, 2000)} {rng.choice(streets)} {rng.choice(SUFFIXES)}, "
                f"{rng.choice(cities)}")
    return sorted(out)


def build_db(path: Path, values: list[str]) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE address (id INTEGER PRIMARY KEY, street TEXT NOT NULL)")
    conn.executemany("INSERT INTO address (street) VALUES (?)", ((v,) for v in values))
    conn.commit()
    conn.close()


def measure(db: Database, label: str, index_min: int, queries: list[tuple[str, str]]
            ) -> dict[str, Any]:
    vr = ValueRetriever(db, "fuzzy", k=5, index_min=index_min)
    t0 = time.perf_counter()
    vr.values("address", "street")
    build = time.perf_counter() - t0
    conds = [extract_conditions(f"SELECT id FROM address WHERE street = {sql_literal(q)}",
                                db.schema)[0] for q, _ in queries]
    vr.check(conds[0])  # warm-up
    times, r1, r5 = [], 0, 0
    for cond, (_, gold) in zip(conds, queries, strict=True):
        t1 = time.perf_counter()
        chk = vr.check(cond)
        times.append(1000 * (time.perf_counter() - t1))
        assert chk.failed, cond
        vals = [c.value for c in chk.candidates]
        r1 += vals[:1] == [gold]
        r5 += gold in vals
    times.sort()
    return {"route": label, "build_s": round(build, 2), "queries": len(queries),
            "lookup_ms_median": round(statistics.median(times), 2),
            "lookup_ms_p90": round(times[int(0.9 * (len(times) - 1))], 2),
            "recall_at_1": r1 / len(queries), "recall_at_5": r5 / len(queries)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    values = addresses(args.n, args.seed)
    rng = random.Random(args.seed + 1)
    queries = []
    present = set(values)
    for gold in rng.sample(values, args.queries * 2):
        typo = make_variant("typo", gold, rng, None)
        if typo and typo not in present:
            queries.append((typo, gold))
        if len(queries) == args.queries:
            break
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.sqlite"
        build_db(path, values)
        gen_s = time.perf_counter() - t0
        with Database(path, root=tmp, timeout_s=60) as db:
            index = measure(db, "fuzzy, n-gram index", index_min=1, queries=queries)
            scan = measure(db, "fuzzy, full scan (baseline)", index_min=10 ** 12,
                           queries=queries[:args.scan_queries])
    return {"n": args.n, "queries": len(queries), "seed": args.seed, "data_s": round(gen_s, 1),
            "wall_s": round(time.perf_counter() - t0, 1),
            "machine": args.machine, "python": platform.python_version(),
            "load_avg": round(os.getloadavg()[0], 2),
            "speedup_median": round(scan["lookup_ms_median"] / index["lookup_ms_median"], 1),
            "results": [index, scan]}


def markdown(report: dict[str, Any], title: str) -> str:
    lines = [title, "",
             "`python tools/bench/bench_sql_values.py` "
             f"(n={report['n']:,}, {report['queries']} queries, the first "
             f"{report['results'][1]['queries']} for the scan; seed {report['seed']}; "
             f"{report['machine']}, load average {report['load_avg']} at the end; "
             f"{report['wall_s']} s wall in all, data generation {report['data_s']} s).", "",
             f"One column of {report['n']:,} distinct street addresses; each query is a cell "
             "with one typo, so `street = '<typo>'` matches no row and the value retriever "
             "ranks the column's values (rapidfuzz WRatio, top 5). *build*: SELECT DISTINCT "
             "plus building the route; *lookup*: `ValueRetriever.check` of one failed "
             "condition (existence against the cached values + search).", "",
             "| route | build (s) | lookup median (ms) | lookup p90 (ms) | recall@1 | recall@5 |",
             "|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['route']} | {r['build_s']} | {r['lookup_ms_median']} | "
                     f"{r['lookup_ms_p90']} | {r['recall_at_1']:.3f} | {r['recall_at_5']:.3f} |")
    lines += ["", f"Index lookup is **{report['speedup_median']}×** faster than the full "
              "scan (median, same run)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--scan-queries", type=int, default=10,
                   help="queries for the (slow) full-scan baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--machine", default="2-core CPU, shared")
    p.add_argument("--out", type=Path, default=ROOT / "tools/bench/results/sql_values.json")
    p.add_argument("--section", default="sql_values")
    p.add_argument("--title", default="## Text-to-SQL value lookup (mmret.sql.values)")
    p.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = p.parse_args(argv)
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    section = markdown(report, args.title)
    if not args.no_doc:
        write_section(args.section, section)
    print(section)


if __name__ == "__main__":
    main()

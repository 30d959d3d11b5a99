"""``mmret-sql-check`` and ``mmret-sql-eval``.

    mmret-sql-check --db shop.sqlite --sql "SELECT COUNT(*) FROM customer WHERE state = 'CA'"
    mmret-sql-check --spider spider/ --db-id concert_singer --sql-file q.sql --json
    mmret-sql-check --db shop.sqlite --sql "..." --refine --route bm25_char -k 3

prints the detector's findings (rule, severity, span, message, fix) and the value
retriever's verdict on every condition (failed ones with their closest existing values),
as readable text or, with ``--json``, one JSON object; ``--refine`` adds the rule-based
refinement's final query and steps. ``--root`` confines the database path.

    mmret-sql-eval --benchmark outputs/sql_bench --generate --out outputs/sql_eval
    mmret-sql-eval --benchmark outputs/sql_bench --routes fuzzy,bm25_char --limit-per-kind 5

generates the embedded benchmark into ``--benchmark`` when asked (or when it is missing and
``--generate`` is given), evaluates it and writes ``sql_eval.json``, ``sql_eval.md`` and
``sql_eval.png`` (per kind) into ``--out``.

Errors (bad SQL, several or write statements, a path outside the root, a missing table or
column) are one line ``mmret-sql-xxx: error: ...`` and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmret.sql.database import Database, check_read_only
from mmret.sql.errors import SQLError

__all__ = ["check_main", "eval_main", "run_check"]


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


def run_check(sql: str, db: Database, route: str = "fuzzy", k: int = 5,
              rules: Sequence[str] | None = None, do_refine: bool = False,
              max_rounds: int = 3) -> dict[str, Any]:
    """The check's result as a JSON-ready dict (``findings``, ``conditions``,
    optionally ``refined``)."""
    from mmret.sql.conditions import extract_conditions
    from mmret.sql.refine import RuleRefiner, refine
    from mmret.sql.rules import detect
    from mmret.sql.values import DEFAULT_MIN_SCORE, ValueRetriever

    check_read_only(sql)
    for c in extract_conditions(sql, db.schema):
        if c.table is not None and c.column != "*":
            db.schema.column(c.table, c.column)  # a missing column is a clear error
    findings = detect(sql, database=db, rules=rules)
    vr = ValueRetriever(db, route, k=k)
    checks = vr.check_sql(sql)
    out: dict[str, Any] = {
        "sql": sql, "database": str(db.path), "route": route,
        "findings": [f.to_dict() for f in findings],
        "conditions": [{"target": c.condition.target, "operator": c.condition.operator,
                        "literal": c.condition.literal,
                        "span": [c.condition.start, c.condition.end], "clause":
                        c.condition.clause, "checked": c.checked, "matched": c.matched,
                        "candidates": [{"value": x.value, "score": x.score, "rank": x.rank}
                                       for x in c.candidates],
                        "suggestion": c.suggestion(), "feedback": c.feedback}
                       for c in checks]}
    if do_refine:
        res = refine(sql, db, vr, RuleRefiner(min_score=DEFAULT_MIN_SCORE.get(route)),
                     rules=rules, max_rounds=max_rounds)
        out["refined"] = {"sql": res.sql, "rounds": res.rounds, "converged": res.converged,
                          "stopped": res.stopped,
                          "steps": [{"round": s.round, "kind": s.kind, "note": s.note,
                                     "sql": s.after} for s in res.steps]}
    return out


def _text(res: dict[str, Any]) -> str:
    sql = res["sql"]
    lines = [f"query: {sql}", f"database: {res['database']}", ""]
    if res["findings"]:
        lines.append(f"{len(res['findings'])} finding(s):")
        for f in res["findings"]:
            s, e = f["span"]
            lines.append(f"  [{f['rule']}] {f['severity']} at {s}-{e} ({sql[s:e]!r}): "
                         f"{f['message']}")
            if f["fix"]:
                lines.append(f"      fix ({f['fix_note']}): {f['fix']}")
    else:
        lines.append("no detector findings")
    lines.append("")
    failed = [c for c in res["conditions"] if c["checked"] and not c["matched"]]
    checked = [c for c in res["conditions"] if c["checked"]]
    lines.append(f"conditions: {len(res['conditions'])} ({len(checked)} checked against the "
                 f"data, {len(failed)} match no row; route {res['route']})")
    for c in res["conditions"]:
        state = ("ok" if c["matched"] else "NO MATCH") if c["checked"] else "not checked"
        lines.append(f"  {c['target']} {c['operator']} {c['literal']}: {state}")
        if c["checked"] and not c["matched"]:
            cands = ", ".join(f"{x['value']!r} ({x['score']:.3g})" for x in c["candidates"])
            lines.append(f"      closest values: {cands or '(none)'}")
            if c["suggestion"] is not None:
                lines.append(f"      suggestion: {c['suggestion']!r}")
    if "refined" in res:
        r = res["refined"]
        lines += ["", f"refined after {r['rounds']} round(s) ({r['stopped']}): {r['sql']}"]
        for s in r["steps"]:
            lines.append(f"  round {s['round']} [{s['kind']}] {s['note']}")
    return "\n".join(lines)


def check_main(argv: Sequence[str] | None = None) -> int:
    """``mmret-sql-check`` (module docstring)."""
    prog = "mmret-sql-check"
    p = argparse.ArgumentParser(prog=prog, description="Check a SQL query against a SQLite "
                                "database: silent constraint errors and literals that match "
                                "no cell (with the closest existing values).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", help="the .sqlite file")
    src.add_argument("--spider", help="a Spider-format folder (with --db-id)")
    p.add_argument("--db-id", help="database id inside --spider")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--sql", help="the query")
    q.add_argument("--sql-file", help="a file holding the query")
    p.add_argument("--root", default=os.environ.get("MMRET_SQL_ROOT"),
                   help="refuse databases outside this folder (default $MMRET_SQL_ROOT)")
    p.add_argument("--route", default="fuzzy",
                   help="value route: fuzzy, bm25_char, dense, fusion (default fuzzy)")
    p.add_argument("-k", type=int, default=5, help="candidates per failed condition")
    p.add_argument("--rules", help="comma-separated rule names (default: all registered)")
    p.add_argument("--refine", action="store_true", help="also run rule-based refinement")
    p.add_argument("--max-rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per query")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        sql = args.sql if args.sql is not None else Path(args.sql_file).read_text(
            encoding="utf-8")
        if args.spider:
            if not args.db_id:
                return _fail(prog, "--spider needs --db-id")
            from mmret.sql.spider import load_spider

            data = load_spider(args.spider, "dev") if (Path(args.spider) / "dev.json").is_file() \
                else None
            if data is None:
                from mmret.sql.schema import load_spider_schemas
                from mmret.sql.spider import SpiderData

                data = SpiderData(Path(args.spider),
                                  load_spider_schemas(Path(args.spider) / "tables.json"), [])
            db = data.database(args.db_id, timeout_s=args.timeout)
        else:
            db = Database(args.db, root=args.root, timeout_s=args.timeout)
        rules = [r.strip() for r in args.rules.split(",")] if args.rules else None
        with db:
            res = run_check(sql, db, args.route, args.k, rules, args.refine, args.max_rounds)
    except (SQLError, OSError, ValueError, KeyError) as exc:
        return _fail(prog, str(exc).strip('"') if isinstance(exc, KeyError) else str(exc))
    print(json.dumps(res, indent=1, ensure_ascii=False, default=str) if args.json else _text(res))
    return 0


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``mmret-sql-eval`` (module docstring)."""
    prog = "mmret-sql-eval"
    p = argparse.ArgumentParser(prog=prog, description="Evaluate the value retriever, the "
                                "detector and refinement on a benchmark with labelled variants.")
    p.add_argument("--benchmark", required=True, help="Spider-format folder with variants.json")
    p.add_argument("--generate", action="store_true",
                   help="(re)generate the embedded benchmark into --benchmark first")
    p.add_argument("--generate-only", action="store_true", help="generate and stop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--per-template", type=int, default=6)
    p.add_argument("--routes", default="fuzzy,bm25_char,dense,fusion")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--max-rounds", type=int, default=3)
    p.add_argument("--limit-per-kind", type=int, default=None)
    p.add_argument("--out", default="outputs/sql_eval", help="folder for JSON/Markdown/plot")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    try:
        bench = Path(args.benchmark)
        if args.generate or args.generate_only:
            from mmret.sql.benchmark import generate_benchmark

            t0 = time.perf_counter()
            m = generate_benchmark(bench, seed=args.seed, scale=args.scale,
                                   per_template=args.per_template)
            print(f"generated {bench}: {m['gold']} gold queries, {m['variants']} variants "
                  f"({time.perf_counter() - t0:.1f} s)")
            if args.generate_only:
                return 0
        elif not (bench / "variants.json").is_file():
            return _fail(prog, f"{bench}/variants.json not found (add --generate to create "
                               "the embedded benchmark there)")
        from mmret.sql.evaluation import evaluate_benchmark, plot, to_markdown

        routes = [r.strip() for r in args.routes.split(",") if r.strip()]
        t0 = time.perf_counter()
        res = evaluate_benchmark(bench, routes, k=args.k, max_rounds=args.max_rounds,
                                 limit_per_kind=args.limit_per_kind,
                                 log=lambda s: print(s, file=sys.stderr))
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (("sql_eval.json", json.dumps(res, indent=1, ensure_ascii=False,
                                                        default=str) + "\n"),
                           ("sql_eval.md", to_markdown(res))):
            tmp = out / (name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(out / name)
        if not args.no_plot:
            plot(res, out / "sql_eval.png")
    except (SQLError, OSError, ValueError) as exc:
        return _fail(prog, str(exc))
    print(to_markdown(res))
    print(f"wrote {out}/sql_eval.json, sql_eval.md{'' if args.no_plot else ', sql_eval.png'} "
          f"({res['wall_s']} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(check_main())

"""Evaluation on a Spider-format benchmark with labelled variants (the embedded one, or any
folder with the same ``variants.json``): retriever recall@k per route and mismatch kind,
execution accuracy before/after rule-based refinement per kind, detector precision/recall
per rule.

- **recall@k** (value variants): the failed condition's literal is searched in its
  column; the gold value's 1-based rank among the route's hits (absent: not found).
- **EX** (:func:`mmret.metrics.sql.results_match`, Spider test-suite): a query that fails
  to execute does not match. *before*: the variant's query; *after*: the query
  :func:`mmret.sql.refine.refine` returns with :class:`~mmret.sql.refine.RuleRefiner`
  (``min_score`` :data:`~mmret.sql.values.DEFAULT_MIN_SCORE` of the route).
- **detector**: every gold query (expected: no finding) and every constraint variant
  (expected: its kind's rule); a rule's precision/recall over those items. How often each
  rule fires on value variants is reported apart (no label there).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmret.metrics.sql import (
    detector_precision_recall,
    execution_accuracy,
    recall_at_k,
    results_match,
)
from mmret.sql.benchmark import order_matters
from mmret.sql.database import Database
from mmret.sql.errors import SQLError
from mmret.sql.refine import RuleRefiner, refine
from mmret.sql.rules import BUILTIN_RULES, detect
from mmret.sql.spider import load_spider
from mmret.sql.values import DEFAULT_MIN_SCORE, ValueRetriever, minilm_towers

__all__ = ["evaluate_benchmark", "execution_match"]


def execution_match(db: Database, gold_sql: str, pred_sql: str) -> bool:
    """Spider test-suite execution match of ``pred_sql`` against ``gold_sql`` on ``db``
    (a prediction that fails to run does not match)."""
    gold = db.query(gold_sql).rows
    try:
        pred = db.query(pred_sql).rows
    except SQLError:
        return False
    return results_match(gold, pred, order_matters(gold_sql))


def _rank(cands: Sequence[Any], gold: Any) -> int | None:
    for c in cands:
        if c.value == gold:
            return c.rank
    return None


def evaluate_benchmark(root: str | Path, routes: Sequence[str] = ("fuzzy", "bm25_char",
                                                                  "dense", "fusion"),
                       k: int = 5, max_rounds: int = 3, split: str = "dev",
                       variants_file: str = "variants.json", towers: Any = None,
                       limit_per_kind: int | None = None,
                       log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every table of the module docstring as one JSON-ready dict."""
    root = Path(root)
    data = load_spider(root, split)
    path = root / variants_file
    try:
        variants = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the variants file ({exc})") from None
    if limit_per_kind is not None:
        taken: Counter[str] = Counter()
        kept = []
        for v in variants:
            if taken[v["kind"]] < limit_per_kind:
                taken[v["kind"]] += 1
                kept.append(v)
        variants = kept
    log = log or (lambda _: None)
    dbs = {name: data.database(name) for name in sorted(data.schemas)}
    value_vars = [v for v in variants if v["family"] == "value"]
    cons_vars = [v for v in variants if v["family"] == "constraint"]
    needs_towers = any(r in ("dense", "fusion") for r in routes)
    if needs_towers and towers is None:
        towers = minilm_towers()

    out: dict[str, Any] = {"benchmark": str(root.name), "k": k, "max_rounds": max_rounds,
                           "routes": list(routes), "n_gold": len(data.examples),
                           "n_value_variants": len(value_vars),
                           "n_constraint_variants": len(cons_vars)}
    # ---------------------------------------------------------------- EX before
    before: dict[str, list[bool]] = defaultdict(list)
    for v in variants:
        before[v["kind"]].append(execution_match(dbs[v["db_id"]], v["gold_query"], v["query"]))
    out["ex_before"] = {kd: execution_accuracy(m) for kd, m in sorted(before.items())}
    gold_ok = [execution_match(dbs[e.db_id], e.query, e.query) for e in data.examples]
    out["gold_ex"] = execution_accuracy(gold_ok)

    # ---------------------------------------------------------------- routes
    retrieval: dict[str, Any] = {}
    ex_after: dict[str, Any] = {}
    timing: dict[str, Any] = {}
    failures: dict[str, Any] = {}
    for route in routes:
        t0 = time.perf_counter()
        vrs = {name: ValueRetriever(db, route, k=max(k, 5), towers=towers)
               for name, db in dbs.items()}
        ranks: dict[str, list[int | None]] = defaultdict(list)
        after: dict[str, list[bool]] = defaultdict(list)
        misses: dict[str, list[dict[str, Any]]] = defaultdict(list)
        search_s = 0.0
        for v in value_vars:
            vr = vrs[v["db_id"]]
            vr.values(v["table"], v["column"])  # build outside the timed search
            t1 = time.perf_counter()
            cands = vr.search(v["table"], v["column"], v["literal"], k=max(k, 5))
            search_s += time.perf_counter() - t1
            r = _rank(cands, v["gold_value"])
            ranks[v["kind"]].append(r)
            if r != 1 and len(misses[v["kind"]]) < 3:
                misses[v["kind"]].append({"literal": v["literal"], "gold": v["gold_value"],
                                          "top": [c.value for c in cands[:3]]})
            res = refine(v["query"], dbs[v["db_id"]], vr,
                         RuleRefiner(min_score=DEFAULT_MIN_SCORE.get(route)),
                         max_rounds=max_rounds)
            after[v["kind"]].append(execution_match(dbs[v["db_id"]], v["gold_query"], res.sql))
        retrieval[route] = {kd: {"n": len(r), "recall@1": recall_at_k(r, 1),
                                 f"recall@{k}": recall_at_k(r, k)}
                            for kd, r in sorted(ranks.items())}
        ex_after[route] = {kd: execution_accuracy(m) for kd, m in sorted(after.items())}
        total = time.perf_counter() - t0
        timing[route] = {"total_s": round(total, 2),
                         "mean_search_ms": round(1000 * search_s / max(len(value_vars), 1), 3)}
        failures[route] = dict(misses)
        log(f"route {route}: {total:.1f} s")
    out["retrieval"] = retrieval
    out["ex_after"] = ex_after
    out["timing"] = timing
    out["failures"] = failures

    # ---------------------------------------------------------------- constraints
    cons_route = routes[0] if routes else "fuzzy"
    vrs = {name: ValueRetriever(db, cons_route, towers=towers) for name, db in dbs.items()}
    cons_after: dict[str, list[bool]] = defaultdict(list)
    for v in cons_vars:
        res = refine(v["query"], dbs[v["db_id"]], vrs[v["db_id"]],
                     RuleRefiner(min_score=DEFAULT_MIN_SCORE.get(cons_route)),
                     max_rounds=max_rounds)
        cons_after[v["kind"]].append(execution_match(dbs[v["db_id"]], v["gold_query"], res.sql))
    out["constraint_ex_after"] = {kd: execution_accuracy(m)
                                  for kd, m in sorted(cons_after.items())}
    out["constraint_route"] = cons_route

    # ---------------------------------------------------------------- detector
    expected, found, where = [], [], []
    for e in data.examples:
        expected.append(set())
        found.append({f.rule for f in detect(e.query, database=dbs[e.db_id])})
        where.append(e.query)
    for v in cons_vars:
        expected.append({v["kind"]})
        found.append({f.rule for f in detect(v["query"], database=dbs[v["db_id"]])})
        where.append(v["query"])
    out["detector"] = detector_precision_recall(expected, found, BUILTIN_RULES)
    out["detector_false_positives"] = [
        {"sql": s, "rules": sorted(f - e)} for s, e, f in zip(where, expected, found, strict=True)
        if f - e][:10]
    fired: Counter[str] = Counter()
    for v in value_vars:
        for rule in {f.rule for f in detect(v["query"], database=dbs[v["db_id"]])}:
            fired[f"{v['kind']}:{rule}"] += 1
    out["detector_on_value_variants"] = dict(sorted(fired.items()))
    for db in dbs.values():
        db.close()
    return out


def _fmt(x: float) -> str:
    return "–" if x != x else f"{x:.3f}"


def to_markdown(res: dict[str, Any]) -> str:
    """The result tables as Markdown."""
    k = res["k"]
    routes = res["routes"]
    kinds = sorted({kd for r in routes for kd in res["retrieval"].get(r, {})})
    lines = [f"Benchmark `{res['benchmark']}`: {res['n_gold']} gold queries (gold EX "
             f"{res['gold_ex']:.3f}), {res['n_value_variants']} value variants, "
             f"{res['n_constraint_variants']} constraint variants; k = {k}, "
             f"≤ {res['max_rounds']} refinement rounds.", "",
             "Value mismatches: recall@1 / recall@{k} of the gold value, EX before → after "
             "rule-based refinement.".replace("{k}", str(k)), ""]
    head = "| kind | n | EX before | " + " | ".join(
        f"{r} R@1 | {r} R@{k} | {r} EX after" for r in routes) + " |"
    lines += [head, "|" + "---|" * (3 + 3 * len(routes))]
    for kd in kinds:
        n = next(res["retrieval"][r][kd]["n"] for r in routes if kd in res["retrieval"][r])
        cells = [kd, str(n), _fmt(res["ex_before"].get(kd, float("nan")))]
        for r in routes:
            rr = res["retrieval"][r].get(kd)
            cells += [_fmt(rr["recall@1"]), _fmt(rr[f"recall@{k}"]),
                      _fmt(res["ex_after"][r][kd])] if rr else ["–"] * 3
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Constraint mismatches: EX before → after rule-based refinement "
              f"(value checks with route `{res['constraint_route']}`).", "",
              "| kind | EX before | EX after |", "|---|---|---|"]
    for kd, ex in res["constraint_ex_after"].items():
        lines.append(f"| {kd} | {_fmt(res['ex_before'][kd])} | {_fmt(ex)} |")
    lines += ["", "Detector per rule (items: gold queries, expected no finding; constraint "
              "variants, expected their rule).", "",
              "| rule | support | TP | FP | FN | precision | recall |", "|---|---|---|---|---|---|---|"]
    for rule, d in res["detector"].items():
        lines.append(f"| {rule} | {d['support']} | {d['tp']} | {d['fp']} | {d['fn']} | "
                     f"{_fmt(d['precision'])} | {_fmt(d['recall'])} |")
    lines += ["", "Timing per route (2-core shared CPU): total (build + search + refine) and "
              "mean search per failed condition.", "", "| route | total s | search ms |",
              "|---|---|---|"]
    for r, t in res["timing"].items():
        lines.append(f"| {r} | {t['total_s']} | {t['mean_search_ms']} |")
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: str | Path) -> Path:
    """Recall@k and EX after refinement per kind, one bar per route (PNG)."""
    from mmret.extras import require

    require("matplotlib", "plots").use("Agg")
    plt = require("matplotlib.pyplot", "plots")
    import numpy as np

    k = res["k"]
    routes = res["routes"]
    kinds = sorted({kd for r in routes for kd in res["retrieval"].get(r, {})})
    x = np.arange(len(kinds))
    width = 0.8 / max(len(routes), 1)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for i, r in enumerate(routes):
        rec = [res["retrieval"][r].get(kd, {}).get(f"recall@{k}", 0.0) for kd in kinds]
        ex = [res["ex_after"][r].get(kd, 0.0) for kd in kinds]
        axes[0].bar(x + i * width, rec, width, label=r)
        axes[1].bar(x + i * width, ex, width, label=r)
    axes[1].scatter(x + 0.4 - width / 2, [res["ex_before"].get(kd, 0.0) for kd in kinds],
                    color="black", marker="_", s=300, label="EX before", zorder=3)
    for ax, title in zip(axes, (f"recall@{k} of the gold value", "EX after rule refinement"),
                         strict=True):
        ax.set_xticks(x + 0.4 - width / 2)
        ax.set_xticklabels(kinds, rotation=30, ha="right")
        ax.set_title(title)
        ax.set_ylim(0, 1.05)
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path

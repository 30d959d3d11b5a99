"""Benchmark mmret.metrics.ir_metrics against ranx.evaluate on one synthetic run.

Data: ``Q`` queries x ``K`` candidates each (distinct random documents of a ``N``-document
corpus, untied random scores) and 1-5 judged relevant documents per query with grades 1-3,
half of them placed in the run. Metrics: ndcg@10, mrr@10, recall@100, map, precision@10
(one call each side). Both sides start from their own prepared inputs (mmret: a ``Run``;
ranx: ``ranx.Run`` / ``ranx.Qrels`` built beforehand, its Numba functions compiled by a
warm-up call on a small run); the median of ``--repeats`` timed calls is reported, the
ratio is ranx time / mmret time (> 1: mmret faster). The two results are checked equal
(1e-9) in the same run.

    python tools/bench/bench_ir_metrics.py                   # 10k queries x 1k candidates
    python tools/bench/bench_ir_metrics.py --queries 1000    # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from doc_sections import write_section  # noqa: E402  (tools/bench is on sys.path)

from mmret.metrics import ir_metrics  # noqa: E402
from mmret.retrieval import Run  # noqa: E402

METRICS = ["ndcg@10", "mrr@10", "recall@100", "map", "precision@10"]


def make_case(n_queries: int, depth: int, n_docs: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    doc_ids = np.array([f"d{i}" for i in range(n_docs)], dtype=object)
    # distinct documents per row: a random offset walk over a permutation
    perm = rng.permutation(n_docs)
    starts = rng.integers(0, n_docs, size=n_queries)
    cols = perm[(starts[:, None] + np.arange(depth)[None, :] * 7) % n_docs]
    scores = -np.sort(-rng.random((n_queries, depth)), axis=1)
    qids = tuple(f"q{i}" for i in range(n_queries))
    run = Run(qids, doc_ids, cols.astype(np.int64), scores, "bench")
    qrels: dict[str, dict[str, int]] = {}
    for i, q in enumerate(qids):
        n_rel = int(rng.integers(1, 6))
        inside = rng.choice(depth, size=n_rel // 2 + 1, replace=False)
        rel = {str(doc_ids[cols[i, j]]) for j in inside}
        while len(rel) < n_rel:
            rel.add(str(doc_ids[rng.integers(0, n_docs)]))
        qrels[q] = {d: int(rng.integers(1, 4)) for d in rel}
    return run, qrels


def ranx_inputs(run: Run, qrels):
    import ranx

    names = np.asarray(run.doc_ids, dtype=object)
    rd = {q: dict(zip(names[run.indices[i]].tolist(), run.scores[i].tolist(), strict=True))
          for i, q in enumerate(run.query_ids)}
    return ranx.Qrels(qrels), ranx.Run(rd)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    import ranx

    warnings.simplefilter("ignore")
    run, qrels = make_case(args.queries, args.depth, args.docs)
    t0 = time.perf_counter()
    rq, rr = ranx_inputs(run, qrels)
    ranx_build = time.perf_counter() - t0
    small_run, small_qrels = make_case(50, 20, 500, seed=1)
    sq, sr = ranx_inputs(small_run, small_qrels)
    ranx.evaluate(sq, sr, METRICS)  # Numba compile (cached on disk after the first run)
    ir_metrics(small_run, small_qrels, METRICS)
    t_mmret, ours = timed(lambda: ir_metrics(run, qrels, METRICS), args.repeats)
    t_ranx, ref = timed(lambda: ranx.evaluate(rq, rr, METRICS), args.repeats)
    diff = max(abs(ours[m] - float(ref[m])) for m in METRICS)
    result = {"queries": args.queries, "depth": args.depth, "docs": args.docs,
              "metrics": METRICS, "repeats": args.repeats, "mmret_s": t_mmret, "ranx_s": t_ranx,
              "ratio_ranx_over_mmret": t_ranx / t_mmret, "max_abs_diff": diff,
              "ranx_input_build_s": ranx_build, "ranx_version": version("ranx"),
              "numba_threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1)),
              "load_avg": os.getloadavg()[0], "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count()}
    print(json.dumps(result, indent=2))
    out = ROOT / "tools" / "bench" / "results" / "ir_metrics.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.no_doc:
        return
    cmd = "python tools/bench/bench_ir_metrics.py " + shlex.join(sys.argv[1:])
    body = f"""## IR metrics: mmret.metrics.ir_metrics vs ranx.evaluate

`{cmd.strip()}` ({result['cores']}-core CPU, shared: load average {result['load_avg']:.1f};
ranx {result['ranx_version']} after its Numba warm-up, its inputs built beforehand in
{ranx_build:.1f} s, not timed). {args.queries} queries x {args.depth} candidates, metrics
{', '.join(METRICS)} in one call each; median of {args.repeats} calls.

| | seconds | ratio (ranx / mmret) |
|---|---|---|
| mmret `ir_metrics` (numpy) | {t_mmret:.3f} | {t_ranx / t_mmret:.2f}x |
| ranx `evaluate` (Numba, parallel) | {t_ranx:.3f} | 1.00x |

Largest difference between the two results: {diff:.1e}. Raw: `tools/bench/results/ir_metrics.json`.
"""
    write_section("ir_metrics", body)


if __name__ == "__main__":
    main()

"""BM25 speed: mmret's BM25 route vs bm25s used directly vs rank_bm25 (BM25Okapi), index
build and queries/s, on synthetic chunks generated here (Zipf-distributed pseudo-words),
same machine, same run.

All three tokenise alike (lower-case, ``(?u)\\b\\w\\w+\\b``, no stopwords: mmret's
``{"name": "word", "min_len": 2}``, ``bm25s.tokenize(stopwords=None)``), so bm25s and
mmret compute the same scores (checked on the timed queries). Build = tokenising the
corpus + indexing (mmret also checks the documents and fingerprints the texts); queries =
tokenising + retrieving the top ``k`` (mmret also breaks ties by id and returns a Run).
rank_bm25 scores every document in Python per query term, so only ``--rank-queries``
queries are timed for it (queries/s extrapolated from those).

    python tools/bench/bench_bm25.py --sizes 10000 100000

Prints a Markdown table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmret.retrieval import Document, Query  # noqa: E402
from mmret.retrieval.bm25 import BM25Route  # noqa: E402

PATTERN = re.compile(r"(?u)\b\w\w+\b")


def synthetic_corpus(n: int, n_queries: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` chunks of 40–120 Zipf(1.1) pseudo-words over a 50k vocabulary, and queries of
    3–6 words of mid frequency."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, rng.integers(3, 10))) for _ in range(50_000)],
                     dtype=object)
    lengths = rng.integers(40, 121, size=n)
    words = (rng.zipf(1.1, size=int(lengths.sum())) - 1) % len(vocab)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    texts = [" ".join(vocab[words[bounds[i]:bounds[i + 1]]]) for i in range(n)]
    mid = np.arange(50, 5000)
    queries = [" ".join(vocab[rng.choice(mid, rng.integers(3, 7))]) for _ in range(n_queries)]
    return texts, queries


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_size(n: int, n_queries: int, rank_queries: int, k: int, repeat: int,
               with_rank_bm25: bool) -> dict:
    import bm25s
    import rank_bm25

    texts, queries = synthetic_corpus(n, n_queries)
    docs = [Document(f"c{i:07d}", t) for i, t in enumerate(texts)]
    qs = [Query(f"q{i:05d}", t) for i, t in enumerate(queries)]
    best = {"mmret_build": np.inf, "bm25s_build": np.inf, "mmret_query": np.inf,
            "bm25s_query": np.inf}
    route = direct = run = found = None
    for _ in range(repeat):  # alternate, keep each one's best
        t, route = timed(lambda: BM25Route(docs, tokenizer={"name": "word", "min_len": 2}))
        best["mmret_build"] = min(best["mmret_build"], t)

        def build_direct():
            engine = bm25s.BM25()
            engine.index(bm25s.tokenize(texts, stopwords=None, show_progress=False),
                         show_progress=False)
            return engine

        t, direct = timed(build_direct)
        best["bm25s_build"] = min(best["bm25s_build"], t)
        t, run = timed(lambda: route.search(qs, k))  # noqa: B023
        best["mmret_query"] = min(best["mmret_query"], t)
        t, found = timed(lambda: direct.retrieve(  # noqa: B023
            bm25s.tokenize(queries, stopwords=None, show_progress=False), k=k,
            show_progress=False))
        best["bm25s_query"] = min(best["bm25s_query"], t)
    # same scores as bm25s on every timed query (top-k scores as sets of values)
    worst = 0.0
    for i in range(len(qs)):
        ours = sorted((s for _, s in run.hits(i)), reverse=True)
        theirs = sorted((float(s) for s in found.scores[i] if s > 0), reverse=True)
        assert len(ours) == len(theirs), i
        worst = max([worst, *(abs(x - y) for x, y in zip(ours, theirs, strict=True))])
    row = {"chunks": n, "queries": n_queries, "k": k, "repeat": repeat,
           "tokens": int(sum(len(PATTERN.findall(t.lower())) for t in texts[:2000]) / 2000 * n),
           **{f"{key}_s": float(v) for key, v in best.items()},
           "mmret_qps": n_queries / best["mmret_query"], "bm25s_qps": n_queries / best["bm25s_query"],
           "max_abs_diff_vs_bm25s": worst}
    row["build_ratio_vs_bm25s"] = best["bm25s_build"] / best["mmret_build"]
    row["query_ratio_vs_bm25s"] = row["mmret_qps"] / row["bm25s_qps"]
    if with_rank_bm25:
        t, okapi = timed(lambda: rank_bm25.BM25Okapi([PATTERN.findall(x.lower()) for x in texts]))
        row["rank_bm25_build_s"] = t
        sub = queries[:rank_queries]

        def rank_search():
            for q in sub:
                s = okapi.get_scores(PATTERN.findall(q.lower()))
                np.argpartition(-s, k)[:k]

        t, _ = timed(rank_search)
        row["rank_bm25_queries_timed"] = len(sub)
        row["rank_bm25_qps"] = len(sub) / t
        row["build_ratio_vs_rank_bm25"] = row["rank_bm25_build_s"] / best["mmret_build"]
        row["query_ratio_vs_rank_bm25"] = row["mmret_qps"] / row["rank_bm25_qps"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rank-queries", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-rank-bm25", action="store_true")
    parser.add_argument("--out", default="tools/bench/results/bm25.json")
    args = parser.parse_args()
    import bm25s

    rows = []
    for n in args.sizes:
        rows.append(bench_size(n, args.queries, args.rank_queries, args.k, args.repeat,
                               not args.no_rank_bm25))
        print(json.dumps(rows[-1]), flush=True)
    result = {"bm25s": bm25s.__version__, "numpy": np.__version__,
              "python": platform.python_version(), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print("| chunks | build mmret / bm25s / rank_bm25 (s) | mmret build vs bm25s | "
          "queries/s mmret / bm25s / rank_bm25 | mmret q/s vs bm25s | vs rank_bm25 "
          "(build, q/s) | max |diff| |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rb = (f"{r['rank_bm25_build_s']:.1f}", f"{r['rank_bm25_qps']:.1f}",
              f"{r['build_ratio_vs_rank_bm25']:.1f}x, {r['query_ratio_vs_rank_bm25']:.0f}x") \
            if "rank_bm25_qps" in r else ("-", "-", "-")
        print(f"| {r['chunks']:,} | {r['mmret_build_s']:.1f} / {r['bm25s_build_s']:.1f} / "
              f"{rb[0]} | {r['build_ratio_vs_bm25s']:.2f}x | {r['mmret_qps']:.0f} / "
              f"{r['bm25s_qps']:.0f} / {rb[1]} | {r['query_ratio_vs_bm25s']:.2f}x | {rb[2]} | "
              f"{r['max_abs_diff_vs_bm25s']:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fusion speed: mmret.retrieval.fuse (vectorised numpy on padded runs) vs ranx.fuse
(numba), on synthetic runs of Q queries x K candidates (two runs, half of the candidates
shared), same machine, same run.

ranx is measured after a warm-up call on small runs (its numba functions are compiled or
loaded from cache then; the first call's cost is reported separately). The runs' conversion
into each library's structure is not timed. ranx's typed dicts take ~0.7 kB per (query,
document) entry, so 10k x 1k x 2 runs do not fit in this machine's memory at once: ranx is
timed on blocks of ``--block`` queries (fusion is per query; the block times are summed),
mmret on all queries at once. Each method is timed ``--repeat`` times alternately, best
total kept; outputs are checked to agree on a sample of queries.

    python tools/bench/bench_fusion.py --queries 10000 --candidates 1000

Prints a Markdown table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmret.retrieval import Run, fuse  # noqa: E402

METHODS = [("rrf", None, {"k": 60}), ("wsum", "min-max", {"weights": [0.5, 0.5]}),
           ("wsum", "zmuv", {"weights": [0.5, 0.5]})]


def synthetic_runs(q: int, k: int, vocab: int, seed: int) -> tuple[Run, Run]:
    rng = np.random.default_rng(seed)
    steps = rng.integers(2, max(3, (2 * vocab) // (3 * k)), size=(q, k))
    base = rng.integers(0, vocab, size=(q, 1))
    a = (base + np.cumsum(steps, axis=1)) % vocab  # strictly increasing: unique per row
    assert np.cumsum(steps, axis=1)[:, -1].max() < vocab
    keep = rng.random((q, k)) < 0.5
    b = np.where(keep, a, (a + 1) % vocab)  # steps >= 2: a + 1 is never another entry
    ids = np.array([f"d{j:07d}" for j in range(vocab)], dtype=object)
    qids = tuple(f"q{i:06d}" for i in range(q))

    def ranked(idx: np.ndarray, name: str, scale: float) -> Run:
        perm = np.argsort(rng.random(idx.shape), axis=1)
        idx = np.take_along_axis(idx, perm, axis=1).astype(np.int64)
        scores = -np.sort(-rng.random(idx.shape) * scale, axis=1)
        return Run(qids, ids, idx, scores, name)

    return ranked(a, "bm25", 20.0), ranked(b, "dense", 1.0)


def to_ranx(run: Run, chunk: int = 500):
    """A ranx Run built ``chunk`` queries at a time (bounded memory: the Python dicts of
    one chunk at a time)."""
    import ranx

    ids = run.doc_ids
    out = None
    for start in range(0, len(run), chunk):
        part = {q: dict(zip(ids[run.indices[i]].tolist(), run.scores[i].tolist(), strict=True))
                for i, q in enumerate(run.query_ids[start:start + chunk], start)}
        piece = ranx.Run(part)
        if out is None:
            out = piece
        else:
            for q in piece.run.keys():
                out.run[q] = piece.run[q]
        del part
    out.sorted = True
    return out


def block_of(run: Run, rows: np.ndarray) -> Run:
    return Run(tuple(run.query_ids[i] for i in rows), run.doc_ids, run.indices[rows],
               run.scores[rows], run.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=10000)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--vocab", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--block", type=int, default=1000)
    parser.add_argument("--out", default="tools/bench/results/fusion.json")
    args = parser.parse_args()
    import numba
    import ranx

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    a, b = synthetic_runs(args.queries, args.candidates, args.vocab, 0)
    setup = time.perf_counter() - t0
    small_a, small_b = synthetic_runs(50, 20, 10_000, 1)
    t0 = time.perf_counter()
    for method, norm, params in METHODS:
        ranx.fuse([to_ranx(small_a), to_ranx(small_b)], norm=norm, method=method, params=params)
    first_call = time.perf_counter() - t0
    rng = np.random.default_rng(2)
    sample = set(rng.choice(args.queries, min(200, args.queries), replace=False).tolist())
    blocks = [np.arange(s, min(s + args.block, args.queries))
              for s in range(0, args.queries, args.block)]
    best = {m: [float("inf"), float("inf")] for m in range(len(METHODS))}
    worst = dict.fromkeys(range(len(METHODS)), 0.0)
    for _ in range(args.repeat):  # alternate mmret and ranx, keep each one's best total
        for m, (method, norm, params) in enumerate(METHODS):
            kwargs = dict(params, **({"norm": norm} if method == "wsum" else {}))
            t0 = time.perf_counter()
            mine = fuse([a, b], method, **kwargs)
            best[m][0] = min(best[m][0], time.perf_counter() - t0)
            total = 0.0
            for rows in blocks:
                ra, rb = to_ranx(block_of(a, rows)), to_ranx(block_of(b, rows))
                t0 = time.perf_counter()
                theirs = ranx.fuse([ra, rb], norm=norm, method=method, params=params)
                total += time.perf_counter() - t0
                for i in sample.intersection(rows.tolist()):
                    ours, ref = dict(mine.hits(int(i))), dict(theirs[a.query_ids[i]])
                    assert ours.keys() == ref.keys(), a.query_ids[i]
                    worst[m] = max(worst[m], max(abs(ours[d] - ref[d]) for d in ref))
                del ra, rb, theirs
            best[m][1] = min(best[m][1], total)
            del mine
    rows = []
    for m, (method, norm, _) in enumerate(METHODS):
        label = f"{method}" + (f" ({norm})" if norm else "")
        rows.append({"method": label, "mmret_s": best[m][0], "ranx_s": best[m][1],
                     "speedup": best[m][1] / best[m][0], "max_abs_diff_sample": worst[m]})
    result = {"queries": args.queries, "candidates_per_run": args.candidates,
              "runs": 2, "vocab": args.vocab, "repeat": args.repeat, "ranx_block": args.block,
              "ranx": ranx.__version__ if hasattr(ranx, "__version__") else "?",
              "numba": numba.__version__, "numba_threads": numba.get_num_threads(),
              "numpy": np.__version__, "python": platform.python_version(),
              "ranx_first_call_s": first_call, "setup_s": setup, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"{args.queries} queries x {args.candidates} candidates x 2 runs (ranx in blocks of "
          f"{args.block} queries); ranx first call "
          f"(compile/cache load, small runs) {first_call:.1f} s; numba threads "
          f"{numba.get_num_threads()}")
    print("| fusion | mmret (s) | ranx (s) | mmret speed-up | max |diff| (200 queries) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['mmret_s']:.2f} | {r['ranx_s']:.2f} | "
              f"{r['speedup']:.2f}x | {r['max_abs_diff_sample']:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

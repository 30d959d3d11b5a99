"""Benchmark mmret.index: build time, queries/s and recall@10 of Flat, HNSW32 and IVF.

Data: a Gaussian mixture on the unit sphere, like real embeddings (clusters of related
items), not uniform random vectors (the adversarial worst case for approximate search):
``x = normalize(c_a + sigma * z)`` with ``C`` centres ``c`` uniform on the sphere, cluster
``a`` uniform, ``z ~ N(0, I_D)``. Queries are fresh draws from the same mixture.

Recall@10 = mean over queries of |approx top-10 ∩ exact top-10| / 10, with the exact
top-10 from the Flat (brute-force) index over the same vectors.

    python tools/bench/bench_index.py                 # 1M x 256, as in docs/benchmarks
    python tools/bench/bench_index.py --n 100000      # quick run
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from doc_sections import write_section  # noqa: E402  (tools/bench is on sys.path)

from mmret.index import build_index  # noqa: E402


def mixture_on_sphere(
    n: int, dim: int, centers: np.ndarray, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """``n`` rows of ``normalize(c_a + sigma * z)``, float32[n, dim], in 100k chunks."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        a = rng.integers(0, centers.shape[0], size=m)
        block = centers[a] + sigma * rng.standard_normal((m, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block
    return out


def recall_at(approx: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    """Mean |approx[:, :k] ∩ exact[:, :k]| / k."""
    hits = [len(set(a[:k].tolist()) & set(e[:k].tolist())) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) / k


def timed_search(index: Any, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """(queries per second, ids) of one batched search of all queries."""
    start = time.perf_counter()
    _, ids = index.search(queries, k)
    return queries.shape[0] / (time.perf_counter() - start), np.asarray(ids)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import faiss
    import torch

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    centers = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    t0 = time.perf_counter()
    x = mixture_on_sphere(args.n, args.dim, centers, args.sigma, rng)
    q = mixture_on_sphere(args.queries, args.dim, centers, args.sigma, rng)
    print(f"data: {x.shape} in {time.perf_counter() - t0:.1f}s", flush=True)
    rows: list[dict[str, Any]] = []
    k = 10

    def exact(n: int) -> tuple[np.ndarray, float, float]:
        start = time.perf_counter()
        flat = build_index(x[:n], factory="Flat")
        build_s = time.perf_counter() - start
        qps, ids = timed_search(flat, q, k)
        rows.append(dict(index="Flat", backend="faiss", n=n, build_s=build_s, qps=qps,
                         recall_at_10=1.0, params={}))
        print(rows[-1], flush=True)
        del flat
        gc.collect()
        return ids, qps, build_s

    gt, exact_qps, _ = exact(args.n)
    if args.torch_queries:
        tq = q[: args.torch_queries]
        start = time.perf_counter()
        tindex = build_index(x, factory="Flat", backend="torch")
        build_s = time.perf_counter() - start
        qps, ids = timed_search(tindex, tq, k)
        rows.append(dict(index="Flat", backend="torch", n=args.n, build_s=build_s, qps=qps,
                         recall_at_10=recall_at(ids, gt[: len(tq)]), params={},
                         queries=len(tq)))
        print(rows[-1], flush=True)
        del tindex
        gc.collect()

    for nlist in args.nlist:
        factory = f"IVF{nlist},Flat"
        start = time.perf_counter()
        ivf = build_index(x, factory=factory, train_size=args.train_size, seed=args.seed)
        build_s = time.perf_counter() - start
        for nprobe in args.nprobe:
            ivf.nprobe = nprobe
            qps, ids = timed_search(ivf, q, k)
            rows.append(dict(index=factory, backend="faiss", n=args.n, build_s=build_s,
                             qps=qps, recall_at_10=recall_at(ids, gt), params={"nprobe": nprobe},
                             speedup_vs_exact=qps / exact_qps))
            print(rows[-1], flush=True)
        del ivf
        gc.collect()

    hnsw_n = min(args.hnsw_n or args.n, args.n)
    if hnsw_n == args.n:
        hnsw_gt, hnsw_exact_qps = gt, exact_qps
    else:
        hnsw_gt, hnsw_exact_qps, _ = exact(hnsw_n)
    start = time.perf_counter()
    hnsw = build_index(x[:hnsw_n], factory="HNSW32")
    build_s = time.perf_counter() - start
    for ef in args.ef_search:
        hnsw.ef_search = ef
        qps, ids = timed_search(hnsw, q, k)
        rows.append(dict(index="HNSW32", backend="faiss", n=hnsw_n, build_s=build_s, qps=qps,
                         recall_at_10=recall_at(ids, hnsw_gt), params={"efSearch": ef},
                         speedup_vs_exact=qps / hnsw_exact_qps))
        print(rows[-1], flush=True)
    return {
        "machine": args.machine,
        "platform": platform.platform(),
        "faiss_version": faiss.__version__,
        "threads": args.threads,
        "data": dict(n=args.n, dim=args.dim, queries=args.queries, clusters=args.clusters,
                     sigma=args.sigma, seed=args.seed,
                     kind="Gaussian mixture on the unit sphere"),
        "command": " ".join(["python tools/bench/bench_index.py", *map(shlex.quote, sys.argv[1:])]),
        "results": rows,
    }


def markdown(report: dict[str, Any], title: str) -> str:
    d = report["data"]
    lines = [
        title,
        "",
        f"Machine: {report['machine']}; FAISS {report['faiss_version']}, "
        f"{report['threads']} threads. Command:",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"Data: {d['n']:,} × {d['dim']} float32 vectors from a {d['kind']} "
        f"({d['clusters']} clusters, sigma {d['sigma']} per dimension, seed {d['seed']}); "
        f"{d['queries']:,} queries from the same mixture; cosine similarity (inner product on "
        "L2-normalised vectors). Uniform random vectors would be the adversarial worst case "
        "for approximate search; clustered data is closer to real embeddings. Recall@10 is "
        "measured against exact (Flat) search over the same vectors; queries/s is one batched "
        "search of all queries.",
        "",
        "| index | backend | N | params | build (s) | queries/s | × exact | recall@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "–"
        speed = f"{r['speedup_vs_exact']:.1f}" if "speedup_vs_exact" in r else "1.0"
        if r["backend"] == "torch":
            params = f"{r['queries']} queries"
        lines.append(
            f"| {r['index']} | {r['backend']} | {r['n']:,} | {params} | {r['build_s']:.1f} | "
            f"{r['qps']:,.0f} | {speed} | {r['recall_at_10']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="gallery size")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--clusters", type=int, default=1000, help="mixture components")
    p.add_argument("--sigma", type=float, default=0.05, help="per-dimension noise std")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nlist", type=int, nargs="+", default=[4096])
    p.add_argument("--nprobe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--train-size", type=int, default=200_000)
    p.add_argument("--hnsw-n", type=int, default=None, help="gallery size for HNSW (default --n)")
    p.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    p.add_argument("--torch-queries", type=int, default=200,
                   help="queries for the torch exact backend (0 skips it)")
    p.add_argument("--machine", default="2-core CPU, no GPU")
    p.add_argument("--out", type=Path, default=ROOT / "tools/bench/results/index.json")
    p.add_argument("--section", default="index",
                   help="name of this run's section in docs/benchmarks.md")
    p.add_argument("--title", default="## Index (mmret.index)", help="Markdown section title")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    section = markdown(report, args.title)
    write_section(args.section, section)
    print(section)


if __name__ == "__main__":
    main()

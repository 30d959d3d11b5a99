"""Benchmark: mmret's exact chunked rank engine against the usual evaluation code paths.

Run from the repository root::

    python tools/bench/bench_ranking.py --scale coco    # 5,000 images × 25,000 captions
    python tools/bench/bench_ranking.py --scale 10x     # 50,000 × 250,000
    python tools/bench/bench_ranking.py --scale huge    # 100,000 × 500,000 (long)

Methods, each timed in a fresh subprocess (so that peak-memory numbers are its own):

* ``engine``: :func:`mmret.metrics.image_text_retrieval` (one pass, both directions).
* ``matmul_full`` / ``matmul_chunked``: the bare fp32 product ``V Tᵀ`` of the same
  features, the floor for any exact method (whole matrix at once; or in the engine's
  row chunks into one reused buffer, results discarded).
* ``per_row``: the LAVIS/ALBEF lineage — per query: its score row, a numpy argsort,
  the gold position. Timed on a subset of queries and extrapolated linearly.
* ``full_matrix``: the CLIP_benchmark approach — the whole score matrix in memory, then
  top-k per row and a gold check (recall only). Skipped when the matrix does not fit.

Synthetic L2-normalised features, d = 512, 5 captions per image: caption = image feature
plus Gaussian noise, renormalised (recall@1 near 50%). Peak extra memory = peak RSS
during the method minus RSS before it (``/proc/self/clear_refs`` resets the peak).
Results go to ``tools/bench/results/ranking_<scale>.json`` and its section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from doc_sections import DOC, write_section  # tools/bench is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tools" / "bench" / "results"

SCALES = {  # name: (images, captions per image)
    "tiny": (500, 5),
    "coco": (5_000, 5),
    "10x": (50_000, 5),
    "huge": (100_000, 5),
}
DIM = 512
NOISE = 6.0  # caption = normalize(v + NOISE * n / sqrt(d)); R@1 around 50 % at COCO scale
KS = (1, 5, 10)
GIB = 2**30


# ----------------------------------------------------------------------------- features
def make_features(n_images: int, per_image: int, seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic features, generated in place block by block (low peak memory)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, DIM, generator=gen)
    images.div_(images.norm(dim=1, keepdim=True))
    owner = torch.arange(n_images).repeat_interleave(per_image)
    texts = torch.empty(owner.numel(), DIM)
    block = 65_536
    for start in range(0, owner.numel(), block):
        part = texts[start : start + block]
        part.normal_(generator=gen).mul_(NOISE / math.sqrt(DIM))
        part.add_(images[owner[start : start + block]])
        part.div_(part.norm(dim=1, keepdim=True))
    return images, texts, owner


# ----------------------------------------------------------------------------- memory
def rss_bytes(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- methods
def summarize(i2t: np.ndarray | None, t2i: np.ndarray | None) -> dict[str, float]:
    out = {}
    for name, ranks in (("image_to_text", i2t), ("text_to_image", t2i)):
        if ranks is not None:
            for k in KS:
                out[f"{name}_R@{k}"] = 100.0 * float(np.mean(ranks < k))
    return out


def method_engine(images, texts, owner, args, scratch: Path) -> dict:
    from mmret.metrics import image_text_retrieval  # imported before timing (see worker)
    result = image_text_retrieval(images, texts, owner, chunk_size=args.chunk_size,
                                  return_ranks=True)
    i2t = result.pop("image_to_text_ranks").numpy()
    t2i = result.pop("text_to_image_ranks").numpy()
    np.save(scratch / "engine_i2t.npy", i2t)
    np.save(scratch / "engine_t2i.npy", t2i)
    return {"metrics": result}


def method_matmul_full(images, texts, owner, args, scratch: Path) -> dict:
    scores = images @ texts.T
    return {"checksum": float(scores[:, :3].sum())}


def method_matmul_chunked(images, texts, owner, args, scratch: Path) -> dict:
    rows = min(args.chunk_size, images.shape[0])
    buffer = torch.empty(rows, texts.shape[0])
    for start in range(0, images.shape[0], rows):
        stop = min(start + rows, images.shape[0])
        torch.mm(images[start:stop], texts.T, out=buffer[: stop - start])
    return {"checksum": float(buffer[:, :3].sum())}


def method_per_row(images, texts, owner, args, scratch: Path) -> dict:
    """LAVIS/ALBEF-style loop on a query subset; times are extrapolated."""
    n_images, n_texts = images.shape[0], texts.shape[0]
    owner_np = owner.numpy()
    captions_of = [[] for _ in range(n_images)]
    for j, i in enumerate(owner_np):
        captions_of[i].append(j)
    q_img = np.linspace(0, n_images - 1, min(args.per_row_queries, n_images)).astype(int)
    q_txt = np.linspace(0, n_texts - 1, min(args.per_row_queries, n_texts)).astype(int)
    texts_t = texts.T.contiguous()
    images_t = images.T.contiguous()
    start = time.perf_counter()
    i2t = []
    for i in q_img:
        score = (images[i] @ texts_t).numpy()
        inds = np.argsort(score)[::-1]
        i2t.append(min(int(np.where(inds == j)[0][0]) for j in captions_of[i]))
    time_i2t = time.perf_counter() - start
    start = time.perf_counter()
    t2i = []
    for j in q_txt:
        score = (texts[j] @ images_t).numpy()
        inds = np.argsort(score)[::-1]
        t2i.append(int(np.where(inds == owner_np[j])[0][0]))
    time_t2i = time.perf_counter() - start
    np.save(scratch / "per_row_i2t.npy", np.stack([q_img, np.array(i2t)]))
    np.save(scratch / "per_row_t2i.npy", np.stack([q_txt, np.array(t2i)]))
    extrapolated = time_i2t / len(q_img) * n_images + time_t2i / len(q_txt) * n_texts
    return {"extrapolated_seconds": extrapolated, "measured_queries": [len(q_img), len(q_txt)],
            "measured_seconds": time_i2t + time_t2i}


def method_full_matrix(images, texts, owner, args, scratch: Path) -> dict:
    """CLIP_benchmark style: whole matrix, top-k per row, gold check (recall only)."""
    scores = images @ texts.T  # [N, M]
    kmax = max(KS)
    top_texts = torch.topk(scores, kmax, dim=1).indices  # image→text
    hit_i2t = owner[top_texts] == torch.arange(images.shape[0])[:, None]
    top_images = torch.topk(scores.T, kmax, dim=1).indices  # text→image
    hit_t2i = top_images == owner[:, None]
    metrics = {}
    for k in KS:
        metrics[f"image_to_text_R@{k}"] = 100.0 * float(hit_i2t[:, :k].any(1).double().mean())
        metrics[f"text_to_image_R@{k}"] = 100.0 * float(hit_t2i[:, :k].any(1).double().mean())
    return {"metrics": metrics}


METHODS = {
    "engine": method_engine,
    "matmul_full": method_matmul_full,
    "matmul_chunked": method_matmul_chunked,
    "per_row": method_per_row,
    "full_matrix": method_full_matrix,
}


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    n_images, per_image = SCALES[args.scale]
    images, texts, owner = make_features(n_images, per_image)
    import mmret.metrics  # noqa: F401  (import cost is not part of any method)

    before = rss_bytes()
    exact_peak = reset_peak()
    start = time.perf_counter()
    cpu_start = time.process_time()
    out = METHODS[args.worker](images, texts, owner, args, Path(args.scratch))
    out["seconds"] = time.perf_counter() - start
    out["cpu_seconds"] = time.process_time() - cpu_start
    peak = rss_bytes("VmHWM") if exact_peak else max(rss_bytes("VmHWM"), before)
    out["peak_extra_bytes"] = peak - before
    out["peak_measure"] = "VmHWM after clear_refs" if exact_peak else "VmHWM (upper bound)"
    out["loadavg"] = os.getloadavg()
    print("RESULT " + json.dumps(out))


def run_worker(method: str, args: argparse.Namespace, scratch: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--scale", args.scale,
           "--threads", str(args.threads), "--chunk-size", str(args.chunk_size),
           "--per-row-queries", str(args.per_row_queries), "--scratch", scratch]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{method} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


# ----------------------------------------------------------------------------- driver
def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()}-core CPU ({cpu}), {mem:.0f} GiB RAM, {gpu}; "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def check_agreement(results: dict, scratch: Path) -> dict:
    """Assert that every method that ran reports the engine's numbers."""
    checks = {}
    engine = results["engine"]["metrics"]
    if "full_matrix" in results and "metrics" in results["full_matrix"]:
        other = results["full_matrix"]["metrics"]
        diff = {k: (engine[k], v) for k, v in other.items() if abs(engine[k] - v) > 1e-9}
        assert not diff, f"full_matrix recalls differ from the engine: {diff}"
        checks["full_matrix"] = f"R@{{1,5,10}} equal in both directions ({len(other)} values)"
    if "per_row" in results and "seconds" in results["per_row"]:
        i2t = np.load(scratch / "engine_i2t.npy")
        t2i = np.load(scratch / "engine_t2i.npy")
        for name, engine_ranks in (("i2t", i2t), ("t2i", t2i)):
            queries, ranks = np.load(scratch / f"per_row_{name}.npy")
            mismatches = int((engine_ranks[queries] != ranks).sum())
            assert mismatches == 0, f"per_row {name}: {mismatches} ranks differ from the engine"
        checks["per_row"] = "0-based ranks identical on every measured query"
    return checks


def write_doc(report: dict) -> None:
    scale = report["scale"]
    rows = []
    floor = report["bare_product_seconds"]
    for name, res in report["methods"].items():
        if "skipped" in res:
            rows.append(f"| {name} | skipped: {res['skipped']} | | | | |")
            continue
        seconds = res.get("extrapolated_seconds", res["seconds"])
        note = " (extrapolated)" if "extrapolated_seconds" in res else ""
        engine_ratio = seconds / report["methods"]["engine"]["seconds"]
        rows.append(
            f"| {name} | {seconds:.2f}{note} | {seconds / floor:.2f}× | {engine_ratio:.2f}× | "
            f"{res['peak_extra_bytes'] / 2**20:.0f} MiB | {res['loadavg'][0]:.1f} |"
        )
    section = [
        f"### Ranking engine, scale `{scale}` ({report['images']:,} images × "
        f"{report['captions']:,} captions, d = {DIM})",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; torch threads = {report['threads']}.  ",
        f"Engine chunk = {report['chunk_size']} image rows × all captions.",
        "",
        "| method | seconds | × bare product | × engine time | peak extra memory | load |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Agreement: {'; '.join(f'{k}: {v}' for k, v in report['agreement'].items()) or '—'}.",
        "Engine metrics: " + ", ".join(
            f"{k} = {v:.2f}" for k, v in report["methods"]["engine"]["metrics"].items()
            if "R@" in k) + ".",
        "",
        report["notes"],
        "",
    ]
    write_section(f"ranking-{scale}", "\n".join(section))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="coco")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="engine image rows per chunk (default: the library default)")
    parser.add_argument("--methods", default="",
                        help="comma-separated subset of methods to run (default: all)")
    parser.add_argument("--per-row-queries", type=int, default=500,
                        help="queries per direction timed for the per-row baseline")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of the timed methods; the fastest round is reported")
    parser.add_argument("--memory-gib", type=float, default=None,
                        help="RAM budget for full-matrix methods (default: 80%% of RAM)")
    parser.add_argument("--worker", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chunk_size is None:
        from mmret.metrics.ranking import DEFAULT_CHUNK_SIZE

        args.chunk_size = DEFAULT_CHUNK_SIZE
    if args.worker:
        worker(args)
        return
    n_images, per_image = SCALES[args.scale]
    n_texts = n_images * per_image
    feature_bytes = (n_images + n_texts) * DIM * 4
    budget = (args.memory_gib * GIB if args.memory_gib else
              0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    matrix_bytes = n_images * n_texts * 4
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        order = ["engine", "matmul_chunked"]
        if matrix_bytes + feature_bytes < budget:
            order.insert(1, "matmul_full")
            order.append("full_matrix")
        else:
            reason = (f"needs the full {n_images:,} × {n_texts:,} fp32 score matrix = "
                      f"{matrix_bytes / 1e9:.0f} GB (> {budget / GIB:.0f} GiB budget)")
            results["full_matrix"] = {"skipped": reason}
            results["matmul_full"] = {"skipped": reason}
        if args.methods:
            wanted = args.methods.split(",")
            order = [m for m in order if m in wanted]
        for round_ in range(args.repeat):
            for method in order:
                res = run_worker(method, args, scratch)
                print(f"[round {round_}] {method}: {res['seconds']:.2f} s, peak extra "
                      f"{res['peak_extra_bytes'] / 2**20:.0f} MiB, load {res['loadavg'][0]:.1f}",
                      flush=True)
                if method not in results or res["seconds"] < results[method]["seconds"]:
                    results[method] = res
        if not args.methods or "per_row" in args.methods.split(","):
            res = run_worker("per_row", args, scratch)
            print(f"per_row: {res['measured_seconds']:.2f} s for {res['measured_queries']} "
                  f"queries, extrapolated {res['extrapolated_seconds']:.1f} s", flush=True)
            results["per_row"] = res
        if args.methods:  # exploratory run: no report files
            return
        agreement = check_agreement(results, Path(scratch))
    timed = [results[m]["seconds"] for m in ("matmul_full", "matmul_chunked")
             if "seconds" in results.get(m, {})]
    floor = min(timed)
    engine = results["engine"]["seconds"]
    notes = (
        "Bare product = the faster of `matmul_full` / `matmul_chunked`. `per_row` times "
        f"{results['per_row']['measured_queries'][0]} image and "
        f"{results['per_row']['measured_queries'][1]} caption queries and extrapolates "
        "linearly to all queries. `full_matrix` reports recall only (as CLIP_benchmark). "
        "Each method runs in a fresh process; the fastest of "
        f"{args.repeat} round(s) is kept. Absolute times vary by tens of percent between "
        "runs on small shared machines; `load` is the 1-minute load average when the kept "
        "round of the method ended (above the core count, other jobs shared the cores)."
    )
    report = {
        "scale": args.scale,
        "images": n_images,
        "captions": n_texts,
        "dim": DIM,
        "threads": args.threads,
        "chunk_size": args.chunk_size,
        "machine": machine(),
        "command": f"python tools/bench/bench_ranking.py --scale {args.scale}"
                   + (f" --repeat {args.repeat}" if args.repeat != 1 else ""),
        "methods": results,
        "bare_product_seconds": floor,
        "ratios": {
            "engine_over_bare_product": engine / floor,
            "per_row_over_engine": results["per_row"]["extrapolated_seconds"] / engine,
            **({"full_matrix_over_engine": results["full_matrix"]["seconds"] / engine}
               if "seconds" in results.get("full_matrix", {}) else {}),
        },
        "agreement": agreement,
        "notes": notes,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"ranking_{args.scale}.json"
    out.write_text(json.dumps(report, indent=2))
    write_doc(report)
    print(json.dumps(report["ratios"], indent=2))
    print(f"wrote {out} and {DOC}")


if __name__ == "__main__":
    main()

"""FDI (RFD) of many runs at once: ``mmret-fdi ROOT [ROOT ...]`` (docs/methods.md §10).

Every folder under the roots that holds a ``train_alignment_and_uniformity`` and an
``eval_alignment_and_uniformity`` log (mmret's own ``.csv`` files, written by the
``text_pair`` task's probe callback, or the reference's extension-less CSVs) is one run:

    RFD_x = mean over probes with step ≥ min_step of [ℓ_x(held-out train) − ℓ_x(eval)]

for x ∈ {alignment, uniformity}, beside the run's companion score: the mean of the top-k
STS-B dev values over checkpoints (the reference's ``metrics`` CSV, column ``stsb``; or
mmret's ``metrics.jsonl``, key ``stsb_dev_spearman``), when the run has one.

Runs are grouped by their parent folder (the reference's training domain, ``wiki`` / ``nli``;
an mmret experiment); per group with ≥ 3 scored runs the Spearman correlation of each RFD
with the score tests the AAAI 2024 claim (a higher RFD, a more complex training pattern,
goes with better supervised-like behaviour). Output: ``fdi.json``, ``fdi.md`` (the table)
and ``fdi.png`` (RFD vs score per group) in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmret.metrics.embedding import EVAL_LOG, TRAIN_LOG, collect_rfd_dir, top_k_mean
from mmret.metrics.sts import spearman

JSONL_SCORE = "stsb_dev_spearman"


def find_runs(roots: Sequence[str | Path]) -> list[Path]:
    """Folders under ``roots`` (themselves included) holding both probe logs, sorted."""
    runs: set[Path] = set()
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"mmret-fdi: {root} is not a folder")
        for log in root.rglob(f"{TRAIN_LOG}*"):
            folder = log.parent
            if log.is_file() and any(p.is_file() for p in folder.glob(f"{EVAL_LOG}*")):
                runs.add(folder)
    return sorted(runs)


def companion_score(run: Path, top_k: int = 5) -> float | None:
    """Mean of the ``top_k`` best STS-B dev values of ``run`` (None without a score log)."""
    if (run / "metrics").is_file():
        return top_k_mean(run / "metrics", column="stsb", k=top_k)
    jsonl = run / "metrics.jsonl"
    if jsonl.is_file():
        values = sorted((float(r[JSONL_SCORE]) for r in map(json.loads, jsonl.read_text(
            encoding="utf-8").splitlines()) if JSONL_SCORE in r), reverse=True)
        return sum(values[:top_k]) / len(values[:top_k]) if values else None
    return None


def fdi_table(roots: Sequence[str | Path], min_step: int = 125,
              top_k: int = 5) -> list[dict[str, Any]]:
    """One row per run: ``group``, ``run``, ``path``, ``rfd_alignment``,
    ``rfd_uniformity``, ``steps`` (the probes averaged) and ``score`` (or None)."""
    runs = find_runs(roots)
    if not runs:
        raise FileNotFoundError(
            f"mmret-fdi: no folder under {[str(r) for r in roots]} holds both "
            f"{TRAIN_LOG} and {EVAL_LOG} logs")
    rows = []
    for run in runs:
        rfd = collect_rfd_dir(run, min_step)
        rows.append({"group": run.parent.name, "run": run.name, "path": str(run),
                     "rfd_alignment": rfd["rfd_alignment"],
                     "rfd_uniformity": rfd["rfd_uniformity"], "steps": rfd["steps"],
                     "score": companion_score(run, top_k)})
    return rows


def group_correlations(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per group with ≥ 3 scored runs: Spearman ρ of RFD_align / RFD_unif with the score."""
    out = {}
    for group in sorted({r["group"] for r in rows}):
        scored = [r for r in rows if r["group"] == group and r["score"] is not None]
        if len(scored) >= 3:
            score = [r["score"] for r in scored]
            out[group] = {"n": len(scored),
                          "rho_alignment": spearman([r["rfd_alignment"] for r in scored], score),
                          "rho_uniformity": spearman([r["rfd_uniformity"] for r in scored], score)}
    return out


def markdown(rows: list[dict[str, Any]], correlations: dict[str, dict[str, float]],
             top_k: int) -> str:
    lines = [f"| group | run | RFD_align | RFD_unif | top-{top_k} STS-B dev | probes |",
             "|---|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["group"], r["rfd_alignment"])):
        score = "–" if r["score"] is None else f"{r['score']:.4g}"
        lines.append(f"| {r['group']} | {r['run']} | {r['rfd_alignment']:+.4f} | "
                     f"{r['rfd_uniformity']:+.4f} | {score} | {len(r['steps'])} |")
    for group, c in correlations.items():
        lines.append(f"\n{group}: Spearman ρ(RFD_align, score) {c['rho_alignment']:+.2f}, "
                     f"ρ(RFD_unif, score) {c['rho_uniformity']:+.2f} over {c['n']} runs.")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Scatter of each RFD against the score, one colour per group (scored runs only)."""
    scored = [r for r in rows if r["score"] is not None]
    if not scored:
        return None
    from mmret.extras import require

    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, label in zip(axes, ("rfd_alignment", "rfd_uniformity"),
                              ("RFD_align", "RFD_unif"), strict=True):
        for group in sorted({r["group"] for r in scored}):
            pts = [r for r in scored if r["group"] == group]
            ax.scatter([r[key] for r in pts], [r["score"] for r in pts], label=group)
            for r in pts:
                ax.annotate(r["run"], (r[key], r["score"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
        ax.set_xlabel(label)
        ax.set_ylabel("top-k STS-B dev")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="mmret-fdi", description="FDI (RFD) of every run under the given folders")
    parser.add_argument("roots", nargs="+", help="folders holding run folders (or runs)")
    parser.add_argument("--min-step", type=int, default=125,
                        help="average the probes with step >= this (the reference: 125)")
    parser.add_argument("--top-k", type=int, default=5, help="companion score: top-k mean")
    parser.add_argument("--out", type=Path, default=Path("fdi"), help="output folder")
    args = parser.parse_args(argv)
    rows = fdi_table(args.roots, args.min_step, args.top_k)
    correlations = group_correlations(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
              for k, v in r.items()} for r in rows]
    (args.out / "fdi.json").write_text(json.dumps(
        {"min_step": args.min_step, "top_k": args.top_k, "runs": clean,
         "correlations": correlations}, indent=2))
    table = markdown(rows, correlations, args.top_k)
    (args.out / "fdi.md").write_text(table)
    figure = plot(rows, args.out / "fdi.png")
    print(table)
    print(f"wrote {args.out / 'fdi.json'}, {args.out / 'fdi.md'}"
          + (f", {figure}" if figure else ""))


if __name__ == "__main__":
    main()

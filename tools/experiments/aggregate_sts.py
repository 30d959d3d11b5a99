"""Aggregate the sentence-embedding comparison (tools/experiments/run_sts.py) into the
``sts`` section of docs/results.md: per setting and loss, the untrained model's and each
run's STS Spearman (mean ± spread over seeds), the FDI (RFD) of each run, wall times, and
the correlation of FDI with the score across runs.

    python tools/experiments/aggregate_sts.py [--out outputs/sts]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
from doc_sections import write_section  # noqa: E402

from mmret.metrics.sts import pearson, spearman  # noqa: E402

EXPERIMENTS = ["sts_infonce", "sts_arccon", "sts_mpt", "sts_met",
               "sts_mhe", "sts_mhe_gdwr", "sts_mhs", "sts_mhs_gdwr",
               "sts_vicreg", "sts_vicreg_gdwr", "sts_barlow", "sts_barlow_gdwr"]
LABELS = {"minilm": "all-MiniLM-L6-v2, STS-B training sentences (unsupervised)",
          "tiny": "mmret-tiny text tower (from scratch), shapes captions (unsupervised)"}


def _mean(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def load_runs(folder: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for info_file in sorted(folder.glob("*/seed*/run_info.json")):
        run = info_file.parent
        info = json.loads(info_file.read_text())
        record = {"seed": run.name, "wall_s": info["wall_s"], "error": info.get("error"),
                  "command": info["command"]}
        metrics_file = run / "metrics.json"
        if metrics_file.is_file():
            (metrics,) = json.loads(metrics_file.read_text()).values()
            record["metrics"] = metrics
        if (run / "rfd.json").is_file():
            record["rfd"] = json.loads((run / "rfd.json").read_text())
        runs.setdefault(run.parent.name, []).append(record)
    return runs


def setting_section(setting: str, folder: Path) -> tuple[list[str], list[tuple]]:
    base = json.loads((folder / "baseline.json").read_text())
    sets = [k[: -len("_spearman")] for k in base if k.endswith("_spearman")
            and k != "spearman" and not k.startswith("sts12_")]
    runs = load_runs(folder)
    order = {name: i for i, name in enumerate(EXPERIMENTS)}
    runs = dict(sorted(runs.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    header = ["loss", *[f"{s} Spearman" for s in sets], "Δ vs untrained", "RFD_align",
              "RFD_unif", "wall s / run"]
    lines = [f"### {LABELS.get(setting, setting)}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             "| untrained | " + " | ".join(f"{base[f'{s}_spearman']:.2f}" for s in sets)
             + " | – | – | – | " + f"{base['wall_s']:.0f} (eval) |"]
    points = []
    for name, records in runs.items():
        done = [r for r in records if "metrics" in r]
        cells = [_mean([r["metrics"][f"{s}_spearman"] for r in done]) for s in sets]
        delta = _mean([statistics.mean(r["metrics"][f"{s}_spearman"] - base[f"{s}_spearman"]
                                       for s in sets) for r in done])
        ra = _mean([r["rfd"]["rfd_alignment"] for r in done if "rfd" in r])
        ru = _mean([r["rfd"]["rfd_uniformity"] for r in done if "rfd" in r])
        wall = statistics.mean(r["wall_s"] for r in records)
        failed = [r["seed"] for r in records if r.get("error")]
        label = name.removeprefix("sts_") + (f" (failed: {', '.join(failed)})" if failed else "")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {delta} | {ra} | {ru} | "
                     f"{wall:.0f} |")
        for r in done:
            if "rfd" in r:
                points.append((name, r["metrics"]["spearman"], r["rfd"]["rfd_alignment"],
                               r["rfd"]["rfd_uniformity"]))
    if "sts12_all_spearman" in base:
        subsets = [k[len("sts12_"):-len("_spearman")] for k in base
                   if k.startswith("sts12_") and k.endswith("_spearman")
                   and k not in ("sts12_all_spearman", "sts12_mean_spearman",
                                 "sts12_wmean_spearman")]
        lines += ["", "Untrained model on STS12 (Spearman ×100; SentEval aggregation "
                  f"all / mean / wmean): {base['sts12_all_spearman']:.2f} / "
                  f"{base['sts12_mean_spearman']:.2f} / {base['sts12_wmean_spearman']:.2f}; "
                  "per subset " + ", ".join(f"{s} {base[f'sts12_{s}_spearman']:.2f}"
                                            for s in subsets) + "."]
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    total = sum(r["wall_s"] for rs in runs.values() for r in rs) + base["wall_s"]
    lines += ["", f"{sum(len(r) for r in runs.values())} runs ({', '.join(seeds)}), "
              f"{total / 60:.1f} min of run wall time in all. Spearman ×100 of the final model; "
              "mean ± standard deviation over seeds; Δ = mean over the sets of the change in "
              "Spearman; RFD = FDI (train − eval, probes after step 0)."]
    if len(points) >= 3:
        score = [p[1] for p in points]
        lines.append(
            f"Across the {len(points)} runs: Spearman correlation of the score with RFD_align "
            f"{spearman([p[2] for p in points], score):+.2f}, with RFD_unif "
            f"{spearman([p[3] for p in points], score):+.2f} (Pearson "
            f"{pearson([p[2] for p in points], score):+.2f} / "
            f"{pearson([p[3] for p in points], score):+.2f}).")
    example = next((r["command"] for rs in runs.values() for r in rs), "")
    lines += ["", f"Example run: `{example}`", ""]
    return lines, points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "sts")
    parser.add_argument("--discussion", type=Path,
                        default=ROOT / "tools" / "experiments" / "sts_discussion.md")
    args = parser.parse_args()
    body = ["## Sentence embeddings: contrastive vs non-contrastive losses, FDI (issue #12)", "",
            "Commands: `tools/experiments/run_sts.sh` (= `python tools/experiments/run_sts.py "
            "tiny|minilm --seeds 0 1`, strictly sequential, then this aggregation: "
            "`python tools/experiments/aggregate_sts.py`). Budgets: "
            "`tools/experiments/run_sts.py::SETTINGS`, identical for every loss.", "",
            f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU "
            f"cores, no GPU; Python {platform.python_version()}, torch {torch.__version__}; "
            "wall times per run include start-up, probes and the final evaluation.", ""]
    for setting in ("tiny", "minilm"):
        folder = args.out / setting
        if (folder / "baseline.json").is_file():
            lines, _ = setting_section(setting, folder)
            body += lines
    reference_logs = ROOT.parent / "shared" / "data" / "ngcse_rfd"
    if reference_logs.is_dir():
        from mmret.analysis.fdi import fdi_table, group_correlations, markdown

        rows = fdi_table([reference_logs])
        body += ["### FDI (RFD) of the reference's own training logs (AAAI 2024)", "",
                 "`mmret-fdi ../shared/data/ngcse_rfd --out outputs/fdi_ngcse` (the shipped "
                 "per-checkpoint alignment/uniformity logs of BERT-base trained on each data "
                 "pattern, probes at steps ≥ 125; score = mean of the top-5 STS-B dev "
                 "Spearman over checkpoints, from the same runs' `metrics`):", "",
                 markdown(rows, group_correlations(rows), 5).rstrip(), ""]
    if args.discussion.is_file():
        body += [args.discussion.read_text().rstrip(), ""]
    write_section("sts", "\n".join(body), doc=ROOT / "docs" / "results.md", tag="results",
                  title="# Results")
    print("\n".join(body))


if __name__ == "__main__":
    main()

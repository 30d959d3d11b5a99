"""Aggregate the composed-retrieval runs of tools/experiments/run_cir.sh into the
``<!-- results:cir -->`` section of docs/results.md (other sections are kept).

    python tools/experiments/aggregate_cir.py --out outputs/cir [--doc docs/results.md]

Reads ``<out>/stage1`` and ``<out>/<experiment>/seed*/`` (``metrics.json``, ``run_info.json``,
``config.yaml``) and writes one table: CIRR-protocol and FashionIQ-protocol metrics on the
shapes test split, mean ± sample standard deviation over seeds (± range when only two),
wall time, and the exact commands. The discussion below the table is kept when rewritten
(it is read from ``<out>/discussion.md`` when that file exists).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
from doc_sections import write_section  # noqa: E402

EXPERIMENTS = ("cir_stage1", "cir_stage2_inbatch", "cir_stage2_bank", "cir_stage2_bank_generated")
LABELS = {
    "cir_stage1": "stage 1 (in-batch, end to end)",
    "cir_stage2_inbatch": "stage 2, in-batch negatives (control)",
    "cir_stage2_bank": "stage 2, static bank",
    "cir_stage2_bank_generated": "stage 2, static bank + generated triplets",
}
COLUMNS = (("cirr/R@1", "CIRR R@1"), ("cirr/R@5", "R@5"), ("cirr/R@10", "R@10"),
           ("cirr/R@50", "R@50"), ("cirr/R_subset@1", "R_s@1"), ("cirr/avg", "CIRR Avg"),
           ("fashioniq/avg/R@10", "FIQ R@10"), ("fashioniq/avg/R@50", "FIQ R@50"),
           ("fashioniq/avg", "FIQ Avg"))


def read_run(run_dir: Path) -> dict[str, Any] | None:
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        return None
    (metrics,) = json.loads(metrics_file.read_text()).values()
    info_file = run_dir / "run_info.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    return {"metrics": metrics, "wall_s": info.get("wall_s"), "command": info.get("command"),
            "dir": run_dir}


def runs_of(out: Path, experiment: str) -> list[dict[str, Any]]:
    if experiment == "cir_stage1":
        run = read_run(out / "stage1")
        return [run] if run else []
    folder = out / experiment
    runs = [read_run(p) for p in sorted(folder.glob("seed*"))] if folder.is_dir() else []
    return [r for r in runs if r]


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    if len(values) == 2:
        return f"{mean:.1f} ± {abs(values[0] - values[1]) / 2:.1f}"
    return f"{mean:.1f} ± {statistics.stdev(values):.1f}"


def table(out: Path) -> tuple[str, list[str], dict[str, list[dict[str, Any]]]]:
    header = "| run | seeds | " + " | ".join(c for _, c in COLUMNS) + " | wall s |"
    lines = [header, "|---|---:|" + "---:|" * (len(COLUMNS) + 1)]
    commands: list[str] = []
    found: dict[str, list[dict[str, Any]]] = {}
    for experiment in EXPERIMENTS:
        runs = runs_of(out, experiment)
        if not runs:
            continue
        found[experiment] = runs
        cells = [spread([float(r["metrics"][k]) for r in runs]) for k, _ in COLUMNS]
        walls = [r["wall_s"] for r in runs if r["wall_s"] is not None]
        wall = spread(walls) if walls else "–"
        lines.append(f"| {LABELS[experiment]} | {len(runs)} | " + " | ".join(cells)
                     + f" | {wall} |")
        commands += [r["command"] for r in runs if r["command"]]
    return "\n".join(lines), commands, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/cir")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "results.md"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    body_table, commands, found = table(out)
    if not found:
        print(f"no runs under {out}", file=sys.stderr)
        return 1
    steps = {}
    for experiment, runs in found.items():
        config = (runs[0]["dir"] / "config.yaml").read_text()
        step_line = next((ln for ln in config.splitlines() if ln.strip().startswith("max_steps")),
                         "")
        batch_line = next((ln for ln in config.splitlines()
                           if ln.strip().startswith("batch_size")), "")
        steps[experiment] = f"{step_line.split(':')[-1].strip()} steps × batch " \
                            f"{batch_line.split(':')[-1].strip()}"
    sizes = "; ".join(f"{LABELS[e]}: {s}" for e, s in steps.items())
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs"
    parts = [
        "## Composed image retrieval: static negative bank and generated positives",
        "",
        "mmret-tiny on the synthetic shapes benchmark (CIRR-format training triplets, 4000; "
        "bank = the 8000 training images), evaluated on the test split with the `cir` "
        "protocol: CIRR protocol (R@K over the 1000-image test gallery minus the reference, "
        "R_subset@1 over the query's img_set, Avg = (R@5 + R_subset@1) / 2) and FashionIQ "
        "protocol (R@10/R@50 averaged over the three categories, gallery = every image of the "
        "category's split; Avg = (R@10 + R@50) / 2). Percent; mean ± sample std over seeds. "
        f"Sizes: {sizes}. Every stage-2 run starts from the one stage-1 run (seed 0, trained "
        "once, reused), freezes the image tower and reads bank features. Machine: "
        f"{machine}.",
        "",
        body_table,
        "",
        "Commands (run one after another by `tools/experiments/run_cir.sh`; aggregated by "
        "`python tools/experiments/aggregate_cir.py`):",
        "",
        "```",
        *commands,
        "```",
    ]
    discussion = out / "discussion.md"
    if discussion.is_file():
        parts += ["", discussion.read_text().rstrip()]
    write_section("cir", "\n".join(parts), doc=Path(args.doc), tag="results", title="# Results")
    print(body_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Summary table of the merging experiment (``tools/merge_experiment.sh``).

``python -m mmret.merging.summary outputs/merge_exp`` reads every
``eval/<model>/<data>/metrics.json`` (mmret-eval's) and the costs (training runs'
``metrics.jsonl``: steps × batch size; merges' ``merge.json``: wall time, probe samples) and
prints a Markdown table: STS-B test Spearman (task A), shapes graded-pairs Spearman (task B),
STS12 mean Spearman (task C), their mean, samples seen and wall time (2-core shared CPU);
plus ``summary.json`` beside it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

COLUMNS = {"merge_stsb_pairs": ("A: STS-B test", "stsb_test_spearman"),
           "merge_shapes_pairs": ("B: shapes pairs", "shapes_test_spearman"),
           "merge_sts12": ("C: STS12 mean", "sts12_mean_spearman")}


def _scores(out: Path, name: str) -> dict[str, float]:
    scores = {}
    for data, (label, key) in COLUMNS.items():
        file = out / "eval" / name / data / "metrics.json"
        if file.is_file():
            metrics = next(iter(json.loads(file.read_text()).values()))
            scores[label] = float(metrics[key])
    return scores


def wall_times(out: Path) -> dict[str, float]:
    """``name -> seconds`` from the ``train|merge <name>: <s> s wall`` lines of the scripts' logs."""
    found = {}
    for log in sorted(out.glob("*.log")):
        for m in re.finditer(r"(?:train|merge) (\S+): ([0-9.]+) s wall", log.read_text()):
            found[m.group(1)] = float(m.group(2))
    return found


def _training_samples(run: Path) -> int | None:
    config = run / "config.yaml"
    if not config.is_file():
        return None
    import yaml

    cfg = yaml.safe_load(config.read_text())
    return int(cfg["trainer"]["max_steps"]) * int(cfg["trainer"]["batch_size"])


TASK_COLUMNS = {"stsb_pairs": "A: STS-B test", "shapes_pairs": "B: shapes pairs",
                "sts_unsup": "C: STS12 mean"}


def _sweep_scores(out: Path, name: str, merged: bool) -> dict[str, float]:
    """Scores from a merge report's sweep (each task on its own run's evaluation, the
    same data as the columns): the merged point, or the base (x = 0)."""
    file = out / name / "merge.json"
    if not file.is_file():
        return {}
    sweep = json.loads(file.read_text()).get("sweep") or []
    rows = [r for r in sweep if (r["merged"] if merged else r["g"] == 0.0)]
    if not rows:
        return {}
    return {TASK_COLUMNS[t]: v for t, v in rows[0]["scores"].items() if t in TASK_COLUMNS}


def summarize(out: str | Path) -> dict[str, Any]:
    out = Path(out)
    walls = wall_times(out)
    rows = []
    names = {f.name for f in (out / "eval").iterdir()} if (out / "eval").is_dir() else set()
    names |= {f.parent.name for f in out.glob("m_*/merge.json")}
    for name in sorted(names):
        scores = {**_sweep_scores(out, name, merged=True), **_scores(out, name)}
        row: dict[str, Any] = {"model": name, "scores": scores}
        row["wall_s"] = walls.get(name)
        merge_json = out / name / "merge.json"
        if merge_json.is_file():
            record = json.loads(merge_json.read_text())
            row["kind"] = "merge"
            probe = record["coefficients"].get("probe") if isinstance(
                record["coefficients"], dict) else None
            steps = record["coefficients"].get("steps") if probe else None
            row["samples"] = (sum(min(s, 16) for s in probe["sizes"]) * steps) if probe else 0
            row["probe_size"] = sum(probe["sizes"]) if probe else None
            row["coefficients"] = {k: v for k, v in record["coefficients"].items()
                                   if k in ("a", "lambda", "effective_coefficients", "scale",
                                            "density", "weights")}
        else:
            row["kind"] = "training"
            row["samples"] = _training_samples(out / name)
        rows.append(row)
    base = {k: v for name in sorted(names) for k, v in _sweep_scores(out, name, False).items()}
    existing = [r for r in rows if r["model"] == "base"]
    if existing:
        existing[0]["scores"] = {**base, **existing[0]["scores"]}
    elif base:
        rows.insert(0, {"model": "base", "scores": base, "kind": "base", "samples": 0,
                        "wall_s": None})
    return {"rows": rows}


def markdown(summary: dict[str, Any]) -> str:
    labels = [label for label, _ in COLUMNS.values()]
    lines = ["| model | " + " | ".join(labels) + " | mean | samples | wall s |",
             "|---|" + "---:|" * (len(labels) + 3)]
    for row in summary["rows"]:
        values = [row["scores"].get(label) for label in labels]
        known = [v for v in values if v is not None]
        mean = sum(known) / len(known) if len(known) == len(labels) else None
        cells = [f"{v:.2f}" if v is not None else "-" for v in values]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " | " +
                     (f"{mean:.2f}" if mean is not None else "-") + " | " +
                     (f"{row['samples']}" if row.get("samples") is not None else "-") + " | " +
                     (f"{row['wall_s']:.0f}" if row.get("wall_s") else "-") + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mmret.merging.summary <experiment folder>", file=sys.stderr)
        return 2
    summary = summarize(args[0])
    (Path(args[0]) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

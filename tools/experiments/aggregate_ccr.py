"""Aggregate the cross-lingual retrieval runs of ``tools/experiments/run_ccr.sh`` into
``docs/results.md``.

Reads ``outputs/ccr/<experiment>/seed<k>/{metrics.json, config.yaml, run_info.json}`` and
rewrites the section between ``<!-- results:ccr -->`` and ``<!-- end results:ccr -->`` of
``docs/results.md`` (the rest of the page, e.g. the discussion, is kept). Every number is
``mean ± spread`` over seeds, spread = half the range (max − min) / 2, which for two seeds
is |a − b| / 2 (also their population standard deviation).

    python tools/experiments/aggregate_ccr.py [--runs outputs/ccr] [--doc docs/results.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from doc_sections import write_section  # noqa: E402  (tools/bench/doc_sections.py)

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ("ccr_one_to_k", "ccr_one_to_one", "ccr_english_only", "ccr_one_to_one_matched")
LABELS = {
    "ccr_one_to_k": "1-to-K (one_to_k, 6 languages per image)",
    "ccr_one_to_one": "1-to-1 (CLIP, random language per image and step)",
    "ccr_english_only": "English only (CLIP, English captions)",
    "ccr_one_to_one_matched": "1-to-1, K× steps (as many caption encodings as 1-to-K)",
}
DIRECTIONS = {"image_to_text": "image → text", "text_to_image": "text → image"}
SECTION = "ccr"


def load_run(run_dir: Path) -> dict[str, Any]:
    """One run: its cross-lingual result, config and run info."""
    results = json.loads((run_dir / "metrics.json").read_text())
    cross = [(name, m) for name, m in results.items() if "per_language" in m]
    if len(cross) != 1:
        raise ValueError(f"{run_dir / 'metrics.json'}: expected one cross-lingual result, "
                         f"found {[n for n, _ in cross]}")
    name, metrics = cross[0]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    info_path = run_dir / "run_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    english = [m for n, m in results.items() if "per_language" not in m]
    return {"name": name, "metrics": metrics, "config": config, "info": info,
            "english_test": english[0] if english else None, "dir": run_dir}


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half the range of ``values``."""
    return statistics.fmean(values), (max(values) - min(values)) / 2


def fmt(values: Sequence[float], digits: int = 1) -> str:
    mean, spread = mean_spread(values)
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def collect(runs_root: Path) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for experiment in EXPERIMENTS:
        seeds = sorted((runs_root / experiment).glob("seed*/metrics.json"))
        if seeds:
            runs[experiment] = [load_run(p.parent) for p in seeds]
    if not runs:
        raise SystemExit(f"no runs under {runs_root} (run tools/experiments/run_ccr.sh first)")
    return runs


def recall_table(runs: dict[str, list[dict[str, Any]]], direction: str,
                 languages: list[str]) -> list[str]:
    mrv_key = f"mrv_std_{direction}"
    header = ["setting"] + languages + ["average", "MRV (std) ↓"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for experiment, seeds in runs.items():
        cells = [LABELS.get(experiment, experiment)]
        for lang in languages:
            cells.append(fmt([s["metrics"]["per_language"][lang][f"{direction}_R@1"]
                              for s in seeds]))
        cells.append(fmt([s["metrics"][f"{direction}_R@1"] for s in seeds]))
        cells.append(fmt([s["metrics"][mrv_key] for s in seeds], 2))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    keys = [f"{d}_R@{k}" for d in DIRECTIONS for k in (1, 5, 10)]
    header = ["setting", "evaluated as", "seeds", "steps"] + [
        ("i→t" if k.startswith("image") else "t→i") + " R@" + k.rsplit("@", 1)[1] for k in keys
    ] + ["mean recall", "MRV i→t ↓", "MRV t→i ↓"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|---:|" + "---:|" * (len(header) - 4)]
    for experiment, seeds in runs.items():
        cells = [LABELS.get(experiment, experiment), seeds[0]["metrics"].get("setting", "–"),
                 str(len(seeds)), str(seeds[0]["config"]["trainer"]["max_steps"])]
        cells += [fmt([s["metrics"][k] for s in seeds]) for k in keys]
        cells.append(fmt([s["metrics"]["mean_recall"] for s in seeds]))
        cells += [fmt([s["metrics"][f"mrv_std_{d}"] for s in seeds], 2) for d in DIRECTIONS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def protocol(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    first = next(iter(runs.values()))[0]
    cfg = first["config"]
    trainer, data, model = cfg["trainer"], cfg["data"], cfg["model"]
    steps = {r["config"]["trainer"]["max_steps"] for seeds in runs.values() for r in seeds}
    batches = {r["config"]["trainer"]["batch_size"] for seeds in runs.values() for r in seeds}
    import torch

    threads = trainer.get("num_threads") or "torch default"
    overrides = {k: v for k, v in model.items() if k in ("vision", "text")}
    if "train" in data:  # mmret >= 0.2: the training source's options under data.train
        train = data["train"]
        languages, source, split = train["languages"], train["source"], train["split"]
    else:  # runs of mmret < 0.2
        languages = data["train_languages"]
        source, split = data["train_source"]["root"], data["train_source"]["split"]
    return [
        f"- Machine: {cpu_name()}, {os.cpu_count()} cores ({platform.system()} "
        f"{platform.machine()}), Python {platform.python_version()}, torch {torch.__version__}, "
        f"{threads} torch threads, no GPU; the cores were shared with other jobs at times, "
        "so wall times are indicative.",
        f"- Model: `{model['name']}` from scratch with overrides `{overrides}`; "
        f"trainer `{trainer['max_steps']}` steps (all runs: {sorted(steps)}), "
        f"batch of {sorted(batches)} images per step (1-to-K: × "
        f"{len(languages)} captions), lr {trainer['lr']}, warm-up "
        f"{trainer['warmup_steps']}, cosine decay, AdamW wd {trainer['weight_decay']}.",
        f"- Training data: `{data['root']}` IGLUE-style `{source}/"
        f"{{lang}}/{split}.jsonl` (8,000 images × 5 parallel captions "
        "per language); evaluation: the test split "
        f"({first['metrics'].get('languages')}, 1,000 images, 5,000 captions per language), "
        "each language its own gallery; MRV = mean over instances of the population std of "
        "the gold rank across the languages (METHODS.md §4).",
    ]


def runs_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["| run | command | wall time (s) |", "|---|---|---:|"]
    for seeds in runs.values():
        for run in seeds:
            info = run["info"]
            wall = f"{info['wall_s']:.0f}" if "wall_s" in info else "–"
            command = info.get("command", "–")
            where = run["dir"]
            where = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where
            lines.append(f"| `{where}` | `{command}` | {wall} |")
    return lines


def render(runs: dict[str, list[dict[str, Any]]]) -> str:
    languages = list(next(iter(runs.values()))[0]["metrics"]["languages"])
    body = [
        "## Cross-lingual cross-modal retrieval: 1-to-K vs 1-to-1 vs English-only",
        "",
        "Generated by `tools/experiments/aggregate_ccr.py` from the runs of "
        "`tools/experiments/run_ccr.sh` (`mmret/conf/experiment/ccr_*.yaml`). Values: "
        "mean ± spread over the seeds, spread = half the range (|seed0 − seed1| / 2 for two "
        "seeds). R@K in %, MRV in ranks (lower = more consistent across languages).",
        "",
        *protocol(runs),
        "",
    ]
    for direction, title in DIRECTIONS.items():
        body += [f"### R@1, {title}, per language", "", *recall_table(runs, direction, languages),
                 ""]
    body += ["### Average over languages", "", *summary_table(runs), "", "### Runs", "",
             *runs_table(runs), ""]
    return "\n".join(body)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "outputs" / "ccr")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args(argv)
    runs = collect(args.runs.resolve())
    body = render(runs)
    write_section(SECTION, body, doc=args.doc, tag="results", title="# Results")
    print(body)
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()

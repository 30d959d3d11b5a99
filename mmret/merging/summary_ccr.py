"""Summary table of merging experiment 2 (``tools/merge_experiment_ccr.sh``): per-language
mmret-tiny models merged vs 1-to-K joint training, cross-lingual retrieval on the shapes
benchmark.

``python -m mmret.merging.summary_ccr outputs/merge_ccr [outputs/merge_ccr_s1 ...]`` reads,
in each folder (one per training seed), every run's cross-lingual test from its
``metrics.json`` (training runs: ``<run>/metrics.json``; merges: ``eval_<merge>/metrics.json``,
mmret-eval's), the image–caption pairs and images each run saw (``config.yaml``: steps ×
batch, × K captions when the training data's mode is ``one_to_k``) and the wall times the script logged; prints a Markdown table
(R@1 image→text per language, the averages of both directions, MRV, samples, wall time; the
mean over the folders, ± half the range when there are two or more) and writes
``summary_ccr.json`` into the first folder.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from mmret.merging.summary import wall_times
from mmret.retrieval.datasets.base import write_text_atomic

LANGUAGES = ("en", "de", "fr", "cs", "zh", "ja")
ORDER = ("stage0", *(f"lang_{lang}" for lang in LANGUAGES), "one_to_k", "m_average",
         "m_task_arithmetic", "m_ties", "m_slerp", "m_self_positioning")


def _cross_lingual(file: Path) -> dict[str, Any] | None:
    """The cross-lingual entry of a metrics.json (the one with ``per_language``)."""
    if not file.is_file():
        return None
    entries = [v for v in json.loads(file.read_text()).values()
               if isinstance(v, dict) and "per_language" in v]
    if len(entries) != 1:
        raise ValueError(f"{file}: expected one cross-lingual entry (with 'per_language'), "
                         f"found {len(entries)}")
    return entries[0]


def _samples(run: Path) -> tuple[int, int] | None:
    """(image–caption pairs, images) a training run saw: steps × batch (× K for 1-to-K)."""
    config = run / "config.yaml"
    if not config.is_file():
        return None
    import yaml

    cfg = yaml.safe_load(config.read_text())
    images = int(cfg["trainer"]["max_steps"]) * int(cfg["trainer"]["batch_size"])
    train = cfg["data"]["train"]
    k = len(train["languages"]) if train.get("mode") == "one_to_k" else 1
    return images * k, images


def folder_rows(out: str | Path) -> dict[str, dict[str, Any]]:
    """One seed's folder: model name -> scores, samples and wall time."""
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"summary_ccr: {out} is not a folder")
    walls = wall_times(out)
    rows: dict[str, dict[str, Any]] = {}
    for name in ORDER:
        merged = name.startswith("m_")
        entry = _cross_lingual(out / (f"eval_{name}" if merged else name) / "metrics.json")
        if entry is None:
            continue
        row: dict[str, Any] = {
            "i2t_R@1": {lang: float(entry["per_language"][lang]["image_to_text_R@1"])
                        for lang in LANGUAGES if lang in entry["per_language"]},
            "avg_i2t_R@1": float(entry["image_to_text_R@1"]),
            "avg_t2i_R@1": float(entry["text_to_image_R@1"]),
            "mrv_i2t": entry.get("mrv_std_image_to_text"),
            "mrv_t2i": entry.get("mrv_std_text_to_image"),
            "wall_s": walls.get(name),
        }
        seen = None if merged else _samples(out / name)
        row["pairs"], row["images"] = seen if seen else (0, 0)
        rows[name] = row
    return rows


def summarize(folders: list[str | Path]) -> dict[str, Any]:
    per_seed = [folder_rows(f) for f in folders]
    names = [n for n in ORDER if any(n in rows for rows in per_seed)]
    table = []
    for name in names:
        found = [rows[name] for rows in per_seed if name in rows]

        def agg(values: list[float | None]) -> dict[str, float] | None:
            known = [float(v) for v in values if v is not None]
            if not known:
                return None
            spread = (max(known) - min(known)) / 2 if len(known) > 1 else None
            return {"mean": statistics.fmean(known), "half_range": spread, "n": len(known)}

        row = {"model": name, "seeds": len(found)}
        for key in ("avg_i2t_R@1", "avg_t2i_R@1", "mrv_i2t", "mrv_t2i", "wall_s"):
            row[key] = agg([r[key] for r in found])
        row["i2t_R@1"] = {lang: agg([r["i2t_R@1"].get(lang) for r in found])
                          for lang in LANGUAGES}
        row["pairs"], row["images"] = found[0]["pairs"], found[0]["images"]
        table.append(row)
    return {"folders": [str(f) for f in folders], "rows": table}


def _cell(value: dict[str, float] | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    text = f"{value['mean']:.{digits}f}"
    return text + (f" ± {value['half_range']:.{digits}f}" if value["half_range"] is not None
                   else "")


def markdown(summary: dict[str, Any]) -> str:
    head = ["model", *(f"i→t R@1 {lang}" for lang in LANGUAGES), "avg i→t R@1",
            "avg t→i R@1", "MRV i→t ↓", "MRV t→i ↓", "pairs", "images", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for row in summary["rows"]:
        cells = [row["model"], *(_cell(row["i2t_R@1"][lang]) for lang in LANGUAGES),
                 _cell(row["avg_i2t_R@1"]), _cell(row["avg_t2i_R@1"]),
                 _cell(row["mrv_i2t"], 2), _cell(row["mrv_t2i"], 2),
                 str(row["pairs"]), str(row["images"]), _cell(row["wall_s"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = len(summary["folders"])
    lines.append(f"\n{seeds} training seed(s); ± is half the range over seeds.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m mmret.merging.summary_ccr <folder> [<folder of another seed> ...]",
              file=sys.stderr)
        return 2
    summary = summarize(args)
    write_text_atomic(Path(args[0]) / "summary_ccr.json", json.dumps(summary, indent=2))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Aggregate the CUSA runs of ``tools/experiments/run_itr.sh`` into ``docs/results.md``.

Reads ``outputs/itr/<experiment>/seed<k>/{metrics.json, run_info.json}`` and rewrites the
section between ``<!-- results:cusa -->`` and ``<!-- end results:cusa -->`` of
``docs/results.md`` (other sections and the discussion outside the markers are kept). Every
number is ``mean ± spread`` over seeds, spread = half the range (max − min) / 2.

    python tools/experiments/aggregate_itr.py [--runs outputs/itr] [--doc docs/results.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from doc_sections import write_section  # noqa: E402  (tools/bench/doc_sections.py)

ROOT = Path(__file__).resolve().parents[2]
ITR = {
    "itr_contrastive": "contrastive only (baseline)",
    "itr_csa": "contrastive + CSA",
    "itr_usa": "contrastive + USA",
    "itr_cusa": "contrastive + CSA + USA (CUSA)",
}
CCR = {
    "ccr_one_to_k": "one_to_k alone",
    "ccr_one_to_k_csa": "one_to_k + CSA",
}
RECALLS = [f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)]
UNI = ["text_to_text_R@1", "text_to_text_mAP", "image_to_image_R@1", "image_to_image_mAP"]
SECTION = "cusa"


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (max(values) - min(values)) / 2


def fmt(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "—"
    mean, spread = mean_spread(values)
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def load_run(run_dir: Path) -> dict[str, Any]:
    results = json.loads((run_dir / "metrics.json").read_text())
    by_protocol = {m.get("protocol"): m for m in results.values()}
    info_path = run_dir / "run_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return {"by_protocol": by_protocol, "info": info, "dir": run_dir}


def collect(root: Path, names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    runs = {}
    for name in names:
        found = sorted((root / name).glob("seed*/metrics.json"))
        if found:
            runs[name] = [load_run(p.parent) for p in found]
    return runs


def values(runs: list[dict[str, Any]], protocol: str, key: str) -> list[float]:
    out = []
    for run in runs:
        metrics = run["by_protocol"].get(protocol) or {}
        if key in metrics:
            out.append(float(metrics[key]))
    return out


def wall(runs: list[dict[str, Any]]) -> str:
    times = [r["info"]["wall_s"] for r in runs if "wall_s" in r["info"]]
    return fmt(times, 0) + " s" if times else "—"


def itr_tables(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    head = ("| objective | seeds | " + " | ".join(k.replace("image_to_text", "i→t")
                                                 .replace("text_to_image", "t→i")
                                                 for k in RECALLS) + " | RSUM | wall |")
    lines = [head, "|" + "---|" * (len(RECALLS) + 4)]
    for name, label in ITR.items():
        if name not in runs:
            continue
        rs = runs[name]
        cells = [fmt(values(rs, "image_text", k)) for k in RECALLS]
        lines.append(f"| {label} (`{name}`) | {len(rs)} | " + " | ".join(cells)
                     + f" | {fmt(values(rs, 'image_text', 'rsum'))} | {wall(rs)} |")
    lines += ["", "Uni-modal retrieval (shapes test; `unimodal` protocol: text→text = the other "
              "captions of the same image, image→image = the one-edit group). Features: the "
              "uni-modal heads where USA trained them (`itr_usa`, `itr_cusa`), else the "
              "cross-modal heads; the `cross_` columns use the cross heads for every model.", ""]
    cols = UNI + ["cross_text_to_text_mAP", "cross_image_to_image_mAP"]
    lines.append("| objective | " + " | ".join(c.replace("text_to_text", "t→t")
                                                .replace("image_to_image", "i→i") for c in cols)
                 + " |")
    lines.append("|" + "---|" * (len(cols) + 1))
    for name, label in ITR.items():
        if name not in runs:
            continue
        rs = runs[name]
        cells = []
        for c in cols:
            vs = values(rs, "unimodal", c)
            if not vs and c.startswith("cross_"):  # no separate uni heads: same features
                vs = values(rs, "unimodal", c[len("cross_"):])
            cells.append(fmt(vs))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def ccr_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    # the cross_lingual result's top-level metrics are the averages over languages
    keys = RECALLS + ["rsum", "mrv_std_image_to_text", "mrv_std_text_to_image"]
    lines = ["| objective | seeds | " + " | ".join(
        k.replace("mrv_std_", "MRV ").replace("image_to_text", "i→t")
        .replace("text_to_image", "t→i") for k in keys)
        + " | English test RSUM | wall |", "|" + "---|" * (len(keys) + 4)]
    for name, label in CCR.items():
        if name not in runs:
            continue
        rs = runs[name]
        cells = [fmt(values(rs, "cross_lingual", k)) for k in keys]
        lines.append(f"| {label} (`{name}`) | {len(rs)} | " + " | ".join(cells)
                     + f" | {fmt(values(rs, 'image_text', 'rsum'))} | {wall(rs)} |")
    return lines


def commands(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    out = []
    for rs in runs.values():
        out += [r["info"]["command"] for r in rs if "command" in r["info"]]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(ROOT / "outputs" / "itr"))
    parser.add_argument("--doc", default=str(ROOT / "docs" / "results.md"))
    args = parser.parse_args(argv)
    root = Path(args.runs)
    itr, ccr = collect(root, list(ITR)), collect(root, list(CCR))
    if not itr and not ccr:
        raise SystemExit(f"no runs under {root} (run tools/experiments/run_itr.sh first)")
    body = [
        "### CUSA on shapes: image↔text retrieval (test split, 1000 images / 5000 captions)",
        "",
        f"Generated by `tools/experiments/aggregate_itr.py` from `{os.path.relpath(root, ROOT)}`"
        f" (mean ± half-range over seeds; wall = the whole `mmret-train` command on 2 shared "
        "CPU cores, incl. image caching and evaluation).",
        "",
        *itr_tables(itr),
        "",
        "### Cross-combination: one_to_k + CSA on the 6-language shapes split",
        "",
        "Cross-lingual test (average over en, de, fr, cs, zh, ja):",
        "",
        *ccr_table(ccr),
        "",
        "Exact commands (`tools/experiments/run_itr.sh`):",
        "",
        "```",
        *commands({**itr, **ccr}),
        "```",
    ]
    write_section(SECTION, "\n".join(body), doc=Path(args.doc), tag="results",
                  title="# Results")
    print(f"wrote the {SECTION} section of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

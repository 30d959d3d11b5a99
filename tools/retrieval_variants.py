"""Per-variant metrics of an mmret-search run folder on the manuals benchmark: for each
pipeline, nDCG@10 and MRR@10 over the lexical and over the paraphrase questions (from its
``runs/<pipeline>.json`` and the benchmark's qrels), as a Markdown table; with ``--examples``
also the questions where BM25 and dense disagree most.

    python tools/retrieval_variants.py outputs/search/manuals_en/<time> --data data/manuals_en
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmret.metrics import ir_per_query  # noqa: E402
from mmret.retrieval.datasets import load_beir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--data", required=True, help="the benchmark's BEIR folder")
    parser.add_argument("--examples", type=int, default=0)
    args = parser.parse_args()
    data = load_beir(args.data)
    variant = {q.id: q.meta.get("variant", "") for q in data.queries}
    kinds = sorted(set(variant.values()))
    saved = json.loads((Path(args.run_dir) / "metrics.json").read_text())
    head = ["pipeline"] + [f"{m} {k}" for k in kinds for m in ("nDCG@10", "MRR@10")]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    rr: dict[str, dict[str, float]] = {}
    for name in saved["pipelines"]:
        run = json.loads((Path(args.run_dir) / "runs" / f"{name}.json").read_text())
        qids, values = ir_per_query(run, data.qrels, ["ndcg@10", "mrr@10"])
        rr[name] = dict(zip(qids, values["mrr@10"].tolist(), strict=True))
        cells = [name]
        for k in kinds:
            mask = np.array([variant[q] == k for q in qids])
            cells += [f"{100 * values['ndcg@10'][mask].mean():.1f}",
                      f"{100 * values['mrr@10'][mask].mean():.1f}"]
        print("| " + " | ".join(cells) + " |")
    if args.examples and "bm25" in rr and "dense" in rr:
        text = {q.id: q.text for q in data.queries}
        gap = sorted(text, key=lambda q: rr["bm25"][q] - rr["dense"][q])
        print("\nquestion | variant | RR bm25 | RR dense")
        for q in gap[:args.examples] + gap[-args.examples:]:
            print(f"{text[q]} | {variant[q]} | {rr['bm25'][q]:.2f} | {rr['dense'][q]:.2f}")


if __name__ == "__main__":
    main()

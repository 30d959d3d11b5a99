"""``mmret-bank``: build or inspect a static negative bank (docs/methods.md §6).

    mmret-bank build --checkpoint RUN_DIR --data ROOT --format cirr --split train \\
        [--generated GEN_DIR ...] --out RUN_DIR/bank.safetensors
    mmret-bank build --checkpoint RUN_DIR --data ROOT --format fashioniq --split train \\
        [--category dress --category shirt ...] --out bank.safetensors
    mmret-bank info bank.safetensors

The bank's rows are the training image list that the stage-2 training set indexes: the
split's images (FashionIQ: the categories' images merged), followed by the images of any
``--generated`` triplet folders not already in it (:func:`concat_composed_splits`).

The model is loaded by a hook, ``load_model(checkpoint, device) -> Towers`` (default:
``mmret.load_checkpoint``: a self-describing checkpoint rebuilds its own towers).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

LoadModel = Callable[[str, str], Any]


def _default_load_model(checkpoint: str, device: str) -> Any:
    from mmret.towers.loading import load_checkpoint

    return load_checkpoint(checkpoint, device)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmret-bank", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="encode every training image once into a bank file")
    build.add_argument("--checkpoint", required=True, help="run directory or checkpoint dir")
    build.add_argument("--data", required=True, help="dataset root (CIRR or FashionIQ layout)")
    build.add_argument("--format", choices=("cirr", "fashioniq"), default="cirr")
    build.add_argument("--split", default="train")
    build.add_argument("--category", action="append", default=None,
                       help="FashionIQ category (repeat; default: dress, shirt, toptee)")
    build.add_argument("--image-root", default=None, help="image root (loader default if unset)")
    build.add_argument("--generated", action="append", default=[],
                       help="folder of generated triplets (mmret-cir-triplets) to include")
    build.add_argument("--out", required=True, help="output .safetensors file")
    build.add_argument("--batch-size", type=int, default=256)
    build.add_argument("--device", default="cpu")
    build.add_argument("--num-workers", type=int, default=0)
    build.add_argument("--no-progress", action="store_true")
    info = sub.add_parser("info", help="print a bank file's summary as JSON")
    info.add_argument("path")
    return parser


def training_split(args: argparse.Namespace) -> Any:
    """The ComposedSplit whose image list the bank covers (see the module docstring)."""
    from mmret.data.composed import (
        FASHIONIQ_CATEGORIES,
        concat_composed_splits,
        load_cirr,
        load_fashioniq_categories,
    )
    from mmret.data.triplets import load_generated_triplets

    if args.format == "cirr":
        splits = [load_cirr(args.data, args.split, image_root=args.image_root)]
    else:
        categories = args.category or list(FASHIONIQ_CATEGORIES)
        splits = list(load_fashioniq_categories(args.data, args.split, categories,
                                                image_root=args.image_root).values())
    splits += [load_generated_triplets(g) for g in args.generated]
    return splits[0] if len(splits) == 1 else concat_composed_splits(splits)


def _build(args: argparse.Namespace, load_model: LoadModel) -> int:
    from mmret.bank.bank import build_bank

    split = training_split(args)
    towers = load_model(args.checkpoint, args.device)
    bank = build_bank(
        towers.model,
        split.gallery_paths,
        towers.eval_transform,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.num_workers,
        progress=not args.no_progress,
        extra={"checkpoint": str(args.checkpoint), "data": str(args.data),
               "format": args.format, "split": args.split, "generated": list(args.generated)},
    )
    path = bank.save(args.out)
    print(f"wrote {path}: {len(bank)} images x {bank.dim} (model {bank.model_fingerprint[:19]}"
          f"..., images {bank.images_fingerprint[:19]}...)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from mmret.bank.bank import NegativeBank

    bank = NegativeBank.load(args.path)
    print(json.dumps({
        "path": str(Path(args.path)),
        "images": len(bank),
        "dim": bank.dim,
        "model_fingerprint": bank.model_fingerprint,
        "images_fingerprint": bank.images_fingerprint,
        "features_sha256": bank.checksum,
        "extra": bank.extra,
    }, indent=1))
    return 0


def main(argv: Sequence[str] | None = None, load_model: LoadModel | None = None) -> int:
    """Entry point; ``load_model`` replaces the checkpoint loader (tests, other runners)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            return _build(args, load_model or _default_load_model)
        return _info(args)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"mmret-bank: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

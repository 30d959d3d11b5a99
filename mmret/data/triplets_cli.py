"""``mmret-cir-triplets``: generate composed-retrieval triplets from unlabelled images.

    mmret-cir-triplets --images DIR_OR_LIST --out OUT [--format cirr|fashioniq]
        [--captioner shapes|hf] [--hf-model NAME] [--embed pixels|checkpoint]
        [--checkpoint RUN_DIR] [--rank-min 10 --rank-max 100] [--template T ...]

``--images`` is a folder (every .png/.jpg/.jpeg/.webp in it, sorted) or a text file with one
path per line. ``--embed pixels`` ranks images by their down-sampled pixels (no model);
``--embed checkpoint`` uses the image tower of ``--checkpoint`` (loaded with
``mmret.load_checkpoint``, imported only here).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def list_images(source: str) -> list[str]:
    """Image paths of a folder (sorted) or of a one-path-per-line text file."""
    path = Path(source)
    if path.is_dir():
        return sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    raise FileNotFoundError(f"--images: {source} is neither a folder nor a list file")


def pixel_embed(size: int = 16):
    """``embed_fn`` of down-sampled, mean-centred RGB pixels (a model-free similarity)."""

    def embed(images: list[Image.Image]) -> np.ndarray:
        rows = []
        for image in images:
            x = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BOX),
                           dtype=np.float32).reshape(-1) / 255.0
            rows.append(x - x.mean())
        return np.stack(rows)

    return embed


def model_embed(towers: Any, device: str = "cpu"):
    """``embed_fn`` of a model's raw image features (``towers.eval_transform`` inputs)."""
    import torch

    def embed(images: list[Image.Image]) -> np.ndarray:
        x = torch.stack([towers.eval_transform(im) for im in images]).to(device)
        with torch.no_grad():
            return towers.model.eval().encode_image(x).float().cpu().numpy()

    return embed


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmret-cir-triplets", description=__doc__.split("\n")[0])
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=("cirr", "fashioniq"), default="cirr")
    p.add_argument("--split", default="train")
    p.add_argument("--category", default="dress")
    p.add_argument("--captioner", choices=("shapes", "hf"), default="shapes")
    p.add_argument("--hf-model", default="Salesforce/blip-image-captioning-base")
    p.add_argument("--embed", choices=("pixels", "checkpoint"), default="pixels")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rank-min", type=int, default=10)
    p.add_argument("--rank-max", type=int, default=100)
    p.add_argument("--template", action="append", default=None,
                   help="modification template with {ref}/{tgt} (repeat)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from mmret.data.triplets import DEFAULT_TEMPLATES, HFCaptioner, generate_triplets

    args = _parser().parse_args(argv)
    try:
        paths = list_images(args.images)
        if args.captioner == "hf":
            captioner: Any = HFCaptioner(args.hf_model, device=args.device)
        else:
            from mmret.data.synthetic.describer import ShapesDescriber

            captioner = ShapesDescriber()
        if args.embed == "checkpoint":
            if not args.checkpoint:
                raise ValueError("--embed checkpoint needs --checkpoint RUN_DIR")
            from mmret.towers.loading import load_checkpoint

            embed_fn = model_embed(load_checkpoint(args.checkpoint, args.device), args.device)
        else:
            embed_fn = pixel_embed()
        report = generate_triplets(
            paths, captioner, args.out, format=args.format, rank_min=args.rank_min,
            rank_max=args.rank_max, templates=tuple(args.template or DEFAULT_TEMPLATES),
            seed=args.seed, embed_fn=embed_fn, split=args.split, category=args.category,
            batch_size=args.batch_size, progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"mmret-cir-triplets: error: {err}", file=sys.stderr)
        return 2
    print(f"{report.num_input} images, {report.num_duplicates} exact duplicates removed, "
          f"{report.num_triplets} triplets written to {report.out_dir} ({report.format})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""``mmret-cir-triplets``: generate composed-retrieval triplets from unlabelled images.

    mmret-cir-triplets --images DIR_OR_LIST --out OUT [--format cirr|fashioniq]
        [--captioner shapes|dataset|hf] [--annotation FILE [--annotation-format karpathy|albef]
        [--image-root DIR]] [--hf-model NAME] [--embed pixels|checkpoint]
        [--checkpoint RUN_DIR] [--rank-min 10 --rank-max 100] [--template T ...]

``--images`` is a folder (every .png/.jpg/.jpeg/.webp in it, sorted) or a text file with one
path per line. Captioners: ``shapes`` describes the shapes benchmark's images (others are
refused), ``dataset`` uses the data set's own captions (``--annotation``, Karpathy or ALBEF;
without ``--images`` every image it captions), ``hf`` a Hugging Face image-to-text model
(from the local cache, else downloaded). ``--embed pixels`` ranks images by their
down-sampled pixels (no model);
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
    p.add_argument("--images", default=None,
                   help="image folder or list file (optional with --captioner dataset)")
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=("cirr", "fashioniq"), default="cirr")
    p.add_argument("--split", default="train")
    p.add_argument("--category", default="dress")
    p.add_argument("--captioner", choices=("shapes", "dataset", "hf"), default="shapes")
    p.add_argument("--annotation", default=None,
                   help="--captioner dataset: the annotation file with the images' captions")
    p.add_argument("--annotation-format", choices=("karpathy", "albef"), default="karpathy")
    p.add_argument("--image-root", default=None,
                   help="folder the annotation's image paths are relative to (default: its "
                        "folder)")
    p.add_argument("--caption-index", type=int, default=0,
                   help="--captioner dataset: which caption of each image (default: first)")
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
    from mmret.data.triplets import (
        DEFAULT_TEMPLATES,
        CaptionerLoadError,
        DatasetCaptioner,
        HFCaptioner,
        ShapesCaptioner,
        generate_triplets,
    )

    args = _parser().parse_args(argv)
    try:
        if args.captioner == "dataset":
            if not args.annotation:
                raise ValueError("--captioner dataset needs --annotation FILE (the data set's "
                                 "annotation with the images' captions)")
            captioner: Any = DatasetCaptioner.from_annotation(
                args.annotation, args.image_root, args.annotation_format, args.caption_index)
        elif args.annotation:
            raise ValueError(f"--annotation is read by --captioner dataset only (got "
                             f"--captioner {args.captioner})")
        elif args.captioner == "hf":
            captioner = HFCaptioner(args.hf_model, device=args.device)
        else:
            captioner = ShapesCaptioner()
        if args.images is None:
            if args.captioner != "dataset":
                raise ValueError(f"--images is required with --captioner {args.captioner}")
            paths = captioner.paths
        else:
            paths = list_images(args.images)
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
    except (ValueError, FileNotFoundError, CaptionerLoadError) as err:
        print(f"mmret-cir-triplets: error: {err}", file=sys.stderr)
        return 2
    print(f"{report.num_input} images, {report.num_duplicates} exact duplicates removed, "
          f"{report.num_triplets} triplets written to {report.out_dir} ({report.format})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""``mmret-teacher-cache``: precompute CUSA teacher features for one dataset split.

    mmret-teacher-cache --annotation data/coco/dataset_coco.json --image-root data/coco \\
        --split train --image-teacher ssl:runs/teacher --text-teacher minilm \\
        --out data/coco/teacher_cache.train.safetensors

Reads a Karpathy-format annotation JSON (:func:`mmret.data.retrieval.load_karpathy`);
image ids are the dataset's ids and caption ids ``"{image_id}#{k}"``
(:func:`mmret.teachers.cache.cache_ids`). The fingerprint is the annotation file's sha256,
the split and the restval option. An existing cache for the same teachers and fingerprint
is kept ("up to date"); a different one is an error unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmret-teacher-cache", description=__doc__.splitlines()[0])
    p.add_argument("--annotation", required=True, help="Karpathy-format dataset JSON")
    p.add_argument("--image-root", required=True, help="folder the JSON's filepaths are under")
    p.add_argument("--split", default="train", help="train | val | test | restval")
    p.add_argument("--no-restval", action="store_true",
                   help="with --split train, leave COCO's restval images out")
    p.add_argument("--image-teacher", default=None,
                   help="ssl:DIR | DIR | timm:NAME[:CKPT] | open_clip:NAME[:PRETRAINED]")
    p.add_argument("--text-teacher", default=None, help="minilm | st:NAME_OR_PATH")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="image-decoding processes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from mmret.data.retrieval import load_karpathy
    from mmret.teachers.cache import (
        TeacherCache,
        TeacherCacheError,
        build_teacher_cache,
        cache_ids,
        dataset_fingerprint,
    )
    from mmret.teachers.specs import load_image_teacher, load_text_teacher

    args = build_parser().parse_args(argv)
    if args.image_teacher is None and args.text_teacher is None:
        print("mmret-teacher-cache: give --image-teacher, --text-teacher or both", file=sys.stderr)
        return 2
    restval = not args.no_restval
    split = load_karpathy(args.annotation, args.image_root, args.split, restval_as_train=restval)
    extra = {"restval_as_train": restval} if args.split == "train" else {}
    fingerprint = dataset_fingerprint(args.annotation, args.split, **extra)
    image_teacher = load_image_teacher(args.image_teacher, args.device) if args.image_teacher \
        else None
    text_teacher = load_text_teacher(args.text_teacher, args.device, args.batch_size) \
        if args.text_teacher else None
    image_ids, caption_ids = cache_ids(split)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        try:
            TeacherCache.load(
                out, (image_teacher, text_teacher), fingerprint,
                expect_image_ids=image_ids if image_teacher else None,
                expect_text_ids=caption_ids if text_teacher else None,
            )  # fmt: skip
        except TeacherCacheError as error:
            print(f"mmret-teacher-cache: {error}\npass --overwrite to rebuild it", file=sys.stderr)
            return 1
        print(f"{out}: up to date")
        return 0
    build_teacher_cache(
        image_teacher, text_teacher,
        list(zip(image_ids, split.image_paths, strict=True)),
        list(zip(caption_ids, split.captions, strict=True)),
        out, fingerprint, batch_size=args.batch_size, num_workers=args.workers,
        dtype=getattr(torch, args.dtype), progress=not args.no_progress,
    )  # fmt: skip
    print(f"{out}: {split.num_images} images, {split.num_texts} captions ({fingerprint})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

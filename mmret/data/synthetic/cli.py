"""``mmret-synth``: generate the synthetic shapes benchmark from the command line.

Example: ``mmret-synth --out data/shapes --images 10000 --seed 0``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from mmret.data.synthetic.generate import DEFAULT_SPLITS, generate
from mmret.data.synthetic.languages import SUPPORTED_LANGUAGES


def _splits(text: str) -> dict[str, float]:
    """``"train=0.8,val=0.1,test=0.1"`` or ``"train=800,val=100,test=100"``."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected name=value, got {part!r}")
        out[name.strip()] = int(value) if value.strip().isdigit() else float(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmret-synth", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", type=int, default=10000, help="total number of images")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--languages", default=",".join(SUPPORTED_LANGUAGES), help="comma-separated language codes"
    )
    p.add_argument(
        "--splits",
        type=_splits,
        default=dict(DEFAULT_SPLITS),
        help="split sizes, e.g. train=0.8,val=0.1,test=0.1 (fractions) or counts",
    )
    p.add_argument("--captions", type=int, default=5, help="captions per image")
    p.add_argument("--group-fraction", type=float, default=0.6, help="images in edit groups")
    p.add_argument("--workers", type=int, default=None, help="rendering processes")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--shards", default="", help="also write WebDataset shards of these splits "
                   "(comma-separated, e.g. train,test) into OUT/shards/<split>")
    p.add_argument("--shard-maxcount", type=int, default=1000, help="records per shard")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    manifest = generate(
        args.out,
        num_images=args.images,
        image_size=args.size,
        seed=args.seed,
        languages=[code.strip() for code in args.languages.split(",") if code.strip()],
        splits=args.splits,
        workers=args.workers,
        captions_per_image=args.captions,
        group_fraction=args.group_fraction,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    for split in [s.strip() for s in args.shards.split(",") if s.strip()]:
        from mmret.data.shards import write_dataset_shards

        shards = write_dataset_shards(
            "karpathy", f"{args.out}/shards/{split}", root=args.out,
            annotation="karpathy/dataset_shapes.json", split=split,
            maxcount=args.shard_maxcount, overwrite=args.overwrite,
        )
        print(f"wrote {len(shards.shards)} shard(s) of {split} to {args.out}/shards/{split}",
              file=sys.stderr)
    seconds = time.perf_counter() - start
    print(json.dumps(manifest["splits"]), file=sys.stderr)
    print(
        f"wrote {manifest['num_images']} images to {args.out} in {seconds:.1f} s", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

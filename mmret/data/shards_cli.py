"""``mmret-shards``: convert a dataset into WebDataset tar shards, or describe shards.

Examples::

    mmret-shards write --format karpathy --root data/shapes \\
        --annotation karpathy/dataset_shapes.json --split train --out data/shapes/shards/train
    mmret-shards write --format iglue --root data/shapes --source iglue --languages en,de \\
        --split train --out shards/ml-train
    mmret-shards info data/shapes/shards/train
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from mmret.data.shards import FORMATS, read_manifest, write_dataset_shards
from mmret.plugins import PluginError, import_modules


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmret-shards", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="convert a dataset into shards + manifest.json")
    w.add_argument("--format", required=True,
                   help=f"{', '.join(FORMATS)}, or a format a plugin registers")
    w.add_argument("--imports", default="",
                   help="comma-separated plugin modules to import first (their formats)")
    w.add_argument("--out", required=True, help="shard folder to create")
    w.add_argument("--root", default=".", help="dataset folder (relative paths resolve here)")
    w.add_argument("--annotation", help="annotation JSON (karpathy/albef) or JSONL (text_pairs)")
    w.add_argument("--split", default="train")
    w.add_argument("--image-root", help="image folder relative to --root")
    w.add_argument("--languages", default="", help="comma-separated (iglue/multi30k/xtd)")
    w.add_argument("--source", help="folder of the multilingual files under --root")
    w.add_argument("--category", help="FashionIQ category")
    w.add_argument("--maxcount", type=int, default=1000, help="records per shard")
    w.add_argument("--max-images", type=int, help="convert only the first images")
    w.add_argument("--name", help="shard file prefix (default: the split)")
    w.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    i = sub.add_parser("info", help="print a shard folder's manifest summary")
    i.add_argument("path")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        manifest = asdict(read_manifest(args.path))
        manifest["path"] = str(manifest["path"])
        manifest["shards"] = [{k: v for k, v in s.items() if k != "ncaptions"}
                              for s in manifest["shards"]]
        print(json.dumps(manifest, indent=1))
        return 0
    start = time.perf_counter()
    try:
        import_modules([x.strip() for x in args.imports.split(",") if x.strip()], "--imports")
        manifest = write_dataset_shards(
            args.format, args.out, root=args.root, annotation=args.annotation, split=args.split,
            image_root=args.image_root,
            languages=[x.strip() for x in args.languages.split(",") if x.strip()],
            source=args.source, category=args.category, maxcount=args.maxcount,
            max_images=args.max_images, name=args.name, overwrite=args.overwrite,
        )
    except (ValueError, FileNotFoundError, FileExistsError, PluginError) as exc:
        print(f"mmret-shards: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {manifest.num_samples} records ({manifest.num_captions} captions) in "
          f"{len(manifest.shards)} shard(s) to {args.out} in {time.perf_counter() - start:.1f} s;"
          f" fingerprint {manifest.fingerprint[:16]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

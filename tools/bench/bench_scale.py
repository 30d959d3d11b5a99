"""Benchmark: shard streaming against the folder loader, and sharded evaluation.

1. ``loader``: samples/s of the training data pipeline on the same shapes images (PNG,
   decoded and transformed by mmret-tiny's training transform per sample, no image cache,
   captions collated and tokenised), over one epoch of batch 64: the folder loader
   (``karpathy_pairs`` + the trainer's resumable batch sampler), the wids indexed shards
   (``shard_pairs``) and the streamed shards (``shard_stream``, shuffle buffer 1000), with
   ``num_workers`` 0 and 2. Target: streaming ≥ 1.0× the folder loader.
2. ``eval``: wall time of the ``image_text`` protocol (encode images + captions, exact
   ranking) with 1 and with 2 gloo processes (features sharded and gathered), each process
   with one torch thread, start-up excluded.

    python tools/bench/bench_scale.py [--images 2000] [--eval-images 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from doc_sections import write_section  # tools/bench is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from torch.utils.data import DataLoader  # noqa: E402

from mmret.data.shards import write_dataset_shards  # noqa: E402
from mmret.data.sources import karpathy_eval, karpathy_pairs  # noqa: E402
from mmret.data.streaming import shard_pairs, shard_stream  # noqa: E402
from mmret.engine.sampler import ResumableBatchSampler  # noqa: E402
from mmret.tasks.image_text import ImageTextTask  # noqa: E402
from mmret.towers import create_towers  # noqa: E402

ANNOTATION = "karpathy/dataset_shapes.json"


def loader_rate(dataset, collate, workers: int, batch: int, max_batches: int) -> float:
    if hasattr(dataset, "configure"):
        dataset.configure(batch_size=batch, num_workers=workers, seed=0)
        dataset.set_epoch(0)
        loader = DataLoader(dataset, batch_size=batch, collate_fn=collate, num_workers=workers)
    else:
        sampler = ResumableBatchSampler(len(dataset), batch, 0, with_seeds=True)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                            num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up and first batch excluded
    start, n = time.perf_counter(), 0
    for i, b in enumerate(it):
        n += len(b["image_ids"])
        if i + 2 >= max_batches:
            break
    return n / (time.perf_counter() - start)


def eval_worker(rank: int, world: int, root: str, images: int):
    from mmret.evaluation import EvalOptions, run_protocol

    torch.manual_seed(0)
    towers = create_towers("mmret-tiny")
    data = karpathy_eval(root, ANNOTATION, "train", towers.eval_transform, max_images=images,
                         cache_images=True)
    options = EvalOptions(tokenizer=towers.tokenizer, batch_size=128, distributed=world > 1)
    if world > 1:  # start together (set-up excluded)
        torch.distributed.barrier()
    start = time.perf_counter()
    metrics, _ = run_protocol("image_text", towers.model, data, options)
    return {"seconds": torch.tensor(time.perf_counter() - start),
            "r1": torch.tensor(metrics["text_to_image_R@1"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    from mmret.data.synthetic import generate
    from tests.distributed_utils import run_distributed

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, num_images=int(args.images / 0.8) + 1, image_size=64, seed=0,
                 workers=2, progress=False, overwrite=True)
        write_dataset_shards("karpathy", root / "shards", root=root, annotation=ANNOTATION,
                             maxcount=250)
        towers = create_towers("mmret-tiny")
        folder = karpathy_pairs(root, ANNOTATION, towers.train_transform, cache_images=False)
        task = ImageTextTask()
        task.setup(towers, folder)
        collate = task.collate_fn()
        rows = {}
        for workers in (0, 2):
            sets = {
                "folder (karpathy_pairs)": folder,
                "wids indexed shards (shard_pairs)": shard_pairs(root, "shards",
                                                                 towers.train_transform),
                "streamed shards (shard_stream)": shard_stream(root, "shards",
                                                               towers.train_transform),
            }
            for name, ds in sets.items():
                rows[(name, workers)] = loader_rate(ds, collate, workers, 64, args.batches)
        evals = {}
        for world in (1, 2):
            per_rank = run_distributed(eval_worker, world, str(root), args.eval_images)
            evals[world] = (max(float(r["seconds"]) for r in per_rank), float(per_rank[0]["r1"]))
    captions = args.eval_images * 5
    lines = [
        "## Shard streaming and sharded evaluation",
        "",
        f"`tools/bench/bench_scale.py` on {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch thread per process, 2 shared CPU cores, no GPU.",
        "",
        f"Training data pipeline, samples/s over {args.batches} batches of 64 (the first "
        f"excluded) from {args.images} shapes PNGs (64 px, 5 captions each), decoded and "
        "transformed per sample (no image cache), tokenised and collated:",
        "",
        "| loader | num_workers=0 | × folder | num_workers=2 | × folder |",
        "|---|---|---|---|---|",
    ]
    base0, base2 = rows[("folder (karpathy_pairs)", 0)], rows[("folder (karpathy_pairs)", 2)]
    for name in dict.fromkeys(n for n, _ in rows):
        r0, r2 = rows[(name, 0)], rows[(name, 2)]
        lines.append(f"| {name} | {r0:.0f} | {r0 / base0:.2f}× | {r2:.0f} | {r2 / base2:.2f}× |")
    lines += [
        "",
        f"Evaluation (`image_text` protocol, mmret-tiny, {args.eval_images} images × "
        f"{captions} captions, batch 128, exact ranking), wall time of the protocol in the "
        "slowest process:",
        "",
        "| processes | seconds | speed-up | text→image R@1 |",
        "|---|---|---|---|",
        f"| 1 | {evals[1][0]:.2f} | 1.00× | {evals[1][1]:.4f} |",
        f"| 2 (gloo, sharded encoding) | {evals[2][0]:.2f} | {evals[1][0] / evals[2][0]:.2f}× "
        f"| {evals[2][1]:.4f} |",
        "",
        "Both processes share the machine's 2 cores with each other and with other work "
        f"(load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end: "
        "the numbers are noisy); the metrics are identical (tests/test_distributed_eval.py "
        "checks exact equality).",
    ]
    write_section("scale", "\n".join(lines))
    out = ROOT / "tools" / "bench" / "results" / "scale.json"
    out.write_text(json.dumps({"loader": {f"{n} / workers={w}": v for (n, w), v in rows.items()},
                               "eval_seconds": {str(k): v[0] for k, v in evals.items()}},
                              indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

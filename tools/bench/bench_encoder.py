"""Benchmark: the one encoder (:mod:`mmret.encoding`) against a bare no-grad forward loop.

Both read the same batches: images from a map-style Dataset of transformed tensors through
a DataLoader (``--workers`` processes, so loading overlaps the model), texts tokenised per
batch; the bare loop is ``model.encode_*`` + ``F.normalize`` + ``.cpu()`` under
``torch.no_grad`` and nothing else. Runs alternate (bare, encoder, bare, ...) and the
median of ``--repeat`` runs is compared. Target: the encoder at ≥ 0.95× the bare loop's
throughput. Also checks that both give the same rows.

    python tools/bench/bench_encoder.py [--images 4096] [--batch-size 256] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from doc_sections import write_section  # tools/bench is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import mmret  # noqa: E402
from mmret.encoding import EncodeOptions, encode_images, encode_texts  # noqa: E402


class Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def bare_images(model, dataset, batch_size: int, workers: int) -> torch.Tensor:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    out = []
    with torch.no_grad():
        for batch in loader:
            out.append(F.normalize(model.encode_image(batch).float(), dim=-1).cpu())
    return torch.cat(out)


def bare_texts(model, tokenizer, texts: list[str], batch_size: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(texts[start:start + batch_size])
            out.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(out)


def timed(fn) -> tuple[float, torch.Tensor]:
    tic = time.perf_counter()
    result = fn()
    return time.perf_counter() - tic, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--texts", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    towers = mmret.create_towers("mmret-tiny")
    model = towers.model.eval()
    dataset = Images(torch.rand(args.images, 3, 64, 64))
    words = ["a", "red", "blue", "small", "large", "circle", "square", "star", "left", "of"]
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(6 + i % 9))
             for i in range(args.texts)]
    options = EncodeOptions(batch_size=args.batch_size, num_workers=args.workers)
    runs = {"bare_images": [], "encoder_images": [], "bare_texts": [], "encoder_texts": []}
    results = {}
    for _ in range(args.repeat):
        t, results["bare_images"] = timed(
            lambda: bare_images(model, dataset, args.batch_size, args.workers))
        runs["bare_images"].append(t)
        t, results["encoder_images"] = timed(lambda: encode_images(model, dataset, options))
        runs["encoder_images"].append(t)
        t, results["bare_texts"] = timed(
            lambda: bare_texts(model, towers.tokenizer, texts, args.batch_size))
        runs["bare_texts"].append(t)
        t, results["encoder_texts"] = timed(
            lambda: encode_texts(model, texts, towers.tokenizer, options))
        runs["encoder_texts"].append(t)
    diff_images = float((results["bare_images"] - results["encoder_images"]).abs().max())
    diff_texts = float((results["bare_texts"] - results["encoder_texts"]).abs().max())
    median = {k: statistics.median(v) for k, v in runs.items()}
    ratio_images = median["bare_images"] / median["encoder_images"]
    ratio_texts = median["bare_texts"] / median["encoder_texts"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report = {
        "images": args.images, "texts": args.texts, "batch_size": args.batch_size,
        "workers": args.workers, "threads": args.threads, "repeat": args.repeat,
        "seconds_median": median, "seconds_all": runs,
        "throughput_ratio_images": ratio_images, "throughput_ratio_texts": ratio_texts,
        "max_abs_diff_images": diff_images, "max_abs_diff_texts": diff_texts,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {load:.2f}",
    }
    out = ROOT / "tools" / "bench" / "results" / "encoder.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    table = (
        "| stream | bare loop (s, median) | encoder (s, median) | encoder throughput / bare "
        "| max abs diff |\n|---|---:|---:|---:|---:|\n"
        f"| {args.images} images | {median['bare_images']:.3f} | "
        f"{median['encoder_images']:.3f} | {ratio_images:.3f}x | {diff_images:.1e} |\n"
        f"| {args.texts} texts | {median['bare_texts']:.3f} | {median['encoder_texts']:.3f} | "
        f"{ratio_texts:.3f}x | {diff_texts:.1e} |"
    )
    print(table)
    print(f"machine: {report['machine']}")
    if not args.no_doc:
        body = (
            "## The one encoder vs a bare no-grad loop\n\n"
            f"`python tools/bench/bench_encoder.py --images {args.images} --texts {args.texts} "
            f"--batch-size {args.batch_size} --workers {args.workers} --repeat {args.repeat} "
            f"--threads {args.threads}` (mmret-tiny, CPU; {report['machine']}). Same batches, "
            "DataLoader with workers for the images (loading overlapped); target ≥ 0.95×.\n\n"
            + table + "\n"
        )
        write_section("encoder", body)


if __name__ == "__main__":
    main()

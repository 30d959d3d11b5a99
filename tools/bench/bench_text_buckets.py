"""Benchmark: mmret-tiny's text tower with length buckets vs one padded batch.

A 1-to-K training batch holds every image's caption in six languages; per-character Chinese
and Japanese captions are about twice as long as the European ones, so one padded
(B·K, L_max) batch spends most of its work on padding. ``TinyTextTransformer`` sorts rows
by length and encodes groups of ``length_bucket`` rows, each trimmed to its own longest row.

Measures forward + backward of the text tower on real 1-to-K batches of the synthetic
benchmark's six-language training captions (``data/shapes``, generated if missing), for
``length_bucket`` = 0 (the baseline: one group, trimmed only to the batch's longest row)
and the given bucket sizes, in the same process, and checks that the bucketed features
equal the baseline's. Writes the ``text-buckets`` section of docs/benchmarks.md.

    python tools/bench/bench_text_buckets.py [--images 64] [--repeat 10] [--buckets 32 64 128]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from doc_sections import write_section  # tools/bench is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("en", "de", "fr", "cs", "zh", "ja")


def one_to_k_batches(root: Path, images: int, count: int) -> list[list[str]]:
    """``count`` batches of ``images`` images × their first caption in each language,
    image-major (image i's captions at rows K·i … K·i+K−1), as the 1-to-K collate lays out."""
    rows = {
        lang: [json.loads(line) for line in (root / "iglue" / lang / "train.jsonl").open()]
        for lang in LANGUAGES
    }
    batches = []
    for b in range(count):
        batch = []
        for i in range(b * images, (b + 1) * images):
            batch += [rows[lang][i]["sentences"][i % 5] for lang in LANGUAGES]
        batches.append(batch)
    return batches


def time_tower(bucket: int, batches: list[torch.Tensor], repeat: int) -> tuple[float, torch.Tensor]:
    """Median seconds of forward + backward over ``batches`` (after one warm-up pass) and the
    features of the first batch (eval mode)."""
    import mmret

    torch.manual_seed(0)
    towers = mmret.create_towers("mmret-tiny", text={"context_length": 64, "length_bucket": bucket})
    text = towers.model.text.train()
    for tokens in batches[:1]:
        text(tokens).sum().backward()
    times = []
    for r in range(repeat):
        tokens = batches[r % len(batches)]
        tic = time.perf_counter()
        text(tokens).sum().backward()
        times.append(time.perf_counter() - tic)
    with torch.no_grad():
        features = text.eval()(batches[0])
    return statistics.median(times), features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images per batch (× 6 captions)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--buckets", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "shapes")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.data / "iglue" / "en" / "train.jsonl").is_file():
        from mmret.data.synthetic import generate

        generate(args.data)
    import mmret

    tokenizer = mmret.create_towers("mmret-tiny", text={"context_length": 64}).tokenizer
    captions = one_to_k_batches(args.data, args.images, 4)
    batches = [tokenizer(batch) for batch in captions]
    lengths = torch.cat([(b != 0).sum(1) for b in batches]).float()

    base_s, base_features = time_tower(0, batches, args.repeat)
    rows = [("0 (baseline: one padded group)", base_s, 1.0, 0.0)]
    for bucket in args.buckets:
        seconds, features = time_tower(bucket, batches, args.repeat)
        error = float((features - base_features).abs().max())
        rows.append((str(bucket), seconds, base_s / seconds, error))
        print(f"bucket {bucket}: {seconds:.3f} s ({base_s / seconds:.2f}x), max |Δ| {error:.1e}")
    print(f"bucket 0: {base_s:.3f} s")

    command = "python tools/bench/bench_text_buckets.py " + " ".join(
        f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k in ("images", "repeat", "buckets", "threads")
    )
    body = [
        "## Text tower: length buckets (1-to-K batches)",
        "",
        f"Command: `{command}`",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {args.threads} torch "
        f"threads, torch {torch.__version__}, CPU.",
        f"- Batch: {args.images} images × {len(LANGUAGES)} languages = "
        f"{args.images * len(LANGUAGES)} captions of the shapes training split; tokens per "
        f"caption mean {lengths.mean():.1f}, max {lengths.max():.0f} (context 64; zh/ja "
        "tokenised per character).",
        "- Time: median forward + backward of mmret-tiny's text tower over "
        f"{args.repeat} batches; ratio = baseline time / time (higher is faster). Max |Δ| = "
        "largest feature difference to the baseline (eval mode, fp32).",
        "",
        "| length_bucket | s per batch | speed-up | max abs Δ features |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {s:.3f} | {ratio:.2f}× | {err:.1e} |" for name, s, ratio, err in rows],
    ]
    write_section("text-buckets", "\n".join(body))
    print("wrote the text-buckets section of docs/benchmarks.md")


if __name__ == "__main__":
    main()

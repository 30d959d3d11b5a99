"""Benchmark: the decoder tower's encoding vs a plain Hugging Face forward with the same
pooling on the same batches; the aligned-tokens sparse route's queries/s vs the dense
route's.

Part 1: texts (STS-B test sentences, ../shared/data) sorted by length once and cut into
the same batches for both; ``DecoderSentenceEncoder.encode`` (last-token pooling, left
padding) against the same body + the HF tokenizer (left padding) + last-token pooling, same
model weights, inference mode, alternating ``--repeat`` times after a warm-up; best-of
sentences/s (medians printed too) and the ratio, plus the max |Δ| of the embeddings. Part 2:
both routes built
over the STS-B test retrieval set with the same model; queries/s of ``search`` (dense:
query encoding + exact inner products; sparse: own-token queries, no model pass).

The model is a random GPT-2-style decoder of the offline experiment's size (the timings
do not depend on the weights) unless ``--checkpoint`` names a trained run.

    python tools/bench/bench_decoder_tower.py [--batch-size 64] [--repeat 3] [--threads 1]
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
SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=1024, help="sentences for part 1")
    parser.add_argument("--queries", type=int, default=200, help="queries for part 2")
    parser.add_argument("--top-k", type=int, default=64, help="K of the sparse route")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--data-root", type=Path, default=SHARED)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import mmret
    from mmret.data.sts import read_stsb
    from mmret.retrieval.datasets import stsb_retrieval
    from mmret.retrieval.dense import DenseRoute
    from mmret.retrieval.sparse import LogitSparseEncoder, SparseRoute
    from mmret.towers.decoder import ensure_tokenizer
    from mmret.towers.text_encoders import SentenceTokenizer

    if args.checkpoint:
        enc = mmret.load_checkpoint(args.checkpoint, raw=True).model
    else:
        tok = ensure_tokenizer(ROOT / "outputs" / "tokenizers" / "stsb_bpe2048",
                               [args.data_root / "stsb" / "sts-train.csv"], 2048)
        torch.manual_seed(0)
        enc = mmret.create_towers("decoder-llm", tokenizer=str(tok), max_length=64,
                                  config={"model_type": "gpt2", "n_embd": 128, "n_layer": 4,
                                          "n_head": 4, "n_positions": 64}).model
    enc.eval()
    pairs = read_stsb(args.data_root / "stsb" / "sts-test.csv")
    texts = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))[: args.limit]
    tok = enc.tokenizer
    lengths = [len(x) for x in tok(texts, add_special_tokens=True)["input_ids"]]
    texts = [t for _, t in sorted(zip(lengths, texts, strict=True), key=lambda p: -p[0])]
    batches = [texts[i:i + args.batch_size] for i in range(0, len(texts), args.batch_size)]

    # the plain baseline: the same body, the HF tokenizer's own left padding, last token
    body = enc.body
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    eos = [tok.eos_token_id] if enc.append_eos else []

    def plain() -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for batch in batches:
                ids = [x[: enc.max_length - len(eos)] + eos
                       for x in tok(batch, add_special_tokens=True)["input_ids"]]
                padded = tok.pad({"input_ids": ids}, return_tensors="pt")
                mask = padded["attention_mask"]
                pos = (mask.cumsum(1) - 1).clamp_min(0)
                h = body(input_ids=padded["input_ids"], attention_mask=mask,
                         position_ids=pos).last_hidden_state
                out.append(h[:, -1])
        return torch.cat(out)

    def ours() -> torch.Tensor:
        return torch.cat([enc.encode(b, batch_size=args.batch_size) for b in batches])

    error = float((ours()[:128] - plain()[:128]).abs().max())
    times: dict[str, list[float]] = {"mmret decoder tower": [], "plain HF forward": []}
    pairs_ratio: list[float] = []
    for r in range(args.repeat):
        # paired, in alternating order (AB, BA, …): a load change hits both of a pair
        order = (("mmret decoder tower", ours), ("plain HF forward", plain))
        took = {}
        for name, fn in order if r % 2 == 0 else order[::-1]:
            tic = time.perf_counter()
            fn()
            took[name] = time.perf_counter() - tic
            times[name].append(took[name])
        pairs_ratio.append(took["plain HF forward"] / took["mmret decoder tower"])
    rate = {k: len(texts) / statistics.median(v) for k, v in times.items()}
    ratio = statistics.median(pairs_ratio)
    quart = statistics.quantiles(pairs_ratio, n=4) if len(pairs_ratio) > 1 else [ratio] * 3
    best_ratio = min(times["plain HF forward"]) / min(times["mmret decoder tower"])
    print(f"encode: {rate}, median paired ratio {ratio:.3f}x (IQR {quart[0]:.3f}-{quart[2]:.3f}), "
          f"best-of ratio {best_ratio:.3f}x, max |Δ| {error:.1e}")

    rset = stsb_retrieval(args.data_root, split="test")
    queries = rset.queries[: args.queries]
    dense = DenseRoute(rset.documents, (enc, SentenceTokenizer(enc)), batch_size=args.batch_size)
    sparse = SparseRoute(rset.documents, LogitSparseEncoder(enc, top_k=args.top_k))
    qps: dict[str, list[float]] = {"dense": [], f"aligned_tokens K={args.top_k}": []}
    dense.search(queries[:8], 10)
    sparse.search(queries[:8], 10)
    for _ in range(args.repeat):
        for name, route in zip(qps, (dense, sparse), strict=True):
            tic = time.perf_counter()
            route.search(queries, 10)
            qps[name].append(len(queries) / (time.perf_counter() - tic))
    q_rate = {k: statistics.median(v) for k, v in qps.items()}
    q_ratio = q_rate[f"aligned_tokens K={args.top_k}"] / q_rate["dense"]
    print(f"search: {q_rate}, sparse/dense {q_ratio:.1f}x")

    command = (f"python tools/bench/bench_decoder_tower.py --batch-size {args.batch_size} "
               f"--repeat {args.repeat} --threads {args.threads} --limit {args.limit} "
               f"--queries {args.queries} --top-k {args.top_k}"
               + (f" --checkpoint {args.checkpoint}" if args.checkpoint else ""))
    n_params = sum(p.numel() for p in enc.parameters())
    body_text = [
        "## Decoder tower encoding and the aligned-tokens sparse route",
        "",
        f"Command: `{command}`",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {args.threads} torch "
        f"thread(s), torch {torch.__version__}, CPU, {os.cpu_count()} cores (shared), load "
        f"average {os.getloadavg()[0]:.2f} at the end.",
        f"- Model: {'the checkpoint' if args.checkpoint else 'random'} GPT-2-style decoder, "
        f"{n_params / 1e6:.2f}M parameters, last-token pooling, "
        f"{'EOS appended' if enc.append_eos else 'no EOS appended'}, left padding. The "
        "baseline calls the body as Hugging Face does by default (it builds a key/value "
        "cache); the tower passes use_cache=False, which an embedding never needs.",
        f"- Part 1: {len(texts)} distinct STS-B test sentences sorted by length once, the same "
        f"{len(batches)} batches of {args.batch_size} for both; after a warm-up, "
        f"{args.repeat} pairs of runs in alternating order (AB, BA, …); sentences/s of the "
        f"median run; max |Δ| of the embeddings {error:.1e}.",
        "",
        *value_table("encoder", "sentences/s", rate),
        "",
        f"Ratio (mmret / plain HF forward), median of the {args.repeat} paired ratios: "
        f"**{ratio:.2f}×** (target ≥ 1.0×; quartiles {quart[0]:.2f}–{quart[2]:.2f}; "
        f"best run against best run {best_ratio:.2f}×).",
        "",
        f"- Part 2: STS-B test retrieval set ({len(rset.documents)} documents), "
        f"{len(queries)} queries, k=10, median of {args.repeat} runs.",
        "",
        *value_table("route", "queries/s", q_rate),
        "",
        f"Sparse / dense queries/s: **{q_ratio:.1f}×** (own-token queries need no model pass).",
    ]
    write_section("decoder-tower", "\n".join(body_text))
    print("wrote the decoder-tower section of docs/benchmarks.md")


if __name__ == "__main__":
    main()

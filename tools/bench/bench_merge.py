"""Benchmark of mmret.merging (docs/benchmarks.md, "Model merging").

1. Speed of every static merge against a plain ``torch.add`` over the same tensors, in one
   run: the baseline adds the N task vectors into the base tensor by tensor
   (``out = base.clone(); out.add_(v_i, alpha=w)``, the outputs kept as a merge keeps them);
   ratio = baseline time / method time
   (≥ 0.5 is the target: the merge runs at least half as fast as the bare additions).
   Both write a whole model of fresh outputs, and how much that costs depends on what the
   allocator kept from the call before (page faults on new pages or reused ones: 0.02 to
   0.08 s at 88 MB between rows of one run). So each regime runs in its own child process
   with glibc's malloc fixed by environment (``MALLOC_MMAP_THRESHOLD_``, which also stops
   its dynamic adjustment): ``fresh`` — every tensor is mapped anew and its pages faulted
   in, as in a one-off ``mmret-merge``; ``reused`` — freed memory is kept and reused, as in
   repeated merges in one process (the harder target: no page faults to share).
2. Peak memory of an N-model merge from checkpoint files (read, task vectors, merge,
   write: ``mmret.merging.merge_checkpoints``), in a fresh child process per method: peak
   RSS (VmHWM) minus the RSS before the files are read (after a warm-up merge by the same
   method of one-tensor files, so imports and compiled kernels are not counted), in units of one model's bytes (target ≤ N + 2).
   RSS includes the file-backed pages of the safetensors files being read.
3. A Self Positioning step (merge the tensors with the current (a, λ), functional_call
   forward, backward into N + 1 scalars, SGD step) against an ordinary training step
   (forward, backward, AdamW over every weight) of the same model on the same batch.

Usage (repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python tools/bench/bench_merge.py            # all three
    OMP_NUM_THREADS=1 .venv/bin/python tools/bench/bench_merge.py --models 3 --size-mb 88

Writes ``outputs/bench/merge.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

METHODS = {"average": {}, "task_arithmetic": {"scale": 0.5}, "ties": {"density": 0.2},
           "dare": {"drop": 0.9}, "slerp": {}, "slerp_flattened": {"angles": "flattened"}}


def fake_model(size_mb: float, seed: int) -> dict[str, torch.Tensor]:
    """Tensors shaped like a BERT-style encoder (384-wide layers) totalling ``size_mb``."""
    g = torch.Generator().manual_seed(seed)
    per_layer = [(384, 384)] * 4 + [(1536, 384), (384, 1536)] + [(384,)] * 8
    layer_bytes = sum(4 * torch.Size(s).numel() for s in per_layer)
    layers = max(1, int(size_mb * 2**20 / layer_bytes))
    out = {}
    for i in range(layers):
        for j, shape in enumerate(per_layer):
            out[f"model/layer{i}.p{j}"] = torch.randn(shape, generator=g)
    return out


def task_vectors_of(n: int, size_mb: float):
    from mmret.merging.task_vectors import TaskVectors

    base = fake_model(size_mb, 0)
    vectors = []
    for i in range(n):
        g = torch.Generator().manual_seed(100 + i)
        vectors.append({k: 0.01 * torch.randn(v.shape, generator=g) for k, v in base.items()})
    return TaskVectors(base, vectors, {}, [f"m{i}" for i in range(n)], ["-"] * n, "-")


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


REGIMES = {"fresh": {"MALLOC_MMAP_THRESHOLD_": "131072"},
           "reused": {"MALLOC_MMAP_THRESHOLD_": str(2**32),
                      "MALLOC_TRIM_THRESHOLD_": str(2**36)}}


def bench_speed_regimes(n: int, size_mb: float, repeats: int) -> dict[str, list[dict]]:
    """:func:`bench_speed` in one child process per allocator regime (module docstring)."""
    out = {}
    for regime, env in REGIMES.items():
        proc = subprocess.run([sys.executable, __file__, "--speed-child", str(n),
                               str(size_mb), str(repeats)], capture_output=True, text=True,
                              check=True, env={**os.environ, **env})
        out[regime] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def bench_speed(n: int, size_mb: float, repeats: int) -> list[dict]:
    from mmret.merging.methods import create_method

    tv = task_vectors_of(n, size_mb)

    def baseline() -> dict:
        merged = {}  # kept, as a merge keeps its output (same fresh memory to fill)
        for key, theta0 in tv.base.items():
            out = theta0.clone()
            for v in tv.vectors:
                out.add_(v[key], alpha=0.5)
            merged[key] = out
        return merged

    def mergekit_ties() -> None:
        from mergekit.merge_methods import registry
        from mergekit.merge_methods.base import TensorGroup

        ties = registry.get("ties")
        weights = {n: 1.0 for n in tv.names}
        for key, theta0 in tv.base.items():
            group = TensorGroup.from_tensors([theta0] + [theta0 + v[key] for v in tv.vectors],
                                             ids=["base"] + tv.names, base_index=0)
            ties.merge_group(group, weight=weights, density={n: 0.2 for n in tv.names},
                             normalize=True, rescale=False, int8_mask=False, **{"lambda": 1.0})

    candidates = {}
    for label, options in METHODS.items():
        method = create_method("slerp" if label.startswith("slerp") else label, **options)
        candidates[label] = lambda m=method: m(tv)
    try:
        import mergekit  # noqa: F401

        candidates["ties (mergekit 0.1.5, reference)"] = mergekit_ties
    except ImportError:
        pass
    rows = []
    for label, fn in candidates.items():
        base_times, method_times = [], []
        for _ in range(1 if "mergekit" in label else repeats):  # interleaved: same load
            base_times.append(timed(baseline, 1))
            method_times.append(timed(fn, 1))
        base_s, method_s = statistics.median(base_times), statistics.median(method_times)
        rows.append({"method": label, "baseline_s": base_s, "method_s": method_s,
                     "ratio": base_s / method_s})
    return rows


def _peak_child(method: str, n: int, size_mb: float) -> dict:
    """Run in a child: write N + 1 checkpoints, then read + merge + write, report VmHWM."""
    from safetensors.torch import save_file

    from mmret.checkpoint import write_manifest

    tmp = Path(tempfile.mkdtemp(prefix="bench-merge-"))
    spec = {"name": "bench", "kwargs": {}}
    model_bytes = 0
    for i in range(n + 1):
        tensors = fake_model(size_mb, i)
        model_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
        d = tmp / f"m{i}"
        d.mkdir()
        save_file({k[6:]: v for k, v in tensors.items()}, str(d / "model.safetensors"))
        (d / "towers.json").write_text(json.dumps(spec))
        write_manifest(d, ["model.safetensors", "towers.json"])
        del tensors
    import gc

    gc.collect()
    # VmHWM cannot be reset from inside; the files were written by this process, so measure
    # the merge in a grandchild that starts clean
    code = f"""
import json, sys
from pathlib import Path
from mmret.merging import merge_checkpoints
def rss(field):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
tmp = Path({str(tmp)!r})
# warm-up: the same method on one-tensor models (N + 1), so every module the merge imports
# (and every kernel it compiles: LLVM's memory is not the merge's) is loaded before measuring
import gc, shutil, torch
from safetensors.torch import save_file
from mmret.checkpoint import write_manifest
name, options = {method!r}, {json.dumps(METHODS[method])}
for i in range({n} + 1):
    d = tmp / f'warm{{i}}'
    d.mkdir()
    # big enough for every kernel the merge compiles (TIES' sampled k-th, SLERP's Gram)
    w = torch.randn(70000, generator=torch.Generator().manual_seed(i))
    save_file({{'w': w}}, str(d / 'model.safetensors'))
    (d / 'towers.json').write_text(json.dumps({{'name': 'bench', 'kwargs': {{}}}}))
    write_manifest(d, ['model.safetensors', 'towers.json'])
merge_checkpoints([tmp / f'warm{{i}}' for i in range(1, {n} + 1)], tmp / 'warm_out',
                  'slerp' if name.startswith('slerp') else name, base=tmp / 'warm0', **options)
gc.collect()
start = rss('VmRSS')
models = [tmp / f'm{{i}}' for i in range(1, {n} + 1)]
merge_checkpoints(models, tmp / 'out', 'slerp' if name.startswith('slerp') else name,
                  base=tmp / 'm0', **options)
print(json.dumps({{'start': start, 'peak': rss('VmHWM')}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    peak = measured["peak"] - measured["start"]
    return {"method": method, "models": n, "model_mb": model_bytes / 2**20,
            "peak_mb": peak / 2**20, "peak_models": peak / model_bytes, "limit_models": n + 2}


def bench_self_positioning(repeats: int) -> dict:
    """One Self Positioning step vs one ordinary training step, tiny text tower, one batch."""
    import mmret
    from mmret.merging.self_positioning import FunctionalModule, SelfPositioning
    from mmret.merging.task_vectors import TaskVectors
    from mmret.objectives import create_objective

    towers = mmret.create_towers("sentence-encoder", kind="tiny", config="mmret-tiny",
                                 dropout=0.1)
    model = towers.model.train()
    sentences = [f"a {c} {s} next to a {d} square" for c in ("red", "blue", "green", "white")
                 for s in ("circle", "star", "cross", "triangle") for d in ("big", "small")]
    tokens = towers.tokenizer(sentences)
    tokens = tokens if isinstance(tokens, dict) else {"input_ids": tokens}
    objective = create_objective("infonce")

    def loss_of(m) -> torch.Tensor:
        feats = m(**tokens)["features"]
        half = feats.shape[0] // 2
        return sum(objective(anchor_features=feats[:half],
                             positive_features=feats[half:]).values())

    base = {f"model/{k}": v.detach().clone() for k, v in model.state_dict().items()
            if v.is_floating_point()}
    g = torch.Generator().manual_seed(0)
    vectors = [{k: 0.01 * torch.randn(v.shape, generator=g) for k, v in base.items()}
               for _ in range(3)]
    sp = SelfPositioning(TaskVectors(base, vectors, {}, ["a", "b", "c"], ["-"] * 3, "-"))
    opt_sp = torch.optim.SGD([sp.rho, sp.scale], lr=0.01)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def sp_step() -> None:
        opt_sp.zero_grad()
        params = {k[6:]: v for k, v in sp.merged_tensors().items()}
        (loss_of(FunctionalModule(model, params)) + sp.penalty()).backward()
        opt_sp.step()

    def train_step() -> None:
        opt.zero_grad()
        loss_of(model).backward()
        opt.step()

    for fn in (sp_step, train_step):
        fn()  # warm-up
    train_s = timed(train_step, repeats)
    sp_s = timed(sp_step, repeats)
    params = sum(v.numel() for v in base.values())
    return {"model": "mmret-tiny text tower", "parameters": params, "batch": len(sentences),
            "models_merged": 3, "train_step_s": train_s, "sp_step_s": sp_s,
            "ratio_sp_over_train": sp_s / train_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--size-mb", type=float, default=88.0, help="one model's float32 MB "
                        "(88: all-MiniLM-L6-v2's size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="outputs/bench/merge.json")
    parser.add_argument("--peak-child", nargs=3, metavar=("METHOD", "N", "MB"))
    parser.add_argument("--speed-child", nargs=3, metavar=("N", "MB", "REPEATS"))
    args = parser.parse_args()
    if args.speed_child:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        n, mb, repeats = args.speed_child
        print(json.dumps(bench_speed(int(n), float(mb), int(repeats))))
        return 0
    if args.peak_child:
        method, n, mb = args.peak_child
        print(json.dumps(_peak_child(method, int(n), float(mb))))
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    started = time.perf_counter()
    speed = bench_speed_regimes(args.models, args.size_mb, args.repeats)
    memory = []
    for method in METHODS:
        proc = subprocess.run([sys.executable, __file__, "--peak-child", method,
                               str(args.models), str(args.size_mb)], capture_output=True,
                              text=True, check=True)
        memory.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    sp = bench_self_positioning(max(5, args.repeats))
    load = os.getloadavg()[0]
    result = {"speed": speed, "memory": memory, "self_positioning": sp,
              "models": args.models, "size_mb": args.size_mb, "load_average_1min": load,
              "wall_s": time.perf_counter() - started, "threads": torch.get_num_threads()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| method | fresh: torch.add s | merge s | ratio | reused: torch.add s | merge s "
          f"| ratio | peak MB | peak / model (limit {args.models + 2}) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    peaks = {m["method"]: m for m in memory}
    for fresh, reused in zip(speed["fresh"], speed["reused"], strict=True):
        m = peaks.get(fresh["method"])
        mem = f"{m['peak_mb']:.0f} | {m['peak_models']:.2f}" if m else "- | -"
        cells = " | ".join(f"{r['baseline_s']:.3f} | {r['method_s']:.3f} | {r['ratio']:.2f}"
                           for r in (fresh, reused))
        print(f"| {fresh['method']} | {cells} | {mem} |")
    print(f"\nSelf Positioning step {sp['sp_step_s'] * 1000:.1f} ms vs training step "
          f"{sp['train_step_s'] * 1000:.1f} ms ({sp['parameters']:,} parameters, batch "
          f"{sp['batch']}, 3 models): ratio {sp['ratio_sp_over_train']:.2f}")
    print(f"load average {load:.1f}; wall {result['wall_s']:.0f} s; written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

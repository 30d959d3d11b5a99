"""Benchmark: CUSA teacher features online vs from the teacher cache, per training step.

One process, one batch stream, three step variants timed round-robin (so machine noise
hits all of them alike):

- ``student``: the student step alone — mmret-tiny forward, the ``cusa`` objective
  (heads, CSA, USA, contrastive), backward, AdamW step — with teacher features that are
  already in memory (the cost floor);
- ``online``: the same plus both teachers run on the batch inside the step (the SSL image
  teacher of mmret.teachers on its preprocessed 64×64 input, all-MiniLM-L6-v2 on the raw
  captions, tokenisation included);
- ``cache``: the same plus :meth:`TeacherCache.lookup_images` / ``lookup_texts`` of the
  batch's ids and the copy to the device.

The dataset is a generated shapes benchmark (English captions); the image teacher is
trained for a few SimCLR steps (its quality does not change its cost). Writes the
``teacher-cache`` section of docs/benchmarks.md and tools/bench/results/teacher_cache.json.

    python tools/bench/bench_teacher_cache.py [--batch 64] [--steps 12] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from doc_sections import write_section  # tools/bench is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[2]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="image-caption pairs per step")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    parser.add_argument("--images", type=int, default=400, help="images in the generated data")
    parser.add_argument("--teacher-steps", type=int, default=5, help="SimCLR steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    import mmret
    from mmret.data.images import load_image
    from mmret.data.retrieval import load_karpathy
    from mmret.data.synthetic import generate, layout
    from mmret.teachers import (
        ImageTeacher,
        TeacherCache,
        TextTeacher,
        build_teacher_cache,
        cache_ids,
        dataset_fingerprint,
        train_image_teacher,
    )

    work = Path(tempfile.mkdtemp(prefix="bench_teacher_cache_"))
    generate(work / "shapes", num_images=args.images, seed=0, languages=("en",), progress=False)
    annotation = layout(work / "shapes").karpathy_json
    split = load_karpathy(annotation, work / "shapes", "train")
    train_image_teacher(split.image_paths, work / "teacher", steps=args.teacher_steps,
                        batch_size=64, progress=False)
    image_teacher = ImageTeacher.from_pretrained_dir(work / "teacher", device=device)
    text_teacher = TextTeacher("minilm", device=device, batch_size=args.batch)
    image_ids, caption_ids = cache_ids(split)
    fingerprint = dataset_fingerprint(annotation, "train")
    tic = time.perf_counter()
    cache_path = build_teacher_cache(
        image_teacher, text_teacher, list(zip(image_ids, split.image_paths, strict=True)),
        list(zip(caption_ids, split.captions, strict=True)), work / "cache.safetensors",
        fingerprint, batch_size=args.batch, progress=False,
    )  # fmt: skip
    build_s = time.perf_counter() - tic
    tic = time.perf_counter()
    cache = TeacherCache.load(cache_path, (image_teacher, text_teacher), fingerprint)
    load_s = time.perf_counter() - tic

    # batches: one caption per image, images in random order
    towers = mmret.create_towers("mmret-tiny")
    model = towers.model.to(device).train()
    objective = mmret.create_objective("cusa", embed_dim=128).to(device)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(objective.parameters()),
                                  lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    batches = []
    first_caption = {i: t for t, i in reversed(list(enumerate(split.text_to_image)))}
    for _ in range(4):
        index = torch.randperm(split.num_images, generator=generator)[: args.batch].tolist()
        pil = [load_image(split.image_paths[i]) for i in index]
        captions = [split.captions[first_caption[i]] for i in index]
        batches.append({
            "image": torch.stack([towers.eval_transform(p) for p in pil]),
            "text": towers.tokenizer(captions),
            "teacher_input": torch.stack([image_teacher.transform(p) for p in pil]),
            "captions": captions,
            "image_ids": [image_ids[i] for i in index],
            "caption_ids": [caption_ids[first_caption[i]] for i in index],
            "dense_ids": torch.tensor(index),
        })  # fmt: skip
    fixed = {
        "teacher_image_features": cache.lookup_images(batches[0]["image_ids"]).to(device),
        "teacher_text_features": cache.lookup_texts(batches[0]["caption_ids"]).to(device),
    }

    def teachers(variant: str, batch: dict) -> dict[str, torch.Tensor]:
        if variant == "student":
            return fixed
        if variant == "online":
            return {
                "teacher_image_features": image_teacher.encode(batch["teacher_input"]),
                "teacher_text_features": text_teacher.encode(batch["captions"]),
            }
        return {
            "teacher_image_features": cache.lookup_images(batch["image_ids"]).to(device),
            "teacher_text_features": cache.lookup_texts(batch["caption_ids"]).to(device),
        }

    def step(variant: str, batch: dict) -> float:
        _sync(device)
        tic = time.perf_counter()
        extra = teachers(variant, batch)
        out = model(image=batch["image"].to(device), text=batch["text"].to(device))
        losses = objective(image_features=out["image_features"],
                           text_features=out["text_features"],
                           image_ids=batch["dense_ids"].to(device), **extra)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        objective.post_step()
        _sync(device)
        return time.perf_counter() - tic

    def teachers_only(variant: str, batch: dict) -> float:
        _sync(device)
        tic = time.perf_counter()
        teachers(variant, batch)
        _sync(device)
        return time.perf_counter() - tic

    variants = ("student", "online", "cache")
    for variant in variants:  # warm-up
        step(variant, batches[0])
    times: dict[str, list[float]] = {v: [] for v in variants}
    alone: dict[str, list[float]] = {"online": [], "cache": []}
    for s in range(args.steps):
        batch = batches[s % len(batches)]
        for variant in variants:
            times[variant].append(step(variant, batch))
        alone["online"].append(teachers_only("online", batch))
        for _ in range(20):  # the lookup is short: many repeats for a stable median
            alone["cache"].append(teachers_only("cache", batch))
    median = {v: statistics.median(t) for v, t in times.items()}
    extra = {v: statistics.median(t) for v, t in alone.items()}
    base = median["student"]
    rows = [
        ("student", base, 0.0, 0.0),
        *[(v, median[v], extra[v], 100.0 * extra[v] / base) for v in ("online", "cache")],
    ]
    for v, sec, add, share in rows:
        print(f"{v:8s} step {1000 * sec:8.1f} ms, teacher features {1000 * add:8.2f} ms "
              f"= {share:6.2f} % of the student step")
    print(f"cache build {build_s:.1f} s; load {load_s:.3f} s")

    result = {
        "batch": args.batch, "steps": args.steps, "threads": args.threads,
        "device": str(device), "torch": torch.__version__,
        "median_step_s": median, "median_teacher_features_s": extra, "cache_build_s": build_s,
        "cache_load_s": load_s, "train_images": split.num_images,
        "train_captions": split.num_texts, "cache_bytes": cache_path.stat().st_size,
        "image_teacher": image_teacher.name, "text_teacher": text_teacher.name,
    }  # fmt: skip
    results = ROOT / "tools" / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"teacher_cache_{device.type}.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.no_doc:
        return
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {args.threads} torch threads")
    names = {"student": "student step alone (baseline)",
             "online": "+ online teachers (SSL CNN + MiniLM)",
             "cache": "+ teacher cache lookup"}
    body = [
        f"## CUSA teacher features: online vs cache ({device.type})",
        "",
        f"Command: `python tools/bench/bench_teacher_cache.py --batch {args.batch} "
        f"--steps {args.steps} --threads {args.threads} --device {args.device}`",
        "",
        f"- Machine: {machine}, torch {torch.__version__}.",
        f"- Step: mmret-tiny forward + `cusa` objective (heads, CSA, USA, contrastive) + "
        f"backward + AdamW, batch {args.batch} image-caption pairs of the shapes training "
        f"split; median over {args.steps} steps per variant, variants interleaved.",
        f"- Teachers: `{image_teacher.name}` (d = {image_teacher.dim}), "
        f"`{text_teacher.name}` (d = {text_teacher.dim}).",
        f"- Cache of {split.num_images} images + {split.num_texts} captions: built in "
        f"{build_s:.1f} s, {cache_path.stat().st_size / 2**20:.1f} MiB, loaded (with checksum "
        f"verification) in {1000 * load_s:.0f} ms.",
        "- Columns: median time of the whole step; median time of getting the batch's teacher "
        "features alone (online: both teachers' forward; cache: lookup of the ids + copy to "
        "the device), measured in the same loop; that time as a share of the student step. "
        "The share is the robust number: whole-step medians on a shared machine move by more "
        "than the cache's cost.",
        "",
        "| variant | ms per step | ms for teacher features | added to the student step |",
        "|---|---:|---:|---:|",
        *[f"| {names[v]} | {1000 * sec:.1f} | {1000 * add:.3f} | {share:.3f} % |"
          for v, sec, add, share in rows],
        "",
        "Target: the cache adds at most 10 % to the student step.",
    ]
    write_section(f"teacher-cache-{device.type}", "\n".join(body))
    print(f"wrote the teacher-cache-{device.type} section of docs/benchmarks.md")


if __name__ == "__main__":
    main()

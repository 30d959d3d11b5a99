"""``generate``: plan, render and write the synthetic shapes benchmark."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmret.data.synthetic import writers
from mmret.data.synthetic.languages import SUPPORTED_LANGUAGES, get_language
from mmret.data.synthetic.planner import GROUP_SIZE, DatasetPlan, plan_dataset
from mmret.data.synthetic.render import render_to_file
from mmret.data.synthetic.scene import CATEGORY_OF_TEXTURE

GENERATOR_VERSION = "1.0"
DEFAULT_SPLITS: Mapping[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
ALLOWED_SPLITS = ("train", "val", "test")


def _render_all(
    plan: DatasetPlan, root: Path, image_size: int, workers: int, progress: bool
) -> None:
    (root / writers.IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    jobs = [
        (im.scene, image_size, str(root / writers.image_relpath(im.name))) for im in plan.images
    ]
    bar = tqdm(total=len(jobs), desc="rendering shapes", unit="img", disable=not progress)
    results: Iterable[str]
    if workers <= 1:
        for job in jobs:
            render_to_file(job)
            bar.update()
    else:
        # fork is cheap and the worker only needs picklable scenes; spawn works too.
        ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with ctx.Pool(workers) as pool:
            results = pool.imap_unordered(render_to_file, jobs, chunksize=64)
            for _ in results:
                bar.update()
    bar.close()


def generate(
    out_dir: str | os.PathLike,
    num_images: int = 10000,
    image_size: int = 64,
    seed: int = 0,
    languages: Sequence[str] = SUPPORTED_LANGUAGES,
    splits: Mapping[str, float] = DEFAULT_SPLITS,
    workers: int | None = None,
    *,
    captions_per_image: int = 5,
    group_fraction: float = 0.6,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the shapes benchmark into ``out_dir`` and return its manifest.

    Args:
        out_dir: output folder; must be empty or absent unless ``overwrite``.
        num_images: total images over all splits (targets of edits included).
        image_size: side of the square PNG images in pixels (>= 16).
        seed: everything (scenes, captions, splits, pixels, JSON bytes) is a function of it.
        languages: caption languages, a subset of ``SUPPORTED_LANGUAGES``; must include "en".
        splits: split name (train/val/test) -> fraction summing to 1, or -> image count.
        workers: rendering processes (default: all CPUs); the output does not depend on it.
        captions_per_image: caption slots per image (parallel across languages).
        group_fraction: fraction of images in groups of 6 (base + 5 one-edit variants).
        overwrite: allow writing into a non-empty folder (existing files are replaced).
        progress: show a tqdm progress bar while rendering.
    """
    languages = tuple(dict.fromkeys(languages))
    for lang in languages:
        get_language(lang)
    if "en" not in languages:
        raise ValueError("languages must include 'en' (the Karpathy/ALBEF/CIRR files are English)")
    unknown = [s for s in splits if s not in ALLOWED_SPLITS]
    if unknown:
        raise ValueError(f"unknown split names {unknown}; allowed: {', '.join(ALLOWED_SPLITS)}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root} is not empty; pass overwrite=True (--overwrite) to reuse it")
    root.mkdir(parents=True, exist_ok=True)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))

    plan = plan_dataset(num_images, seed, splits, group_fraction, captions_per_image)
    _render_all(plan, root, image_size, workers, progress)
    captions = writers.CaptionTable(plan, languages)
    files = writers.write_karpathy(root, plan, captions)
    files += writers.write_albef(root, plan, captions)
    files += writers.write_iglue(root, plan, captions)
    files += writers.write_multi30k(root, plan, captions)
    files += writers.write_xtd(root, plan, captions)
    files += writers.write_cirr(root, plan, languages)
    files += writers.write_fashioniq(root, plan, languages)

    triplets = {s: sum(t.split == s for t in plan.triplets) for s in plan.split_counts}
    manifest = {
        "name": "shapes",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "image_size": image_size,
        "num_images": len(plan.images),
        "captions_per_image": captions_per_image,
        "group_size": GROUP_SIZE,
        "group_fraction": group_fraction,
        "languages": list(languages),
        "splits": {
            s: {"images": n, "groups": plan.num_groups[s], "triplets": triplets[s]}
            for s, n in plan.split_counts.items()
        },
        "fashioniq_categories": {
            cat: f"{tex} background" for tex, cat in CATEGORY_OF_TEXTURE.items()
        },
        "image_dir": writers.IMAGE_DIR,
        "files": sorted(files),
    }
    writers.write_json(root, "manifest.json", manifest, indent=1)
    return manifest

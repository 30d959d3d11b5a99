"""A small Karpathy-format data set laid out as users bring real data (COCO-style folders
``train2014/``, ``val2014/``, JPEG files of different sizes, ``cocoid`` ids, five captions
per image, some captions shared by two images), for the tests of real-data workflows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (200, 40, 30), "green": (40, 160, 60), "blue": (40, 70, 200),
           "yellow": (220, 200, 40), "purple": (130, 50, 160), "orange": (230, 120, 30)}
THINGS = ("boat", "kite", "bus", "cat", "clock", "umbrella")
ANNOTATION = "dataset_tiny.json"


def photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A JPEG-like picture: a smooth two-colour gradient with a blob and sensor noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (xs / w * rng.uniform(0.3, 1.0) + ys / h * rng.uniform(0.3, 1.0))[..., None] / 2
    pixels = a * (1 - t) + b * t
    cx, cy, r = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, rng.uniform(0.1, 0.3) * h
    blob = ((xs - cx) ** 2 + (ys - cy) ** 2) < r ** 2
    pixels[blob] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def captions_of(index: int) -> list[str]:
    """Five captions of image ``index``; images 2k and 2k+1 share their first caption."""
    colours = list(COLOURS)
    shared = f"A {colours[(index // 2) % 6]} {THINGS[(index // 2) % 6]} in a photo."
    own = [f"A {colours[(index + k) % 6]} {THINGS[(index * 5 + k) % 6]} number {index} "
           f"view {k}." for k in range(4)]
    return [shared] + own


def write_karpathy_photos(root: str | Path, n_train: int = 16, n_test: int = 6,
                          seed: int = 0) -> Path:
    """Write ``n_train`` training and ``n_test`` test photos under ``root`` with
    ``root/dataset_tiny.json`` (Karpathy format); returns the annotation path."""
    root = Path(root)
    images, sentid = [], 0
    sizes = [(96, 72), (80, 80), (64, 96), (120, 90)]
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        folder = "train2014" if split == "train" else "val2014"
        name = f"COCO_{folder}_{i:012d}.jpg"
        (root / folder).mkdir(parents=True, exist_ok=True)
        photo(seed * 1000 + i, sizes[i % len(sizes)]).save(root / folder / name, quality=88)
        sentences = []
        for text in captions_of(i):
            sentences.append({"raw": text, "tokens": text.lower().rstrip(".").split(),
                              "imgid": i, "sentid": sentid})
            sentid += 1
        images.append({"filepath": folder, "filename": name, "imgid": i, "cocoid": 100000 + i,
                       "split": split, "sentids": [s["sentid"] for s in sentences],
                       "sentences": sentences})
    path = root / ANNOTATION
    path.write_text(json.dumps({"images": images, "dataset": "tiny"}), encoding="utf-8")
    return path


def compose_train(*overrides: str):
    """The ``train`` config with mmret-tiny + CLIP on CPU, a short run, and ``overrides``."""
    from hydra import compose, initialize_config_dir

    from mmret.engine.config import conf_dir, register_configs

    register_configs()
    base = [
        "experiment=shapes_clip", "trainer.max_steps=3", "trainer.warmup_steps=1",
        "trainer.log_every=1", "trainer.num_workers=0", "trainer.device=cpu",
        "trainer.num_threads=1", "trainer.batch_size=4", "trainer.checkpoint_every=0",
        "trainer.lr=3e-4", "logger.progress_bar=false", "logger.plots=false",
        "eval.batch_size=16",
    ]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("train", overrides=[*base, *overrides])


def train_losses(run_dir: str | Path) -> list[float]:
    from mmret.engine.logging import read_metrics

    return [r["loss"] for r in read_metrics(Path(run_dir), "train")]

"""Datasets and loaders of the trainer: splits, an in-memory image cache, training pairs.

Images are either decoded per access (``PIL`` + the towers' transform) or, with
``data.cache_images``, decoded and transformed once into one FloatTensor[N, 3, H, W]
(a 64×64 benchmark of 10k images takes 0.5 GB) — decoding PNGs every step would
dominate a CPU training step of the tiny towers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from mmret.engine.config import ConfigError, DataConfig


@dataclass
class Split:
    """A retrieval split: N images and M captions; caption j describes image
    ``text_to_image[j]``. ``image_ids[i]`` is the dataset's id of image i."""

    image_paths: list[str]
    captions: list[str]
    text_to_image: torch.Tensor  # LongTensor[M]
    image_ids: list

    def __post_init__(self) -> None:
        self.text_to_image = torch.as_tensor(self.text_to_image, dtype=torch.long)
        if len(self.captions) != len(self.text_to_image):
            raise ValueError("captions and text_to_image must have the same length")

    def subset(self, max_images: int | None) -> Split:
        """The first ``max_images`` images and their captions."""
        if max_images is None or max_images >= len(self.image_paths):
            return self
        keep = self.text_to_image < max_images
        return Split(
            self.image_paths[:max_images],
            [c for c, k in zip(self.captions, keep.tolist(), strict=True) if k],
            self.text_to_image[keep],
            self.image_ids[:max_images],
        )


def load_split(cfg: DataConfig, split: str, root: Path) -> Split:
    """Load ``split`` of the configured dataset (``root`` already absolute)."""
    json_path = root / cfg.annotation
    if not json_path.is_file():
        raise ConfigError(f"data.annotation: {json_path} does not exist (data.root={cfg.root})")
    image_root = Path(cfg.image_root) if cfg.image_root else root
    if not image_root.is_absolute():
        image_root = root / image_root
    from mmret.data.retrieval import load_karpathy

    loaded = load_karpathy(str(json_path), str(image_root), split)
    result = Split(
        [str(p) for p in loaded.image_paths],
        list(loaded.captions),
        torch.as_tensor(loaded.text_to_image),
        list(loaded.image_ids),
    )
    limit = cfg.max_eval_images if split != cfg.train_split else cfg.max_train_images
    return result.subset(limit)


def ensure_dataset(cfg: DataConfig, root: Path) -> None:
    """Generate the synthetic benchmark into ``root`` when configured and missing."""
    if (root / cfg.annotation).is_file():
        return
    if not cfg.generate_if_missing:
        raise ConfigError(
            f"data.root: {root / cfg.annotation} not found; download the dataset there or set "
            "data.generate_if_missing=true for the synthetic benchmark"
        )
    from mmret.data.synthetic import generate  # type: ignore[attr-defined]

    root.mkdir(parents=True, exist_ok=True)
    generate(str(root), **dict(cfg.generate))
    if not (root / cfg.annotation).is_file():
        raise ConfigError(
            f"generated the synthetic benchmark in {root} but {cfg.annotation} is not there; "
            "check data.annotation"
        )


class ImageStore:
    """Images of a split as tensors: ``store[i] -> FloatTensor[3, H, W]``.

    ``cached=True`` applies ``transform`` to every image once (the transform must be
    deterministic); otherwise each access decodes the file and applies ``transform``.
    """

    def __init__(self, paths: Sequence[str], transform: Callable, cached: bool) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.cache: torch.Tensor | None = None
        if cached:
            first = self._load(0)
            self.cache = torch.empty((len(self.paths), *first.shape), dtype=first.dtype)
            self.cache[0] = first
            for i in range(1, len(self.paths)):
                self.cache[i] = self._load(i)

    def _load(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return self.transform(image.convert("RGB"))
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {path}") from None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.cache[index] if self.cache is not None else self._load(index)

    def batch(self, indices: Sequence[int] | slice) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[indices]
        rng = range(len(self))[indices] if isinstance(indices, slice) else indices
        return torch.stack([self._load(i) for i in rng])


class ImageCaptionPairs(Dataset):
    """Training pairs: one item per caption, ``{"image", "caption", "image_id"}``
    (``image_id`` = the image's index in the split, for multi-positive targets).

    With ``captions_per_image = K > 1`` an item is an image with K of its captions
    (consecutive captions, cycling when the image has fewer).

    Keys may be ``(index, seed)`` pairs (see
    :class:`~mmret.engine.sampler.ResumableBatchSampler` with ``with_seeds``): a random
    transform then runs under a generator seeded by ``seed``, which makes augmentation
    independent of worker assignment and of resuming.
    """

    def __init__(self, split: Split, images: ImageStore, captions_per_image: int = 1) -> None:
        self.split = split
        self.images = images
        self.k = captions_per_image
        if self.k == 1:
            self.items = list(range(len(split.captions)))
        else:
            self.items = list(range(len(split.image_paths)))
            owners = split.text_to_image.tolist()
            self.captions_of: list[list[int]] = [[] for _ in split.image_paths]
            for j, i in enumerate(owners):
                self.captions_of[i].append(j)

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, index: int, seed: int | None) -> torch.Tensor:
        if seed is None or self.images.cache is not None:
            return self.images[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            state = random.getstate()
            random.seed(seed)
            try:
                return self.images[index]
            finally:
                random.setstate(state)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        if self.k == 1:
            image_index = int(self.split.text_to_image[index])
            caption: Any = self.split.captions[index]
        else:
            image_index = index
            own = self.captions_of[index]
            caption = [self.split.captions[own[c % len(own)]] for c in range(self.k)]
        return {
            "image": self._image(image_index, seed),
            "caption": caption,
            "image_id": image_index,
        }

"""Datasets and loaders of the trainer: splits, an in-memory image cache, training pairs,
and the multilingual training sets (1-to-K and random-language) of ``data.train_mode``.

Images are either decoded per access (``PIL`` + the towers' transform) or, with
``data.cache_images``, decoded and transformed once into one FloatTensor[N, 3, H, W]
(a 64×64 benchmark of 10k images takes 0.5 GB) — decoding PNGs every step would
dominate a CPU training step of the tiny towers.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from mmret.engine.config import ConfigError, DataConfig, TrainMode

if TYPE_CHECKING:
    from mmret.data.multilingual import MultilingualSplit


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


@contextlib.contextmanager
def seeded_random(seed: int) -> Iterator[None]:
    """Run the body with torch's CPU RNG and Python's ``random`` seeded by ``seed``, then
    restore both (a random image transform becomes a function of ``seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = random.getstate()
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


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
        with seeded_random(seed):
            return self.images[index]

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


# --------------------------------------------------------------------------- multilingual


def _under(root: Path, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else root / candidate


def load_multilingual_train(cfg: DataConfig, root: Path) -> MultilingualSplit:
    """The parallel training captions of ``data.train_source`` in ``data.train_languages``
    (``root`` = the absolute ``data.root``), limited to ``data.max_train_images`` images."""
    from mmret.data.multilingual import load_iglue, load_multi30k

    source = cfg.train_source
    loader = load_iglue if source.format == "iglue" else load_multi30k
    try:
        msplit = loader(
            _under(root, source.root), list(cfg.train_languages), source.split,
            image_root=_under(root, source.image_root),
        )
    except FileNotFoundError as exc:
        raise ConfigError(
            f"data.train_source ({source.format}, root={source.root}, split={source.split}, "
            f"languages {list(cfg.train_languages)}): {exc}"
        ) from None
    return msplit.subset(cfg.max_train_images)


class MultilingualTrainItems(Dataset):
    """Training items of ``data.train_mode`` one_to_k / random_language in the collate's
    sample format (:mod:`mmret.data.collate`).

    Wraps an :class:`~mmret.data.multilingual.OneToKDataset` (item: ``caption`` = the K
    captions in ``langs`` order, ``None`` where the image has no caption in that language,
    which the collate turns into ``text_mask`` False) or a
    :class:`~mmret.data.multilingual.RandomLanguageDataset` (item: ``caption`` = one caption,
    ``langs`` = its language). Keys are ``(index, sample_seed)`` pairs from
    :class:`~mmret.engine.sampler.ResumableBatchSampler`: the caption / language draw is a
    function of ``sample_seed`` (hence of run seed, epoch and index only), and so is a
    random image transform of an uncached :class:`ImageStore`.
    """

    def __init__(self, inner: Dataset, images: ImageStore) -> None:
        from mmret.data.multilingual import OneToKDataset, RandomLanguageDataset

        if not isinstance(inner, OneToKDataset | RandomLanguageDataset):
            raise TypeError(
                f"expected a OneToKDataset or RandomLanguageDataset, got {type(inner).__name__}"
            )
        self.inner = inner
        self.images = images
        self.one_to_k = isinstance(inner, OneToKDataset)

    @property
    def langs(self) -> list[str]:
        return list(self.inner.langs)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        seed = key[1] if isinstance(key, tuple) else None
        if seed is None or self.images.cache is not None:
            item = self.inner[key]
        else:
            with seeded_random(seed):
                item = self.inner[key]
        if self.one_to_k:
            present = item["caption_mask"].tolist()
            caption: Any = [
                c if ok else None for c, ok in zip(item["captions"], present, strict=True)
            ]
            return {"image": item["image"], "caption": caption, "image_id": item["image_id"]}
        return {
            "image": item["image"],
            "caption": item["caption"],
            "image_id": item["image_id"],
            "langs": item["lang"],
        }


def build_train_dataset(
    cfg: DataConfig, root: Path, train_transform: Callable, eval_transform: Callable,
    seed: int = 0,
) -> Dataset:
    """The training dataset of ``data.train_mode`` (``root`` = the absolute ``data.root``).

    Images are cached in memory (``data.cache_images``) only when the training transform
    is the deterministic evaluation transform.
    """
    cached = cfg.cache_images and train_transform is eval_transform
    if cfg.train_mode == TrainMode.pairs:
        split = load_split(cfg, cfg.train_split, root)
        images = ImageStore(split.image_paths, train_transform, cached=cached)
        return ImageCaptionPairs(split, images, cfg.captions_per_image)
    from mmret.data.multilingual import OneToKDataset, RandomLanguageDataset

    msplit = load_multilingual_train(cfg, root)
    images = ImageStore(msplit.image_paths, train_transform, cached=cached)
    kind = OneToKDataset if cfg.train_mode == TrainMode.one_to_k else RandomLanguageDataset
    inner = kind(msplit, list(cfg.train_languages), seed=seed, images=images)
    return MultilingualTrainItems(inner, images)

"""Datasets as config-instantiable sources: every loader of :mod:`mmret.data` behind a
function that a ``conf/data/*.yaml`` names with ``_target_``.

A data config names one training source (``data.train``) and one evaluation source per
evaluation protocol (``data.eval.<protocol>``)::

    train:
      _target_: mmret.data.sources.karpathy_pairs
      annotation: karpathy/dataset_shapes.json
    eval:
      image_text:
        _target_: mmret.data.sources.karpathy_eval
        annotation: karpathy/dataset_shapes.json

Besides the keys of its node, a source function receives the *context* arguments it
declares in its signature (and only those): ``root`` (the absolute ``data.root``),
``image_transform`` / ``eval_transform`` (the towers' transforms), ``cache_images``
(``data.cache_images``), ``seed`` (the run seed), ``tokenizer``, and for evaluation
sources ``split`` (``eval.split`` or ``eval.during_training_split``). A new dataset is a
new function (in any importable module) plus a config; nothing in the engine changes.

Training sources return map-style datasets whose samples follow the collate's sample
format (:mod:`mmret.data.collate`), that accept the sampler's ``(index, seed)`` keys, and
that state ``captions_per_sample`` (K caption rows per sample) and ``sample_fields``.
Evaluation sources return the protocol's evaluation set (:class:`ImageTextEvalSet`,
:class:`MultilingualEvalSet`, ...).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mmret.data.images import ImageStore
from mmret.data.multilingual import (
    MultilingualSplit,
    OneToKDataset,
    RandomLanguageDataset,
    load_iglue,
    load_multi30k,
    load_xtd,
)
from mmret.data.retrieval import ImageTextTrainDataset, RetrievalSplit, load_albef, load_karpathy

ImageTransform = Callable[[Any], Any]


def under(root: str | os.PathLike, path: str | os.PathLike | None) -> Path:
    """``path`` resolved against ``root`` (absolute paths stay as they are; ``None``:
    ``root`` itself)."""
    if path is None:
        return Path(root)
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(root) / candidate


def training_images(
    paths: Sequence[str], image_transform: ImageTransform, eval_transform: ImageTransform | None,
    cache_images: bool,
) -> ImageStore:
    """The training images; cached in memory only when asked for *and* the training
    transform is the deterministic evaluation transform (a random augmentation must run
    per access)."""
    cached = bool(cache_images) and image_transform is eval_transform
    return ImageStore(paths, image_transform, cached=cached)


# --------------------------------------------------------------------------- image-text


def _retrieval_split(
    root: Path, annotation: str, split: str, image_root: str | None, fmt: str
) -> RetrievalSplit:
    path = under(root, annotation)
    images = under(root, image_root)
    if fmt == "karpathy":
        return load_karpathy(path, images, split)
    if fmt == "albef":
        return load_albef(path, images)
    raise ValueError(f"format: expected 'karpathy' or 'albef', got {fmt!r}")


def karpathy_pairs(
    root: str | os.PathLike,
    annotation: str,
    image_transform: ImageTransform,
    eval_transform: ImageTransform | None = None,
    split: str = "train",
    image_root: str | None = None,
    captions_per_image: int = 1,
    max_images: int | None = None,
    cache_images: bool = False,
    format: str = "karpathy",
) -> ImageTextTrainDataset:
    """Image–caption training samples from a Karpathy-format JSON (COCO, Flickr30K, shapes)
    or an ALBEF-style JSON (``format: albef``; ``split`` is then the file's own content).

    ``captions_per_image`` = K > 1 gives one sample per image with K of its captions (for
    objectives with several positives per image); ``max_images`` keeps the first images.
    """
    split_data = _retrieval_split(Path(root), annotation, split, image_root, format)
    split_data = split_data.subset(max_images)
    images = training_images(split_data.image_paths, image_transform, eval_transform, cache_images)
    dataset = ImageTextTrainDataset(split_data, captions_per_image=captions_per_image,
                                    images=images)
    # where the samples come from (teacher-feature caches check their fingerprint on it)
    dataset.provenance = {
        "annotation": str(under(root, annotation)), "split": split, "format": format,
        "restval_as_train": format == "karpathy" and split == "train",
    }
    return dataset


@dataclass
class ImageTextEvalSet:
    """A split with its images, for the ``image_text`` protocol."""

    split: RetrievalSplit
    images: ImageStore


def karpathy_eval(
    root: str | os.PathLike,
    annotation: str,
    split: str,
    eval_transform: ImageTransform,
    image_root: str | None = None,
    max_images: int | None = None,
    cache_images: bool = False,
    format: str = "karpathy",
) -> ImageTextEvalSet:
    """Evaluation split ``split`` of a Karpathy-format (or ``format: albef``) annotation."""
    split_data = _retrieval_split(Path(root), annotation, split, image_root, format)
    split_data = split_data.subset(max_images)
    return ImageTextEvalSet(split_data, ImageStore(split_data.image_paths, eval_transform,
                                                   cached=cache_images))


# --------------------------------------------------------------------------- multilingual

MULTILINGUAL_LOADERS = {"iglue": load_iglue, "multi30k": load_multi30k, "xtd": load_xtd}


def load_multilingual(
    root: str | os.PathLike, languages: Sequence[str], split: str, format: str = "iglue",
    source: str = "iglue", image_root: str | None = ".",
) -> MultilingualSplit:
    """A parallel multilingual split in ``format`` (``iglue``: ``{source}/{lang}/{split}.jsonl``;
    ``multi30k``: ``{source}/{split}.{lang}`` + ``{split}_images.txt``; ``xtd``: XTD10's
    per-language files, no split), paths relative to ``root``."""
    loader = MULTILINGUAL_LOADERS.get(format)
    if loader is None:
        raise ValueError(f"format: expected one of {sorted(MULTILINGUAL_LOADERS)}, got {format!r}")
    if not languages:
        raise ValueError("languages: expected at least one language")
    if len(set(languages)) != len(languages):
        raise ValueError(f"languages: duplicate languages in {list(languages)}")
    kwargs: dict[str, Any] = {"image_root": under(root, image_root)}
    if format != "xtd":
        kwargs["split"] = split
    return loader(under(root, source), list(languages), **kwargs)


MULTILINGUAL_MODES = ("one_to_k", "random_language")


def multilingual_train(
    root: str | os.PathLike,
    languages: Sequence[str],
    image_transform: ImageTransform,
    eval_transform: ImageTransform | None = None,
    mode: str = "one_to_k",
    format: str = "iglue",
    source: str = "iglue",
    image_root: str | None = ".",
    split: str = "train",
    max_images: int | None = None,
    cache_images: bool = False,
    seed: int = 0,
) -> Dataset:
    """Parallel multilingual training samples.

    - ``mode: one_to_k``: one sample per image with its captions in every language of
      ``languages`` (K = their number, missing translations masked): the 1-to-K objective
      (docs/methods.md §3);
    - ``mode: random_language``: one caption per image in a language drawn uniformly per
      image and step (the "1-to-1" baseline; ``languages: [en]`` is English-only training).
    """
    if mode not in MULTILINGUAL_MODES:
        raise ValueError(f"mode: expected one of {MULTILINGUAL_MODES}, got {mode!r}")
    try:
        msplit = load_multilingual(root, languages, split, format, source, image_root)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"multilingual training data ({format}, source={source}, split={split}, "
            f"languages {list(languages)}): {exc}"
        ) from None
    msplit = msplit.subset(max_images)
    images = training_images(msplit.image_paths, image_transform, eval_transform, cache_images)
    kind = OneToKDataset if mode == "one_to_k" else RandomLanguageDataset
    return kind(msplit, list(languages), seed=seed, images=images)


@dataclass
class MultilingualEvalSet:
    """A parallel multilingual split with its images, for the ``cross_lingual`` protocol."""

    split: MultilingualSplit
    images: ImageStore


def multilingual_eval(
    root: str | os.PathLike,
    languages: Sequence[str],
    split: str,
    eval_transform: ImageTransform,
    format: str = "iglue",
    source: str = "iglue",
    image_root: str | None = ".",
    max_images: int | None = None,
    cache_images: bool = False,
) -> MultilingualEvalSet:
    """Cross-lingual evaluation split (IGLUE, Multi30K or XTD10 format)."""
    msplit = load_multilingual(root, languages, split, format, source, image_root)
    msplit = msplit.subset(max_images)
    return MultilingualEvalSet(msplit, ImageStore(msplit.image_paths, eval_transform,
                                                  cached=cache_images))

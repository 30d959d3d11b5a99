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

The annotation formats the sources read (their ``format`` key) are registries: image-text
formats (:data:`RETRIEVAL_FORMATS`: ``karpathy``, ``albef``) and multilingual ones
(:data:`MULTILINGUAL_FORMATS`: ``iglue``, ``multi30k``, ``xtd``); a plugin adds its own
with :func:`register_retrieval_format` / :func:`register_multilingual_format`
(:mod:`mmret.plugins`), and ``karpathy_pairs``, ``karpathy_eval``, the multilingual
sources and ``mmret-shards`` read it like a built-in one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mmret.data.faults import ErrorPolicy, drop_images, scan_images, skip_during_training
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
from mmret.registry import Registry

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


# --------------------------------------------------------------------------- formats

#: ``loader(annotation: Path, image_root: Path, split: str, on_error) -> RetrievalSplit``
#: by ``format`` name (``karpathy_pairs``, ``karpathy_eval``, the unimodal sources and
#: ``mmret-shards`` read image-caption data through it)
RETRIEVAL_FORMATS: Registry[Callable[..., RetrievalSplit]] = Registry("image-text data format")

#: ``loader(source: Path, languages: list[str], split: str | None, image_root: Path,
#: on_error) -> MultilingualSplit`` by ``format`` name (``split`` is ``None`` for a format
#: without splits, such as ``xtd``)
MULTILINGUAL_FORMATS: Registry[Callable[..., MultilingualSplit]] = Registry(
    "multilingual data format")


def register_retrieval_format(name: str) -> Callable[[Callable[..., RetrievalSplit]],
                                                     Callable[..., RetrievalSplit]]:
    """Decorator: register ``loader(annotation, image_root, split, on_error) ->
    RetrievalSplit`` as image-caption ``format: name`` (paths already resolved against
    ``data.root``; ``on_error`` is an :class:`~mmret.data.faults.ErrorPolicy` or
    ``"raise"``/``"skip"``)."""
    return RETRIEVAL_FORMATS.register(name)


def register_multilingual_format(name: str) -> Callable[[Callable[..., MultilingualSplit]],
                                                        Callable[..., MultilingualSplit]]:
    """Decorator: register ``loader(source, languages, split, image_root, on_error) ->
    MultilingualSplit`` as multilingual ``format: name``."""
    return MULTILINGUAL_FORMATS.register(name)


def format_loader(registry: Registry[Any], fmt: str) -> Any:
    """The loader registered as ``fmt``; an unknown format raises ``ValueError`` naming
    the ``format`` key and the known formats."""
    if not isinstance(fmt, str) or fmt not in registry:
        raise ValueError(f"format: expected one of {registry.names()}, got {fmt!r}")
    return registry.get(fmt)


@register_retrieval_format("karpathy")
def _karpathy_format(annotation: Path, image_root: Path, split: str,
                     on_error: str | ErrorPolicy = "raise") -> RetrievalSplit:
    """Karpathy's ``dataset_*.json`` (COCO, Flickr30K, shapes): split ``split``."""
    return load_karpathy(annotation, image_root, split, on_error=on_error)


@register_retrieval_format("albef")
def _albef_format(annotation: Path, image_root: Path, split: str,
                  on_error: str | ErrorPolicy = "raise") -> RetrievalSplit:
    """An ALBEF-style JSON list (the file is the split: ``split`` is not used)."""
    return load_albef(annotation, image_root, on_error=on_error)


def _retrieval_split(
    root: Path, annotation: str, split: str, image_root: str | None, fmt: str,
    on_error: str | ErrorPolicy = "raise",
) -> RetrievalSplit:
    loader = format_loader(RETRIEVAL_FORMATS, fmt)
    return loader(under(root, annotation), under(root, image_root), split, on_error=on_error)


def checked_split(split: Any, check_images: str, policy: ErrorPolicy) -> Any:
    """``split`` after the up-front image check (:func:`~mmret.data.faults.scan_images`):
    with ``on_error=skip`` the failing images and their captions are left out."""
    return drop_images(split, scan_images(split.image_paths, check_images, policy))


def with_skipped(dataset: Any, policy: ErrorPolicy, runtime_skips_dir: str | None = None) -> Any:
    """``dataset`` carrying ``skipped``: the records the policy left out (for the run's
    ``skipped.jsonl``); with ``skip`` also an image that fails to load during training is
    skipped and listed (:class:`~mmret.data.faults.SkippingDataset`) in
    ``runtime_skips_dir`` (the engine passes ``<run>/skipped.d``; default: a temporary
    folder)."""
    dataset.skipped = list(policy.skipped)
    return skip_during_training(dataset, policy, runtime_skips_dir)


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
    on_error: str = "raise",
    check_images: str = "exists",
    runtime_skips_dir: str | None = None,
) -> ImageTextTrainDataset:
    """Image–caption training samples from a Karpathy-format JSON (COCO, Flickr30K, shapes)
    or an ALBEF-style JSON (``format: albef``; ``split`` is then the file's own content).

    ``captions_per_image`` = K > 1 gives one sample per image with K of its captions (for
    objectives with several positives per image); ``max_images`` keeps the first images.
    ``on_error`` (``data.on_error``) and ``check_images``: :mod:`mmret.data.faults`.
    """
    policy = ErrorPolicy(on_error)
    split_data = _retrieval_split(Path(root), annotation, split, image_root, format, policy)
    split_data = checked_split(split_data.subset(max_images), check_images, policy)
    images = training_images(split_data.image_paths, image_transform, eval_transform, cache_images)
    dataset = ImageTextTrainDataset(split_data, captions_per_image=captions_per_image,
                                    images=images)
    # where the samples come from (teacher-feature caches check their fingerprint on it)
    dataset.provenance = {
        "annotation": str(under(root, annotation)), "split": split, "format": format,
        "restval_as_train": format == "karpathy" and split == "train",
    }
    return with_skipped(dataset, policy, runtime_skips_dir)


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
    check_images: str = "exists",
) -> ImageTextEvalSet:
    """Evaluation split ``split`` of a Karpathy-format (or ``format: albef``) annotation.
    Bad records and images always raise (a benchmark is not evaluated on part of itself)."""
    split_data = _retrieval_split(Path(root), annotation, split, image_root, format)
    split_data = checked_split(split_data.subset(max_images), check_images, ErrorPolicy())
    return ImageTextEvalSet(split_data, ImageStore(split_data.image_paths, eval_transform,
                                                   cached=cache_images))


# --------------------------------------------------------------------------- multilingual

@register_multilingual_format("iglue")
def _iglue_format(source: Path, languages: list[str], split: str | None, image_root: Path,
                  on_error: str | ErrorPolicy = "raise") -> MultilingualSplit:
    """IGLUE's layout: ``{source}/{lang}/{split}.jsonl``."""
    return load_iglue(source, languages, split=split, image_root=image_root, on_error=on_error)


@register_multilingual_format("multi30k")
def _multi30k_format(source: Path, languages: list[str], split: str | None, image_root: Path,
                     on_error: str | ErrorPolicy = "raise") -> MultilingualSplit:
    """Multi30K's layout: ``{source}/{split}.{lang}`` + ``{split}_images.txt``."""
    return load_multi30k(source, languages, split=split, image_root=image_root,
                         on_error=on_error)


@register_multilingual_format("xtd")
def _xtd_format(source: Path, languages: list[str], split: str | None, image_root: Path,
                on_error: str | ErrorPolicy = "raise") -> MultilingualSplit:
    """XTD10's per-language files (one test set: ``split`` is not used)."""
    return load_xtd(source, languages, image_root=image_root, on_error=on_error)


def load_multilingual(
    root: str | os.PathLike, languages: Sequence[str], split: str, format: str = "iglue",
    source: str = "iglue", image_root: str | None = ".", on_error: str | ErrorPolicy = "raise",
) -> MultilingualSplit:
    """A parallel multilingual split in ``format`` (``iglue``: ``{source}/{lang}/{split}.jsonl``;
    ``multi30k``: ``{source}/{split}.{lang}`` + ``{split}_images.txt``; ``xtd``: XTD10's
    per-language files, no split), paths relative to ``root``."""
    loader = format_loader(MULTILINGUAL_FORMATS, format)
    if not languages:
        raise ValueError("languages: expected at least one language")
    if len(set(languages)) != len(languages):
        raise ValueError(f"languages: duplicate languages in {list(languages)}")
    return loader(under(root, source), list(languages), split, under(root, image_root),
                  on_error=on_error)


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
    on_error: str = "raise",
    check_images: str = "exists",
    runtime_skips_dir: str | None = None,
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
    policy = ErrorPolicy(on_error)
    try:
        msplit = load_multilingual(root, languages, split, format, source, image_root, policy)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"multilingual training data ({format}, source={source}, split={split}, "
            f"languages {list(languages)}): {exc}"
        ) from None
    msplit = checked_split(msplit.subset(max_images), check_images, policy)
    images = training_images(msplit.image_paths, image_transform, eval_transform, cache_images)
    kind = OneToKDataset if mode == "one_to_k" else RandomLanguageDataset
    return with_skipped(kind(msplit, list(languages), seed=seed, images=images), policy,
                        runtime_skips_dir)


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
    check_images: str = "exists",
) -> MultilingualEvalSet:
    """Cross-lingual evaluation split (IGLUE, Multi30K or XTD10 format); bad records and
    images always raise."""
    msplit = load_multilingual(root, languages, split, format, source, image_root)
    msplit = checked_split(msplit.subset(max_images), check_images, ErrorPolicy())
    return MultilingualEvalSet(msplit, ImageStore(msplit.image_paths, eval_transform,
                                                  cached=cache_images))

"""Multilingual image-text retrieval: IGLUE JSONL, Multi30K and XTD10 loaders, and the
training datasets for 1-to-K contrastive learning and random-language 1-to-1 training.

All loaders return a :class:`MultilingualSplit`: one shared image list and, per language,
its captions and their image indices, so that every language is evaluated on the same
image set (METHODS.md section 7, cross-lingual protocol).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from mmret.data.errors import DatasetFormatError, get_field, get_string_list, read_jsonl, read_lines
from mmret.data.images import ImageStore, ImageTransform, split_key
from mmret.data.retrieval import RetrievalSplit, Tokenizer


@dataclass(frozen=True, repr=False)
class MultilingualSplit:
    """Images shared by all languages plus per-language captions.

    Attributes:
        image_paths: path of image ``i``, length N.
        captions: ``captions[lang][t]`` = caption ``t`` in ``lang``.
        text_to_image: ``text_to_image[lang][t]`` = image index of ``captions[lang][t]``.
        image_ids: the dataset's id of image ``i`` (defaults to ``0..N-1``).
        missing: ``missing[lang]`` = ids of images without any caption in ``lang``
            (only languages with missing images appear).
    """

    image_paths: list[str]
    captions: dict[str, list[str]]
    text_to_image: dict[str, list[int]]
    image_ids: list = field(default_factory=list)
    missing: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.captions) != set(self.text_to_image):
            raise ValueError(
                f"captions languages {sorted(self.captions)} differ from text_to_image languages "
                f"{sorted(self.text_to_image)}"
            )
        if not self.image_ids:
            object.__setattr__(self, "image_ids", list(range(len(self.image_paths))))
        for lang in self.captions:
            self.for_language(lang)  # validates lengths and index ranges

    @property
    def languages(self) -> list[str]:
        return list(self.captions)

    @property
    def num_images(self) -> int:
        return len(self.image_paths)

    def for_language(self, lang: str) -> RetrievalSplit:
        """The split of one language over the shared image list (images without a caption
        in ``lang`` stay in the gallery)."""
        if lang not in self.captions:
            raise KeyError(f"language {lang!r} not in this split; available: {self.languages}")
        return RetrievalSplit(
            self.image_paths, self.captions[lang], self.text_to_image[lang], self.image_ids
        )

    def subset(self, max_images: int | None) -> MultilingualSplit:
        """The first ``max_images`` images and their captions in every language
        (``None`` or a number ≥ N: this split)."""
        if max_images is None or max_images >= self.num_images:
            return self
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
        captions: dict[str, list[str]] = {}
        text_to_image: dict[str, list[int]] = {}
        for lang in self.captions:
            pairs = [
                (c, i)
                for c, i in zip(self.captions[lang], self.text_to_image[lang], strict=True)
                if i < max_images
            ]
            captions[lang] = [c for c, _ in pairs]
            text_to_image[lang] = [i for _, i in pairs]
        kept = set(self.image_ids[:max_images])
        missing = {
            lang: [i for i in ids if i in kept]
            for lang, ids in self.missing.items()
            if any(i in kept for i in ids)
        }
        return MultilingualSplit(
            self.image_paths[:max_images], captions, text_to_image,
            self.image_ids[:max_images], missing,
        )

    def captions_by_image(self, lang: str) -> list[list[int]]:
        """For each image the indices of its captions in ``lang``."""
        return self.for_language(lang).image_to_texts()

    def __repr__(self) -> str:
        counts = {lang: len(c) for lang, c in self.captions.items()}
        return f"MultilingualSplit(num_images={self.num_images}, captions={counts})"


def load_iglue(
    root: str | os.PathLike,
    langs: Sequence[str],
    split: str = "test",
    *,
    image_root: str | os.PathLike | None = None,
    intersection: bool = False,
) -> MultilingualSplit:
    """Load IGLUE-style ``{root}/{lang}/{split}.jsonl`` files, aligned by ``id``.

    Each line is ``{"id", "img_path", "sentences": [str, ...]}``; image paths are
    ``image_root/img_path`` (``image_root`` defaults to ``root``). Images are ordered by first
    appearance over the languages in the order given. An id missing in some language is
    reported with a ``UserWarning`` and recorded in ``split.missing``; with
    ``intersection=True`` only ids present in every language are kept. The same id with
    different ``img_path`` values in two languages is an error.
    """
    if not langs:
        raise ValueError("langs must name at least one language")
    image_root = root if image_root is None else image_root
    order: list = []
    img_path_of: dict = {}
    per_lang: dict[str, dict[Any, list[str]]] = {}
    source_of: dict = {}
    for lang in langs:
        path = Path(root) / lang / f"{split}.jsonl"
        sentences_of: dict[Any, list[str]] = {}
        for number, record in read_jsonl(path, f"IGLUE {lang} {split} file"):
            image_id = get_field(record, "id", (str, int), path, line=number)
            img_path = get_field(record, "img_path", str, path, line=number)
            sentences = get_string_list(record, "sentences", path, line=number, allow_string=True)
            if image_id in sentences_of:
                raise DatasetFormatError(
                    path, f"duplicate id {image_id!r}", line=number, field="id"
                )
            if image_id in img_path_of and img_path_of[image_id] != img_path:
                raise DatasetFormatError(
                    path,
                    f"id {image_id!r} has img_path {img_path!r} here but "
                    f"{img_path_of[image_id]!r} in {source_of[image_id]}",
                    line=number,
                    field="img_path",
                )
            if image_id not in img_path_of:
                img_path_of[image_id] = img_path
                source_of[image_id] = path
                order.append(image_id)
            sentences_of[image_id] = [s.strip() for s in sentences if s.strip()]
        per_lang[lang] = sentences_of

    missing = {
        lang: [i for i in order if i not in per_lang[lang]]
        for lang in langs
        if len(per_lang[lang]) < len(order)
    }
    if missing:
        summary = ", ".join(f"{lang}: {len(ids)} (e.g. {ids[:3]})" for lang, ids in missing.items())
        action = "dropped (intersection=True)" if intersection else "kept without captions"
        warnings.warn(
            f"IGLUE {split}: images missing in some languages, {action}: {summary}", stacklevel=2
        )
    if intersection:
        order = [i for i in order if all(i in per_lang[lang] for lang in langs)]
    index_of = {image_id: k for k, image_id in enumerate(order)}
    captions: dict[str, list[str]] = {}
    text_to_image: dict[str, list[int]] = {}
    for lang in langs:
        captions[lang], text_to_image[lang] = [], []
        for image_id, sentences in per_lang[lang].items():
            if image_id not in index_of:
                continue
            captions[lang] += sentences
            text_to_image[lang] += [index_of[image_id]] * len(sentences)
    paths = [os.path.join(image_root, img_path_of[i]) for i in order]
    return MultilingualSplit(paths, captions, text_to_image, list(order), missing)


def _line_aligned(
    names_file: Path, caption_files: dict[str, Path], image_root: str | os.PathLike, what: str
) -> MultilingualSplit:
    """Captions, one per line, aligned line by line with an image-name list (a repeated
    name is the same image, so an image may have several captions per language)."""
    names = read_lines(names_file, f"{what} image list")
    index_of: dict[str, int] = {}
    for name in names:
        index_of.setdefault(name, len(index_of))
    captions: dict[str, list[str]] = {}
    text_to_image: dict[str, list[int]] = {}
    for lang, path in caption_files.items():
        lines = read_lines(path, f"{what} {lang} captions")
        if len(lines) != len(names):
            raise DatasetFormatError(
                path, f"has {len(lines)} captions but {names_file} lists {len(names)} images"
            )
        captions[lang] = lines
        text_to_image[lang] = [index_of[name] for name in names]
    paths = [os.path.join(image_root, name) for name in index_of]
    return MultilingualSplit(paths, captions, text_to_image, list(index_of))


def load_multi30k(
    root: str | os.PathLike,
    langs: Sequence[str],
    split: str = "test",
    *,
    image_root: str | os.PathLike | None = None,
) -> MultilingualSplit:
    """Load Multi30K: ``{root}/{split}.{lang}`` (one caption per line) aligned with
    ``{root}/{split}_images.txt`` (one image file name per line; paths
    ``image_root/name``, ``image_root`` defaulting to ``root``)."""
    if not langs:
        raise ValueError("langs must name at least one language")
    root = Path(root)
    files = {lang: root / f"{split}.{lang}" for lang in langs}
    return _line_aligned(
        root / f"{split}_images.txt", files, root if image_root is None else image_root, "Multi30K"
    )


def load_xtd(
    root: str | os.PathLike,
    langs: Sequence[str],
    *,
    image_root: str | os.PathLike | None = None,
) -> MultilingualSplit:
    """Load XTD10: ``{root}/test_1kcaptions_{lang}.txt`` aligned with
    ``{root}/test_image_names.txt`` (paths ``image_root/name``, default ``root``)."""
    if not langs:
        raise ValueError("langs must name at least one language")
    root = Path(root)
    files = {lang: root / f"test_1kcaptions_{lang}.txt" for lang in langs}
    return _line_aligned(
        root / "test_image_names.txt", files, root if image_root is None else image_root, "XTD"
    )


def _check_langs(msplit: MultilingualSplit, langs: Sequence[str]) -> list[str]:
    langs = list(langs)
    if not langs:
        raise ValueError("langs must name at least one language")
    if len(set(langs)) != len(langs):
        raise ValueError(f"langs contains duplicates: {langs}")
    unknown = [lang for lang in langs if lang not in msplit.captions]
    if unknown:
        raise KeyError(f"languages {unknown} not in the split; available: {msplit.languages}")
    return langs


Key = int | tuple[int, int]


class _EpochSeeded(Dataset):
    """Shared machinery: per-language caption lists per image and a per-(seed, epoch, index)
    random generator, so every draw is reproducible and independent of worker order.

    Items are addressed by ``index`` or by an ``(index, sample_seed)`` pair, as yielded by
    :class:`~mmret.engine.sampler.ResumableBatchSampler` with ``with_seeds=True``
    (``sample_seed`` is a function of the run seed, the epoch and the index only). With a
    pair the draw uses ``sample_seed`` instead of ``(seed, epoch)``, so the trainer needs no
    :meth:`set_epoch` call and resumed / distributed runs draw exactly what an uninterrupted
    single-process run draws.

    ``images`` (optional): an :class:`~mmret.data.images.ImageStore` aligned with
    ``msplit.image_paths`` (e.g. cached in memory); default: decode each file with
    ``transform`` (a random transform is seeded by ``sample_seed``).
    """

    def __init__(
        self,
        msplit: MultilingualSplit,
        langs: Sequence[str],
        transform: ImageTransform | None = None,
        seed: int = 0,
        tokenizer: Tokenizer | None = None,
        images: Any = None,
    ) -> None:
        self.msplit = msplit
        self.langs = _check_langs(msplit, langs)
        self.transform = transform
        self.seed = int(seed)
        self.tokenizer = tokenizer
        self.images = images if images is not None else ImageStore(msplit.image_paths, transform)
        if len(self.images) != msplit.num_images:
            raise ValueError(
                f"images: expected one image per split image ({msplit.num_images}), "
                f"got {len(images)}"
            )
        self.epoch = 0
        self.by_image = {lang: msplit.captions_by_image(lang) for lang in self.langs}
        #: images with at least one caption in the chosen languages (the items)
        self.image_indices = [
            i
            for i in range(msplit.num_images)
            if any(self.by_image[lang][i] for lang in self.langs)
        ]

    def set_epoch(self, epoch: int) -> None:
        """Draw new random choices for ``epoch`` (call before each epoch; with persistent
        DataLoader workers the workers keep the epoch they were started with)."""
        self.epoch = int(epoch)

    def _rng(self, index: int, sample_seed: int | None = None) -> np.random.Generator:
        if sample_seed is not None:
            return np.random.default_rng([int(sample_seed), index])
        return np.random.default_rng([self.seed, self.epoch, index])

    def __len__(self) -> int:
        return len(self.image_indices)

    def _image(self, image_index: int, sample_seed: int | None) -> Any:
        return self.images.load(image_index, sample_seed)


class OneToKDataset(_EpochSeeded):
    """One item per image with its captions in K languages (1-to-K contrastive learning).

    Item (the collate's sample format) = ``{"image": Tensor[3,H,W], "caption": list (K
    entries in ``langs`` order), "image_id": int}``. A language without a caption for the
    image gets ``None``, which the collate turns into ``text_mask`` False (objectives drop it
    from every softmax; docs/methods.md §3). When an image has several captions per language, one
    caption slot ``s`` is drawn per (seed, epoch, index) and caption ``s mod n_lang`` is taken
    in every language, so that parallel datasets yield translations of the same caption.
    With ``tokenizer`` the item also has ``"text"``: LongTensor[K, L].
    """
    sample_fields = ("image", "caption", "image_id")

    @property
    def captions_per_sample(self) -> int:
        return len(self.langs)


    def __getitem__(self, key: Key) -> dict[str, Any]:
        index, sample_seed = split_key(key)
        image_index = self.image_indices[index]
        lists = [self.by_image[lang][image_index] for lang in self.langs]
        most = max(len(texts) for texts in lists)
        slot = int(self._rng(index, sample_seed).integers(most)) if most > 1 else 0
        captions: list[str | None] = [
            self.msplit.captions[lang][texts[slot % len(texts)]] if texts else None
            for lang, texts in zip(self.langs, lists, strict=True)
        ]
        item: dict[str, Any] = {
            "image": self._image(image_index, sample_seed),
            "caption": captions,
            "image_id": image_index,
        }
        if self.tokenizer is not None:
            item["text"] = self.tokenizer([c or "" for c in captions])
        return item


class RandomLanguageDataset(_EpochSeeded):
    """One item per image with one caption in a randomly drawn language (the "1-to-1,
    cross-modal style" baseline).

    For item ``index`` in epoch ``e`` the language is drawn uniformly among ``langs`` in which
    the image has a caption, then one of its captions in that language, both from a generator
    seeded with ``(seed, e, index)``: reproducible, and independent of access order.
    Item = ``{"image", "caption": str, "lang": str, "image_id": int}`` (+ ``"text"``:
    LongTensor[L] with ``tokenizer``).
    """
    sample_fields = ("image", "caption", "image_id", "lang")
    captions_per_sample = 1


    def __getitem__(self, key: Key) -> dict[str, Any]:
        index, sample_seed = split_key(key)
        image_index = self.image_indices[index]
        rng = self._rng(index, sample_seed)
        available = [lang for lang in self.langs if self.by_image[lang][image_index]]
        lang = available[int(rng.integers(len(available)))]
        texts = self.by_image[lang][image_index]
        caption = self.msplit.captions[lang][texts[int(rng.integers(len(texts)))]]
        item: dict[str, Any] = {
            "image": self._image(image_index, sample_seed),
            "caption": caption,
            "lang": lang,
            "image_id": image_index,
        }
        if self.tokenizer is not None:
            item["text"] = self.tokenizer([caption])[0]
        return item

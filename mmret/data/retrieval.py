"""Image-text retrieval splits: Karpathy JSON and ALBEF-style JSON.

Both loaders return a :class:`RetrievalSplit`: unique images, all captions, and for each
caption the index of its image (``text_to_image``), which is exactly what evaluation needs
(text->image gold = ``text_to_image[t]``; image->text golds = captions mapping to the image).
:class:`ImageTextTrainDataset` turns a split into per-caption training records.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from mmret.data.errors import (
    DatasetFormatError,
    expect_type,
    get_field,
    get_string_list,
    read_json,
)
from mmret.data.faults import ErrorPolicy, as_policy
from mmret.data.images import ImageStore, ImageTransform, split_key
from mmret.data.paths import PathResolver

KARPATHY_SPLITS = ("train", "val", "test", "restval")
Tokenizer = Callable[[list[str]], torch.Tensor]


@dataclass(frozen=True, repr=False)
class RetrievalSplit:
    """An image-text retrieval split.

    Attributes:
        image_paths: path of image ``i`` (unique), length N.
        captions: caption ``t``, length T.
        text_to_image: index in ``image_paths`` of the image caption ``t`` describes, length T.
        image_ids: the dataset's own id of image ``i`` (e.g. Karpathy ``imgid``), length N.
    """

    image_paths: list[str]
    captions: list[str]
    text_to_image: list[int]
    image_ids: list

    def __post_init__(self) -> None:
        if len(self.captions) != len(self.text_to_image):
            raise ValueError(
                f"captions ({len(self.captions)}) and text_to_image ({len(self.text_to_image)}) "
                "must have the same length"
            )
        if len(self.image_ids) != len(self.image_paths):
            raise ValueError(
                f"image_ids ({len(self.image_ids)}) and image_paths ({len(self.image_paths)}) "
                "must have the same length"
            )
        n = len(self.image_paths)
        bad = next((t for t, i in enumerate(self.text_to_image) if not 0 <= i < n), None)
        if bad is not None:
            raise ValueError(
                f"text_to_image[{bad}] = {self.text_to_image[bad]} is not an image index in [0, {n})"
            )

    @property
    def num_images(self) -> int:
        return len(self.image_paths)

    @property
    def num_texts(self) -> int:
        return len(self.captions)

    def image_to_texts(self) -> list[list[int]]:
        """For each image the indices of its captions (ascending)."""
        out: list[list[int]] = [[] for _ in self.image_paths]
        for t, i in enumerate(self.text_to_image):
            out[i].append(t)
        return out

    def subset(self, max_images: int | None) -> RetrievalSplit:
        """The first ``max_images`` images and their captions (``None``: this split)."""
        if max_images is None or max_images >= self.num_images:
            return self
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
        keep = [t for t, i in enumerate(self.text_to_image) if i < max_images]
        return RetrievalSplit(
            self.image_paths[:max_images], [self.captions[t] for t in keep],
            [self.text_to_image[t] for t in keep], self.image_ids[:max_images],
        )

    def __repr__(self) -> str:
        return f"RetrievalSplit(num_images={self.num_images}, num_texts={self.num_texts})"


def load_karpathy(
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    split: str,
    *,
    restval_as_train: bool = True,
    on_error: str | ErrorPolicy = "raise",
) -> RetrievalSplit:
    """Load one split of a Karpathy-style ``dataset_{coco,flickr30k}.json``.

    Image ``i``'s path is ``image_root/filepath/filename`` (``filepath`` may be absent, as in
    Flickr30K; the path must stay inside ``image_root``: :mod:`mmret.data.paths`). Its id is
    ``imgid`` if present, else ``cocoid``, else its record index (an id or a path used twice
    in the split is an error). Captions are the ``raw`` field of ``sentences``. With
    ``split="train"`` and ``restval_as_train`` the ``restval`` images (the 30K COCO images
    outside the 5K val/test) are included, as in the standard COCO training set.
    ``on_error="skip"`` leaves bad records out (:mod:`mmret.data.faults`).
    """
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"split must be one of {KARPATHY_SPLITS}, got {split!r}")
    policy = as_policy(on_error)
    wanted = {split, "restval"} if split == "train" and restval_as_train else {split}
    data = read_json(json_path, "Karpathy split JSON")
    images = get_field(data, "images", list, json_path)
    resolve = PathResolver(image_root, json_path)
    paths: list[str] = []
    ids: list = []
    captions: list[str] = []
    text_to_image: list[int] = []
    seen_ids: dict = {}
    seen_paths: dict[str, int] = {}
    for index, record in enumerate(images):
        try:
            record_split = get_field(record, "split", str, json_path, index=index)
            if record_split not in KARPATHY_SPLITS:
                raise DatasetFormatError(
                    json_path, f"expected one of {KARPATHY_SPLITS}, got {record_split!r}",
                    record=index, field="split",
                )  # fmt: skip
            if record_split not in wanted:
                continue
            filename = get_field(record, "filename", str, json_path, index=index)
            filepath = get_field(record, "filepath", str, json_path, index=index, default="")
            id_field = "imgid" if "imgid" in record else "cocoid"
            image_id = get_field(record, id_field, (int, str), json_path, index=index,
                                 default=index)
            path = resolve(filepath, filename, record=index, field="filename")
            if image_id in seen_ids:
                raise DatasetFormatError(
                    json_path, f"duplicate image id {image_id!r} (also record "
                    f"{seen_ids[image_id]})", record=index, field=id_field)
            if path in seen_paths:
                raise DatasetFormatError(
                    json_path, f"duplicate image {path!r} (also record {seen_paths[path]})",
                    record=index, field="filename")
            sentences = get_field(record, "sentences", list, json_path, index=index)
            texts = []
            for k, sentence in enumerate(sentences):
                raw = sentence.get("raw") if isinstance(sentence, dict) else None
                if not isinstance(raw, str) or not raw.strip():
                    raise DatasetFormatError(
                        json_path, f"expected a non-empty string, got {raw!r}",
                        record=index, field=f"sentences[{k}].raw",
                    )  # fmt: skip
                texts.append(raw.strip())
        except DatasetFormatError as err:
            policy.handle(err)
            continue
        seen_ids[image_id] = index
        seen_paths[path] = index
        image_index = len(paths)
        paths.append(path)
        ids.append(image_id)
        captions += texts
        text_to_image += [image_index] * len(texts)
    if not paths:
        raise DatasetFormatError(json_path, f"no images with split {split!r}")
    return RetrievalSplit(paths, captions, text_to_image, ids)


def load_albef(
    json_path: str | os.PathLike, image_root: str | os.PathLike, *,
    on_error: str | ErrorPolicy = "raise",
) -> RetrievalSplit:
    """Load an ALBEF-style retrieval JSON (a list of records).

    Training files have one record per caption, ``{"image": path, "caption": str,
    "image_id": id}``; evaluation files one record per image, ``{"image": path, "caption":
    [str, ...]}``. Both (even mixed) are accepted: records with the same ``image`` are one
    image, whose id is the first record's ``image_id`` (or the record index if absent); an
    explicit ``image_id`` naming two different images is an error. Paths are
    ``image_root/image`` (kept inside ``image_root``). ``on_error="skip"`` leaves bad
    records out (:mod:`mmret.data.faults`).
    """
    policy = as_policy(on_error)
    data = read_json(json_path, "ALBEF retrieval JSON")
    expect_type(data, list, json_path)
    resolve = PathResolver(image_root, json_path)
    index_of: dict[str, int] = {}
    image_of_id: dict = {}
    paths: list[str] = []
    ids: list = []
    captions: list[str] = []
    text_to_image: list[int] = []
    for index, record in enumerate(data):
        try:
            image = get_field(record, "image", str, json_path, index=index)
            texts = get_string_list(record, "caption", json_path, index=index,
                                    allow_string=True)
            image_id = get_field(record, "image_id", (str, int), json_path, index=index,
                                 default=None)
            path = resolve(image, record=index, field="image")
            if image_id is not None and image_of_id.get(image_id, image) != image:
                raise DatasetFormatError(
                    json_path, f"image_id {image_id!r} names {image!r} here but "
                    f"{image_of_id[image_id]!r} in an earlier record", record=index,
                    field="image_id")
            if any(not text.strip() for text in texts) or not texts:
                raise DatasetFormatError(json_path, "empty caption", record=index,
                                         field="caption")
        except DatasetFormatError as err:
            policy.handle(err)
            continue
        if image_id is not None:
            image_of_id[image_id] = image
        if image not in index_of:
            index_of[image] = len(paths)
            paths.append(path)
            ids.append(index if image_id is None else image_id)
        for text in texts:
            captions.append(text.strip())
            text_to_image.append(index_of[image])
    if not paths:
        raise DatasetFormatError(json_path, "no records")
    return RetrievalSplit(paths, captions, text_to_image, ids)


class ImageTextTrainDataset(Dataset):
    """Training samples of a :class:`RetrievalSplit` in the collate's sample format.

    With ``captions_per_image = 1`` there is one sample per caption ``t``:
    ``{"image": Tensor[3,H,W], "caption": str, "image_id": int, "caption_index": int}``,
    where ``image_id`` is the dense image index ``text_to_image[t]`` (captions of the same
    image share it, which multi-positive objectives use; the dataset's own ids stay in
    ``split.image_ids``) and ``caption_index`` is ``t``, the caption's index in
    ``split.captions`` (tasks key per-caption data on it, e.g. cached teacher features).
    With ``K > 1`` there is one sample per image with K of its captions (consecutive,
    cycling when the image has fewer) as a list, and ``caption_index`` their K indices.

    Keys may be the sampler's ``(index, seed)`` pairs: a random transform then runs seeded
    by ``seed`` (:func:`~mmret.data.images.seeded_random`). ``images`` is an
    :class:`~mmret.data.images.ImageStore` aligned with ``split.image_paths`` (default:
    decode each file with ``transform``). With ``tokenizer`` each sample also gets
    ``"text"``: LongTensor[L] (K = 1) or [K, L].
    """

    def __init__(
        self,
        split: RetrievalSplit,
        transform: ImageTransform | None = None,
        tokenizer: Tokenizer | None = None,
        captions_per_image: int = 1,
        images: ImageStore | None = None,
    ) -> None:
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image: expected >= 1, got {captions_per_image}")
        self.split = split
        self.images = images if images is not None else ImageStore(split.image_paths, transform)
        if len(self.images) != split.num_images:
            raise ValueError(
                f"images: expected one image per split image ({split.num_images}), "
                f"got {len(self.images)}"
            )
        self.tokenizer = tokenizer
        self.captions_per_sample = int(captions_per_image)
        self.captions_of = split.image_to_texts()

    @property
    def sample_fields(self) -> tuple[str, ...]:
        return ("image", "caption", "image_id", "caption_index")

    def __len__(self) -> int:
        return self.split.num_texts if self.captions_per_sample == 1 else self.split.num_images

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = split_key(key)
        if self.captions_per_sample == 1:
            image_index = self.split.text_to_image[index]
            caption: Any = self.split.captions[index]
            caption_index: Any = int(index)
        else:
            image_index = index
            own = self.captions_of[index]
            caption_index = [own[c % len(own)] for c in range(self.captions_per_sample)]
            caption = [self.split.captions[t] for t in caption_index]
        item: dict[str, Any] = {
            "image": self.images.load(image_index, seed),
            "caption": caption,
            "image_id": int(image_index),
            "caption_index": caption_index,
        }
        if self.tokenizer is not None:
            texts = [caption] if isinstance(caption, str) else list(caption)
            tokens = self.tokenizer(texts)
            item["text"] = tokens[0] if isinstance(caption, str) else tokens
        return item


def concat_splits(splits: Sequence[RetrievalSplit]) -> RetrievalSplit:
    """Concatenate splits (images of later splits are re-indexed after earlier ones)."""
    paths: list[str] = []
    ids: list = []
    captions: list[str] = []
    text_to_image: list[int] = []
    for split in splits:
        offset = len(paths)
        paths += split.image_paths
        ids += split.image_ids
        captions += split.captions
        text_to_image += [offset + i for i in split.text_to_image]
    return RetrievalSplit(paths, captions, text_to_image, ids)

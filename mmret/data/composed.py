"""Composed image retrieval data: CIRR and FashionIQ loaders and a training dataset.

A query is (reference image, modification text); the answer is a target image of the
split's gallery. Loaders return a :class:`ComposedSplit` that stores everything as gallery
indices, which is what the metrics need (CIRR removes the reference from the gallery and
ranks ``img_set`` members for Recall_subset; FashionIQ ranks the category's split gallery).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mmret.data.errors import (
    DatasetFormatError,
    expect_type,
    get_field,
    get_string_list,
    read_json,
)
from mmret.data.faults import ErrorPolicy, as_policy
from mmret.data.images import ImageTransform, apply_transform, load_image
from mmret.data.paths import PathResolver
from mmret.data.retrieval import Tokenizer

FASHIONIQ_CATEGORIES: tuple[str, ...] = ("dress", "shirt", "toptee")
DEFAULT_FASHIONIQ_TEMPLATE = "{c1} and {c2}"


@dataclass(frozen=True)
class ComposedTriplet:
    """One query with paths: ``target`` is None where labels are hidden (official test)."""

    reference: str
    modification: str
    target: str | None
    members: tuple[str, ...] = ()
    pair_id: int | None = None


@dataclass(frozen=True, repr=False)
class ComposedSplit:
    """Composed-retrieval queries over a gallery (all indices point into the gallery).

    Attributes:
        name: e.g. ``"cirr/val"`` or ``"fashioniq/dress/val"``.
        gallery_names / gallery_paths: the split's images, length G.
        reference_index: gallery index of each query's reference image, length Q.
        modifications: each query's modification text, length Q.
        target_index: gallery index of each query's target (None if hidden), length Q.
        members: CIRR ``img_set.members`` as gallery indices (reference included; empty
            lists for FashionIQ), length Q.
        pair_ids: CIRR ``pairid`` (None for FashionIQ), length Q.
    """

    name: str
    gallery_names: list[str]
    gallery_paths: list[str]
    reference_index: list[int]
    modifications: list[str]
    target_index: list[int | None]
    members: list[list[int]]
    pair_ids: list[int | None]

    def __post_init__(self) -> None:
        q = len(self.reference_index)
        for attr in ("modifications", "target_index", "members", "pair_ids"):
            if len(getattr(self, attr)) != q:
                raise ValueError(f"{attr} has {len(getattr(self, attr))} entries, expected {q}")
        if len(self.gallery_names) != len(self.gallery_paths):
            raise ValueError("gallery_names and gallery_paths must have the same length")

    @property
    def num_queries(self) -> int:
        return len(self.reference_index)

    @property
    def has_targets(self) -> bool:
        return all(t is not None for t in self.target_index)

    def triplet(self, q: int) -> ComposedTriplet:
        target = self.target_index[q]
        return ComposedTriplet(
            reference=self.gallery_paths[self.reference_index[q]],
            modification=self.modifications[q],
            target=None if target is None else self.gallery_paths[target],
            members=tuple(self.gallery_paths[m] for m in self.members[q]),
            pair_id=self.pair_ids[q],
        )

    @property
    def triplets(self) -> list[ComposedTriplet]:
        return [self.triplet(q) for q in range(self.num_queries)]

    def __repr__(self) -> str:
        return f"ComposedSplit({self.name!r}, queries={self.num_queries}, gallery={len(self.gallery_names)})"


def _caption_dir(root: Path, lang: str) -> Path:
    return root / "captions" if lang == "en" else root / "captions" / lang


def _lookup(
    index_of: dict[str, int], name: str, path: Path, record: int, fieldname: str, gallery: Path
) -> int:
    try:
        return index_of[name]
    except KeyError:
        raise DatasetFormatError(
            path,
            f"image {name!r} is not in the split's image list {gallery}",
            record=record,
            field=fieldname,
        ) from None


def load_cirr(
    root: str | os.PathLike,
    split: str,
    *,
    image_root: str | os.PathLike | None = None,
    lang: str = "en",
    on_error: str | ErrorPolicy = "raise",
) -> ComposedSplit:
    """Load CIRR ``captions/cap.rc2.{split}.json`` and ``image_splits/split.rc2.{split}.json``.

    The gallery is every image of the split's image list ``{name: relative_path}`` (paths
    ``image_root/relative_path``, ``image_root`` defaulting to ``root``). Records need
    ``pairid``, ``reference``, ``caption``, ``img_set.members`` and, unless labels are hidden
    (records without ``target_hard``, as in the official test1 split), ``target_hard``.
    ``lang`` other than "en" reads ``captions/{lang}/`` (translated captions, e.g. the
    synthetic benchmark's). Gallery paths must stay inside ``image_root``; an empty
    caption and a reference/target/member outside the split's image
    list are errors. ``on_error="skip"`` leaves bad entries out (:mod:`mmret.data.faults`).
    """
    policy = as_policy(on_error)
    root = Path(root)
    image_root = root if image_root is None else image_root
    gallery_file = root / "image_splits" / f"split.rc2.{split}.json"
    caption_file = _caption_dir(root, lang) / f"cap.rc2.{split}.json"
    images = read_json(gallery_file, f"CIRR {split} image split")
    expect_type(images, dict, gallery_file)
    resolve = PathResolver(image_root, gallery_file)
    names = []
    paths = []
    for name in images:
        try:
            rel = expect_type(images[name], str, gallery_file, field=name)
            paths.append(resolve(rel, field=name))
        except DatasetFormatError as err:
            policy.handle(err)
            continue
        names.append(name)
    index_of = {name: k for k, name in enumerate(names)}

    records = read_json(caption_file, f"CIRR {split} captions")
    expect_type(records, list, caption_file)
    refs, mods, targets, members, pair_ids = [], [], [], [], []
    for k, record in enumerate(records):
        try:
            pair_id = get_field(record, "pairid", int, caption_file, index=k)
            ref = get_field(record, "reference", str, caption_file, index=k)
            ref_index = _lookup(index_of, ref, caption_file, k, "reference", gallery_file)
            mod = get_field(record, "caption", str, caption_file, index=k).strip()
            if not mod:
                raise DatasetFormatError(caption_file, "empty caption", record=k,
                                         field="caption")
            target = get_field(record, "target_hard", str, caption_file, index=k, default=None)
            target_index = (
                None
                if target is None
                else _lookup(index_of, target, caption_file, k, "target_hard", gallery_file)
            )
            img_set = get_field(record, "img_set", dict, caption_file, index=k)
            names_k = get_string_list(img_set, "members", caption_file, index=k)
            member_index = [
                _lookup(index_of, m, caption_file, k, "img_set.members", gallery_file)
                for m in names_k
            ]
        except DatasetFormatError as err:
            policy.handle(err)
            continue
        pair_ids.append(pair_id)
        refs.append(ref_index)
        mods.append(mod)
        targets.append(target_index)
        members.append(member_index)
    if any(t is None for t in targets) and not all(t is None for t in targets):
        first = targets.index(None)
        raise DatasetFormatError(
            caption_file,
            "some records have target_hard and others not",
            record=first,
            field="target_hard",
        )
    return ComposedSplit(f"cirr/{split}", names, paths, refs, mods, targets, members, pair_ids)


def join_captions(c1: str, c2: str, template: str = DEFAULT_FASHIONIQ_TEMPLATE) -> str:
    """Join FashionIQ's two relative captions with ``template`` (fields ``{c1}``, ``{c2}``)."""
    try:
        return template.format(c1=c1.strip(), c2=c2.strip())
    except (KeyError, IndexError) as err:
        raise ValueError(
            f"FashionIQ caption template {template!r} may only use the fields {{c1}} and {{c2}}"
        ) from err


def _image_extension(image_root: Path, names: list[str], image_ext: str | None) -> str:
    if image_ext is not None:
        return image_ext if image_ext.startswith(".") else "." + image_ext
    for ext in (".png", ".jpg"):
        if names and (image_root / f"{names[0]}{ext}").is_file():
            return ext
    return ".jpg"  # the official release; missing files are reported when an image is loaded


def load_fashioniq(
    root: str | os.PathLike,
    category: str,
    split: str,
    *,
    image_root: str | os.PathLike | None = None,
    template: str = DEFAULT_FASHIONIQ_TEMPLATE,
    lang: str = "en",
    image_ext: str | None = None,
    on_error: str | ErrorPolicy = "raise",
) -> ComposedSplit:
    """Load FashionIQ ``captions/cap.{category}.{split}.json`` with the gallery
    ``image_splits/split.{category}.{split}.json`` (a list of image names).

    Images are ``image_root/{name}{ext}`` (``image_root`` defaults to ``root/images``; ``ext``
    is probed as .png then .jpg on the first gallery image unless ``image_ext`` is given).
    The two relative captions are joined with ``template`` (default ``"{c1} and {c2}"``).
    Records without ``target`` (hidden labels) give ``target_index`` None. Image names
    must stay inside ``image_root`` and be unique; a candidate/target outside the split's
    image list and two empty captions are errors. ``on_error="skip"`` leaves bad entries
    out (:mod:`mmret.data.faults`).
    """
    policy = as_policy(on_error)
    if category not in FASHIONIQ_CATEGORIES:
        raise ValueError(f"category must be one of {FASHIONIQ_CATEGORIES}, got {category!r}")
    join_captions("a", "b", template)  # validate the template before reading anything
    root = Path(root)
    image_root = Path(root / "images" if image_root is None else image_root)
    gallery_file = root / "image_splits" / f"split.{category}.{split}.json"
    caption_file = _caption_dir(root, lang) / f"cap.{category}.{split}.json"
    listed = read_json(gallery_file, f"FashionIQ {category} {split} image split")
    expect_type(listed, list, gallery_file)
    names: list[str] = []
    seen: set[str] = set()
    for k, name in enumerate(listed):
        try:
            expect_type(name, str, gallery_file, record=k)
            if name in seen:
                raise DatasetFormatError(gallery_file, f"duplicate image name {name!r}",
                                         record=k)
        except DatasetFormatError as err:
            policy.handle(err)
            continue
        names.append(name)
        seen.add(name)
    ext = _image_extension(image_root, names, image_ext)
    resolve = PathResolver(image_root, gallery_file)
    paths = []
    for k, name in enumerate(list(names)):
        try:
            paths.append(str(Path(resolve(f"{name}{ext}", record=k))))
        except DatasetFormatError as err:
            policy.handle(err)
            names.remove(name)
    index_of = {name: k for k, name in enumerate(names)}

    records = read_json(caption_file, f"FashionIQ {category} {split} captions")
    expect_type(records, list, caption_file)
    refs, mods, targets = [], [], []
    for k, record in enumerate(records):
        try:
            candidate = get_field(record, "candidate", str, caption_file, index=k)
            ref = _lookup(index_of, candidate, caption_file, k, "candidate", gallery_file)
            target = get_field(record, "target", str, caption_file, index=k, default=None)
            target_index = (
                None
                if target is None
                else _lookup(index_of, target, caption_file, k, "target", gallery_file)
            )
            captions = get_string_list(record, "captions", caption_file, index=k)
            if len(captions) != 2:
                raise DatasetFormatError(
                    caption_file,
                    f"expected 2 relative captions, got {len(captions)}",
                    record=k,
                    field="captions",
                )
            if not (captions[0].strip() or captions[1].strip()):
                raise DatasetFormatError(caption_file, "both relative captions are empty",
                                         record=k, field="captions")
            mod = join_captions(captions[0], captions[1], template)
        except DatasetFormatError as err:
            policy.handle(err)
            continue
        refs.append(ref)
        targets.append(target_index)
        mods.append(mod)
    q = len(refs)
    return ComposedSplit(
        f"fashioniq/{category}/{split}",
        names,
        paths,
        refs,
        mods,
        targets,
        [[] for _ in range(q)],
        [None] * q,
    )


class ComposedTrainDataset(Dataset):
    """Training triplets of a :class:`ComposedSplit` (targets required).

    Item ``q`` = ``{"reference_image": Tensor[3,H,W], "image": Tensor[3,H,W] (the target),
    "caption": str (modification text), "reference_index": int, "target_index": int}``
    (+ ``"text"``: LongTensor[L] with ``tokenizer``). Gallery indices identify images, e.g.
    for a static negative bank over the gallery.
    """

    def __init__(
        self,
        split: ComposedSplit,
        transform: ImageTransform | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        if not split.has_targets:
            raise ValueError(f"{split.name} has hidden targets; it cannot be used for training")
        self.split = split
        self.transform = transform
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return self.split.num_queries

    def __getitem__(self, q: int) -> dict[str, Any]:
        ref = self.split.reference_index[q]
        target = self.split.target_index[q]
        paths = self.split.gallery_paths
        item: dict[str, Any] = {
            "reference_image": apply_transform(load_image(paths[ref]), self.transform),
            "image": apply_transform(load_image(paths[target]), self.transform),
            "caption": self.split.modifications[q],
            "reference_index": ref,
            "target_index": target,
        }
        if self.tokenizer is not None:
            item["text"] = self.tokenizer([item["caption"]])[0]
        return item

"""Composed image retrieval data: CIRR and FashionIQ loaders, query/training/gallery datasets.

A query is (reference image, modification text); the answer is a target image of the
split's gallery. Loaders return a :class:`ComposedSplit` that stores everything as gallery
indices, which is what the metrics need (CIRR removes the reference from the gallery and
ranks ``img_set`` members for Recall_subset; FashionIQ ranks the category's split gallery)
and what a static negative bank is indexed by (bank row ``i`` = gallery image ``i``).

Datasets (docs/methods.md §6):

- :class:`ComposedQueryDataset` / :class:`ComposedTrainDataset`: one item per query,
  ``reference_image``, ``target_image``, ``modification``, ``reference_id``, ``target_id``,
  ``image_id`` (= ``target_id``); keys may be ``(index, seed)`` pairs (seeded random
  transforms); ``load_images=False`` yields the ids and text only (stage 2 reads bank
  features instead of images).
- :class:`ComposedGalleryDataset`: every image of the split, ``{"image", "image_id"}``.
- :class:`ComposedCollator`: batches of query items (``reference_ids``, ``target_ids``,
  ``target_index``, ``image_ids`` LongTensors, ``text`` tokens, stacked images).

:func:`concat_composed_splits` merges splits (e.g. a generated triplet split into the
training split), de-duplicating their images by path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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
from mmret.data.images import ImageTransform, apply_transform, load_image
from mmret.data.paths import PathResolver
from mmret.data.retrieval import Tokenizer
from mmret.data.seeding import derive_seed, seeded_random, split_key
from mmret.metrics.fashioniq import FASHIONIQ_CATEGORIES  # the one definition

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
        group_ids: CIRR ``img_set.id`` (None for FashionIQ), length Q; defaults to all None.
    """

    name: str
    gallery_names: list[str]
    gallery_paths: list[str]
    reference_index: list[int]
    modifications: list[str]
    target_index: list[int | None]
    members: list[list[int]]
    pair_ids: list[int | None]
    group_ids: list[int | None] | None = None

    def __post_init__(self) -> None:
        q = len(self.reference_index)
        if self.group_ids is None:
            object.__setattr__(self, "group_ids", [None] * q)
        for attr in ("modifications", "target_index", "members", "pair_ids", "group_ids"):
            if len(getattr(self, attr)) != q:
                raise ValueError(f"{attr} has {len(getattr(self, attr))} entries, expected {q}")
        if len(self.gallery_names) != len(self.gallery_paths):
            raise ValueError("gallery_names and gallery_paths must have the same length")

    @property
    def num_queries(self) -> int:
        return len(self.reference_index)

    @property
    def num_images(self) -> int:
        return len(self.gallery_paths)

    @property
    def has_targets(self) -> bool:
        return all(t is not None for t in self.target_index)

    def reference_tensor(self) -> torch.Tensor:
        """LongTensor[Q] of reference gallery indices."""
        return torch.tensor(self.reference_index, dtype=torch.long)

    def target_tensor(self) -> torch.Tensor:
        """LongTensor[Q] of target gallery indices (-1 where hidden)."""
        return torch.tensor([-1 if t is None else t for t in self.target_index], dtype=torch.long)

    def subset_indices(self) -> torch.Tensor:
        """CIRR ``img_set.members`` as LongTensor[Q, S] gallery indices, ``-1`` padded
        (S = the largest set; the reference stays listed: the metrics drop it)."""
        width = max((len(m) for m in self.members), default=0)
        out = torch.full((self.num_queries, width), -1, dtype=torch.long)
        for q, members in enumerate(self.members):
            out[q, : len(members)] = torch.tensor(members, dtype=torch.long)
        return out

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
    refs, mods, targets, members, pair_ids, group_ids = [], [], [], [], [], []
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
            group_id = get_field(img_set, "id", int, caption_file, index=k, default=None)
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
        group_ids.append(group_id)
    if any(t is None for t in targets) and not all(t is None for t in targets):
        first = targets.index(None)
        raise DatasetFormatError(
            caption_file,
            "some records have target_hard and others not",
            record=first,
            field="target_hard",
        )
    return ComposedSplit(
        f"cirr/{split}", names, paths, refs, mods, targets, members, pair_ids, group_ids
    )


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


def load_fashioniq_categories(
    root: str | os.PathLike,
    split: str,
    categories: Sequence[str] = FASHIONIQ_CATEGORIES,
    **kwargs: Any,
) -> dict[str, ComposedSplit]:
    """:func:`load_fashioniq` of every category (keyword options shared): ``{category: split}``.

    Evaluation stays per category (each has its own gallery, docs/methods.md §7); for
    training, merge them with :func:`concat_composed_splits`.
    """
    if isinstance(categories, str):
        raise ValueError(f"categories: expected a list of category names, got {categories!r}")
    return {c: load_fashioniq(root, c, split, **kwargs) for c in categories}


def first_queries(split: ComposedSplit, max_queries: int | None) -> ComposedSplit:
    """``split`` with only its first ``max_queries`` queries (``None``: unchanged). The
    image list stays whole, so bank rows and gallery indices keep their meaning."""
    if max_queries is None or max_queries >= split.num_queries:
        return split
    if not isinstance(max_queries, int) or isinstance(max_queries, bool) or max_queries < 1:
        raise ValueError(f"max_queries: expected a positive integer or None, got {max_queries!r}")
    n = max_queries
    return ComposedSplit(
        split.name, split.gallery_names, split.gallery_paths, split.reference_index[:n],
        split.modifications[:n], split.target_index[:n], split.members[:n],
        split.pair_ids[:n], list(split.group_ids or [None] * split.num_queries)[:n],
    )


def concat_composed_splits(
    splits: Sequence[ComposedSplit], name: str | None = None
) -> ComposedSplit:
    """Merge composed splits into one (e.g. generated triplets into a training split).

    The merged image list is the union of the splits' images in first-seen order,
    de-duplicated by normalised path (``os.path.normpath`` of the absolute path): an image
    shared by two splits gets one index, so a negative bank over the merged image list
    holds every unique image once. Queries keep their order (split by split) and are
    re-indexed into the merged list; ``pair_ids`` / ``group_ids`` are carried as they are.
    """
    splits = list(splits)
    if not splits:
        raise ValueError("splits: expected at least one ComposedSplit")
    for k, split in enumerate(splits):
        if not isinstance(split, ComposedSplit):
            raise ValueError(f"splits[{k}]: expected a ComposedSplit, got {type(split).__name__}")
    names: list[str] = []
    paths: list[str] = []
    index_of: dict[str, int] = {}
    refs: list[int] = []
    mods: list[str] = []
    targets: list[int | None] = []
    members: list[list[int]] = []
    pair_ids: list[int | None] = []
    group_ids: list[int | None] = []
    for split in splits:
        remap = []
        for image_name, path in zip(split.gallery_names, split.gallery_paths, strict=True):
            key = os.path.normpath(os.path.abspath(path))
            if key not in index_of:
                index_of[key] = len(paths)
                names.append(image_name)
                paths.append(path)
            remap.append(index_of[key])
        refs += [remap[r] for r in split.reference_index]
        targets += [None if t is None else remap[t] for t in split.target_index]
        members += [[remap[m] for m in ms] for ms in split.members]
        mods += split.modifications
        pair_ids += split.pair_ids
        group_ids += list(split.group_ids or [None] * split.num_queries)
    merged = name or "+".join(s.name for s in splits)
    return ComposedSplit(merged, names, paths, refs, mods, targets, members, pair_ids, group_ids)


class ComposedQueryDataset(Dataset):
    """The queries of a :class:`ComposedSplit`, one item per query ``q``.

    Item (docs/methods.md §6)::

        reference_image  FloatTensor[3, H, W]   (only with load_images)
        target_image     FloatTensor[3, H, W]   (only with load_images and a known target)
        modification     str                    the modification text
        reference_id     int                    gallery index of the reference image
        target_id        int                    gallery index of the target (-1 if hidden)
        image_id         int                    = target_id (multi-positive targets)
        query_index      int                    q
        text             LongTensor[L]          (only with a tokenizer)

    Ids are indices into ``split.gallery_paths``, i.e. rows of a negative bank built over
    that image list. Keys may be ``q`` or ``(q, seed)``: with a seed the random transform
    of the reference runs under ``derive_seed(seed, 0)`` and that of the target under
    ``derive_seed(seed, 1)`` (see :mod:`mmret.data.seeding`).

    Args:
        split: the queries and their image list.
        transform: PIL image -> tensor (``to_tensor`` when None).
        tokenizer: ``list[str] -> LongTensor[n, L]``; adds ``text``.
        load_images: False yields ids and text only (stage 2 of docs/methods.md §6 takes
            reference and target features from the bank).
        load_targets: False skips decoding the target image even with ``load_images``
            (e.g. evaluation queries, whose targets are ranked in the gallery).
    """

    def __init__(
        self,
        split: ComposedSplit,
        transform: ImageTransform | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        load_images: bool = True,
        load_targets: bool = True,
    ) -> None:
        if not isinstance(split, ComposedSplit):
            raise ValueError(f"split: expected a ComposedSplit, got {type(split).__name__}")
        self.split = split
        self.transform = transform
        self.tokenizer = tokenizer
        self.load_images = bool(load_images)
        self.load_targets = bool(load_targets)

    def __len__(self) -> int:
        return self.split.num_queries

    @property
    def sample_fields(self) -> tuple[str, ...]:
        """The fields every item carries (the task layer checks them at start-up)."""
        fields = ("modification", "reference_id", "target_id", "image_id", "query_index")
        if self.load_images:
            fields += ("reference_image",) + (("target_image",) if self.load_targets else ())
        return fields + (("text",) if self.tokenizer is not None else ())

    def _image(self, index: int, seed: int | None) -> torch.Tensor:
        image = load_image(self.split.gallery_paths[index])
        if seed is None:
            return apply_transform(image, self.transform)
        with seeded_random(seed):
            return apply_transform(image, self.transform)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        q, seed = split_key(key)
        if not 0 <= q < len(self):
            raise IndexError(f"query index {q} out of range for {self.split.name} ({len(self)})")
        ref = self.split.reference_index[q]
        target = self.split.target_index[q]
        target_id = -1 if target is None else target
        item: dict[str, Any] = {
            "modification": self.split.modifications[q],
            "reference_id": ref,
            "target_id": target_id,
            "image_id": target_id,
            "query_index": q,
        }
        if self.load_images:
            item["reference_image"] = self._image(
                ref, None if seed is None else derive_seed(seed, 0)
            )
            if self.load_targets and target is not None:
                item["target_image"] = self._image(
                    target, None if seed is None else derive_seed(seed, 1)
                )
        if self.tokenizer is not None:
            item["text"] = self.tokenizer([item["modification"]])[0]
        return item


class ComposedTrainDataset(ComposedQueryDataset):
    """Training triplets of a :class:`ComposedSplit`: a :class:`ComposedQueryDataset` whose
    split must have every target (``ValueError`` for hidden-label splits)."""

    def __init__(
        self,
        split: ComposedSplit,
        transform: ImageTransform | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        load_images: bool = True,
    ) -> None:
        if not isinstance(split, ComposedSplit):
            raise ValueError(f"split: expected a ComposedSplit, got {type(split).__name__}")
        if not split.has_targets:
            raise ValueError(f"{split.name} has hidden targets; it cannot be used for training")
        super().__init__(split, transform, tokenizer, load_images=load_images)


class ComposedGalleryDataset(Dataset):
    """Every image of a split's image list (CIRR: all of them, not only references):
    item ``i`` = ``{"image": FloatTensor[3, H, W], "image_id": i}``."""

    def __init__(self, split: ComposedSplit, transform: ImageTransform | None = None) -> None:
        if not isinstance(split, ComposedSplit):
            raise ValueError(f"split: expected a ComposedSplit, got {type(split).__name__}")
        self.split = split
        self.paths = list(split.gallery_paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, _ = split_key(key)  # gallery images are encoded without augmentation
        return {
            "image": apply_transform(load_image(self.paths[index]), self.transform),
            "image_id": index,
        }


class ComposedCollator:
    """Picklable collate function for :class:`ComposedQueryDataset` items.

    Batch (B items)::

        reference_image  FloatTensor[B, 3, H, W]   (when the items carry images)
        target_image     FloatTensor[B, 3, H, W]   (when the items carry images)
        text             LongTensor[B, L]          modification tokens (tokenizer, or the
                                                   items' own ``text``)
        modification     list[str]
        reference_ids    LongTensor[B]             image-list (= bank) rows of the references
        target_ids       LongTensor[B]             image-list (= bank) rows of the targets
        target_index     LongTensor[B]             = target_ids (``cir_bank``'s input name)
        image_ids        LongTensor[B]             = target_ids (multi-positive targets)
        query_index      LongTensor[B]
    """

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self.tokenizer = tokenizer

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise ValueError("ComposedCollator: empty batch")
        batch: dict[str, Any] = {"modification": [s["modification"] for s in samples]}
        for key in ("reference_image", "target_image", "text"):
            if key in samples[0]:
                batch[key] = torch.stack([s[key] for s in samples])
        if self.tokenizer is not None and "text" not in batch:
            batch["text"] = self.tokenizer(batch["modification"])
        for key, out in (("reference_id", "reference_ids"), ("target_id", "target_ids"),
                         ("query_index", "query_index")):
            batch[out] = torch.tensor([int(s[key]) for s in samples], dtype=torch.long)
        batch["target_index"] = batch["target_ids"]
        batch["image_ids"] = batch["target_ids"]
        return batch
